"""Ids of the documents a service creates in bulk or lists newest first."""

from __future__ import annotations

import secrets
import time


def sortable_id() -> str:
    """32 hex characters, in creation order (milliseconds, then random): a listing sorted
    by id is sorted by creation, and a cursor is the last id."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"
