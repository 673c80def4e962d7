"""Checks for lesson 10 encoder-decoder vs decoder-only."""

from __future__ import annotations

__all__: list[str] = []  # filled in with the lesson's check_* functions
