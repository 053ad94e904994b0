"""The live figures' one database read: a recount of a federation's figures from the
memberships store (what faust's figures must equal; ops and tests compare the two)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tribune_shared.store import Store, subtree_filter

from memberships.store import MEMBERSHIPS, PAYMENTS

#: the figures count a payment with this status at its amount (refunded and charged-back
#: ones are reversed whole; one flagged for refund never counted)
COUNTED_STATUS = "accepted"


class LiveStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def recount(self, federation_path: str, year: int, zone: ZoneInfo) -> dict[str, int]:
        """Memberships by status and the year's dues and donations of a subtree, counted
        by two aggregations on the store."""
        scope = subtree_filter(federation_path)
        by_status = {
            row["_id"]: row["n"]
            async for row in await self.store[MEMBERSHIPS].aggregate(
                [{"$match": scope}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
            )
        }
        start = datetime(year, 1, 1, tzinfo=zone)
        end = datetime(year + 1, 1, 1, tzinfo=zone)
        money: dict[str, Any] = {
            row["_id"]: row["cents"]
            async for row in await self.store[PAYMENTS].aggregate(
                [
                    {
                        "$match": {
                            **scope,
                            "status": COUNTED_STATUS,
                            "paid_at": {"$gte": start, "$lt": end},
                        }
                    },
                    {"$group": {"_id": "$purpose", "cents": {"$sum": "$amount_cents"}}},
                ]
            )
        }
        active, grace = by_status.get("active", 0), by_status.get("grace", 0)
        return {
            "members_in_good_standing": active + grace,
            "members_in_grace": grace,
            "members_lapsed": by_status.get("lapsed", 0),
            "members_cancelled": by_status.get("cancelled", 0),
            "dues_cents": int(money.get("dues", 0)),
            "donations_cents": int(money.get("donation", 0)),
        }
