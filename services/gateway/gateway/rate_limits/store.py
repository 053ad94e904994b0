"""Database access of rate limits: ``rate_limits``, one counter per principal and window,
gone once the window is over (the kernel's expiry sweep)."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError
from tribune_shared.store import IndexSpec, Store

RATE_LIMITS = "rate_limits"

INDEXES = [IndexSpec(RATE_LIMITS, [("expires_at", ASCENDING)], expire_after_seconds=0)]


class RateLimitStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, key: str, count: int, expires_at: datetime) -> int:
        """Adds ``count`` to the counter ``key``, atomically; the new total."""
        counters = self.store[RATE_LIMITS]
        for _ in range(2):
            try:
                doc = await counters.find_one_and_update(
                    {"_id": key},
                    {"$inc": {"count": count}, "$setOnInsert": {"expires_at": expires_at}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                continue  # another replica created it first: add to theirs
            return int(doc["count"])
        raise RuntimeError(f"rate limit counter {key} could not be written")
