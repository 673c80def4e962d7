"""Checks for lesson 07 training."""

from __future__ import annotations

__all__: list[str] = []  # filled in with the lesson's check_* functions
