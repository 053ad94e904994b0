"""Database access of the privacy gauges: two aggregations over the open requests, both
on the ``(status, deadline)`` index, whatever the number of requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tribune_shared.store import Store

from consent.privacy import RequestStatus
from consent.privacy_store import PRIVACY_REQUESTS

OPEN = [RequestStatus.open.value, RequestStatus.in_progress.value]


class PrivacyWatchStore:
    def __init__(self, store: Store) -> None:
        self.requests = store[PRIVACY_REQUESTS]

    async def open_by_kind(self) -> dict[str, dict[str, Any]]:
        """Per kind: how many are open, the oldest one's receipt, the earliest deadline."""
        rows = await (
            await self.requests.aggregate(
                [
                    {"$match": {"status": {"$in": OPEN}}},
                    {
                        "$group": {
                            "_id": "$kind",
                            "open": {"$sum": 1},
                            "oldest_received": {"$min": "$received_at"},
                            "earliest_deadline": {"$min": "$deadline"},
                        }
                    },
                ]
            )
        ).to_list()
        return {row["_id"]: row for row in rows}

    async def overdue_by_kind(self, now: datetime) -> dict[str, int]:
        rows = await (
            await self.requests.aggregate(
                [
                    {"$match": {"status": {"$in": OPEN}, "deadline": {"$lt": now}}},
                    {"$group": {"_id": "$kind", "overdue": {"$sum": 1}}},
                ]
            )
        ).to_list()
        return {row["_id"]: int(row["overdue"]) for row in rows}
