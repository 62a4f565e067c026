"""The project's error base: every error eexit raises on purpose is an `EexitError`, so a
caller can tell "eexit refused this input" from a bug, and still catch the builtin
category (ValueError, FileNotFoundError, ...) each error also belongs to."""

from __future__ import annotations


class EexitError(Exception):
    """Base of every error eexit raises on purpose; the message names what to fix."""
