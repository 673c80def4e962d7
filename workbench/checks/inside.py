"""Checks for lesson 09 looking inside."""

from __future__ import annotations

__all__: list[str] = []  # filled in with the lesson's check_* functions
