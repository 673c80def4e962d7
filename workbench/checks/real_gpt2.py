"""Checks for lesson 11-13 real GPT-2, using a GPT, the app."""

from __future__ import annotations

__all__: list[str] = []  # filled in with the lesson's check_* functions
