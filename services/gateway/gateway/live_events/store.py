"""All database access of the live event stream: the recorded events (kept
``live_events_retention_seconds``) and the counter numbering them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.store import IndexSpec, Store, subtree_filter

from gateway.live_events.domain import recorded

LIVE_EVENTS = "live_events"
COUNTERS = "live_event_counters"
_SEQ = "seq"


def indexes(retention_seconds: int) -> list[IndexSpec]:
    return [
        IndexSpec(LIVE_EVENTS, [("seq", ASCENDING)], {"unique": True}),
        # a redelivered batch is recognised by its event ids (idempotent recording)
        IndexSpec(LIVE_EVENTS, [("event_id", ASCENDING)], {"unique": True}),
        IndexSpec(
            LIVE_EVENTS, [("recorded_at", ASCENDING)], expire_after_seconds=retention_seconds
        ),
    ]


class LiveEventStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.events = store.db[LIVE_EVENTS]
        self.counters = store.db[COUNTERS]

    async def record(self, envelopes: Sequence[Envelope], at: datetime) -> int:
        """Number and keep ``envelopes`` (those not kept yet) in one transaction: the
        counter's increment serialises concurrent recorders, so numbers become visible in
        order and a follower reading ``seq > n`` never skips one committed later. The
        number of events kept."""
        if not envelopes:
            return 0

        async def work(session: AsyncClientSession) -> int:
            ids = [e.event_id for e in envelopes]
            known = {
                d["event_id"]
                async for d in self.events.find(
                    {"event_id": {"$in": ids}}, {"event_id": 1}, session=session
                )
            }
            fresh = list({e.event_id: e for e in envelopes if e.event_id not in known}.values())
            if not fresh:
                return 0
            counter = await self.counters.find_one_and_update(
                {"_id": _SEQ},
                {"$inc": {"value": len(fresh)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            assert counter is not None  # upserted
            first = int(counter["value"]) - len(fresh) + 1
            docs = [recorded(e, first + i, at) for i, e in enumerate(fresh)]
            await self.events.insert_many(docs, session=session)
            return len(docs)

        return await self.store.run_transaction(work, what="live_events.record")

    async def latest(self) -> int:
        """The last number given (0: none yet)."""
        doc = await self.counters.find_one({"_id": _SEQ})
        return int(doc["value"]) if doc else 0

    async def oldest(self) -> int | None:
        doc = await self.events.find_one({}, {"seq": 1}, sort=[("seq", ASCENDING)])
        return int(doc["seq"]) if doc else None

    async def after(
        self,
        seq: int,
        limit: int,
        *,
        federation_path: str | None = None,
        types: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Events numbered after ``seq``, in order, at most ``limit``; optionally only a
        subtree's and some types (a resumed connection's backlog)."""
        query: dict[str, Any] = {"seq": {"$gt": seq}}
        if federation_path is not None:
            query.update(subtree_filter(federation_path))
        if types is not None:
            query["type"] = {"$in": sorted(types)}
        cursor = self.events.find(query, {"_id": 0}).sort("seq", ASCENDING).limit(limit)
        return [doc async for doc in cursor]
