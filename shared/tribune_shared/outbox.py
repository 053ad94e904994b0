"""Transactional outbox: a state change and its events commit in one transaction;
a relay publishes committed events to Kafka, then marks them published.

A crash after publish and before the mark re-publishes on restart: consumers are
idempotent (event ids), so that is harmless. A crash before commit leaves nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from tribune_shared.bus import EventPublisher
from tribune_shared.events import Envelope, utcnow
from tribune_shared.logging import get_logger
from tribune_shared.metrics import OUTBOX_BACKLOG
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store

log = get_logger(__name__)

OUTBOX = "outbox"
LOCKS = "locks"

PROCESSED_EVENTS = "processed_events"


def kernel_indexes(settings: ServiceSettings) -> list[IndexSpec]:
    """Indexes every service database needs for the outbox and consumer idempotency."""
    return [
        IndexSpec(OUTBOX, [("published_at", ASCENDING), ("seq", ASCENDING)]),
        # Published events are kept a while for audit, then expire (unpublished never do).
        IndexSpec(
            OUTBOX,
            [("published_at", ASCENDING)],
            {
                "name": "published_at_ttl",
                "expireAfterSeconds": int(settings.outbox_retention_hours * 3600),
            },
        ),
        # Remembered event ids must outlive Kafka's retention so no replay is handled twice.
        IndexSpec(
            PROCESSED_EVENTS,
            [("at", ASCENDING)],
            {"expireAfterSeconds": int(settings.processed_events_retention_days * 86400)},
        ),
    ]


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, session: AsyncClientSession, *envelopes: Envelope) -> None:
        """Record events in the caller's transaction (published once it commits)."""
        if not envelopes:
            return
        now = utcnow()
        await self.store[OUTBOX].insert_many(
            [
                {
                    "_id": env.event_id,
                    "seq": now.timestamp() + i * 1e-6,
                    "topic": env.type,
                    "envelope": env.model_dump(mode="json"),
                    "created_at": now,
                    "published_at": None,
                }
                for i, env in enumerate(envelopes)
            ],
            session=session,
        )

    async def backlog(self) -> int:
        return await self.store[OUTBOX].count_documents({"published_at": None})


class OutboxRelay:
    """Publishes the outbox in order. One relay per service holds a lease at a time."""

    def __init__(self, store: Store, publisher: EventPublisher) -> None:
        self.store = store
        self.publisher = publisher
        self.settings = store.settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = asyncio.Event()
        self.lock_id = "outbox-relay"

    def request_stop(self) -> None:
        self._stopping.set()

    async def _hold_lease(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.settings.outbox_lease_seconds)
        try:
            doc = await self.store[LOCKS].find_one_and_update(
                {
                    "_id": self.lock_id,
                    "$or": [{"owner": self.owner}, {"expires_at": {"$lt": now}}],
                },
                {"$set": {"owner": self.owner, "expires_at": until}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # someone else holds a live lease
            return False
        return doc is not None and doc["owner"] == self.owner

    async def _report_backlog(self) -> None:
        try:
            backlog = await Outbox(self.store).backlog()
        except Exception:  # the store is down too: nothing trustworthy to report
            return
        OUTBOX_BACKLOG.labels(self.settings.service_name).set(backlog)

    async def relay_once(self) -> int:
        """Publish one batch of pending events; returns how many were published."""
        pending = (
            await self.store[OUTBOX]
            .find({"published_at": None})
            .sort([("seq", ASCENDING)])
            .limit(self.settings.outbox_batch_size)
            .to_list()
        )
        if not pending:
            OUTBOX_BACKLOG.labels(self.settings.service_name).set(0)
            return 0
        await self.publisher.publish_many([Envelope.model_validate(d["envelope"]) for d in pending])
        await self.store[OUTBOX].update_many(
            {"_id": {"$in": [d["_id"] for d in pending]}}, {"$set": {"published_at": utcnow()}}
        )
        await self._report_backlog()
        return len(pending)

    async def run(self) -> None:
        interval = self.settings.outbox_poll_interval_seconds
        while not self._stopping.is_set():
            try:
                if await self._hold_lease():
                    while await self.relay_once() and not self._stopping.is_set():
                        pass
            except Exception as exc:  # keep relaying after transient broker/store errors
                log.warning("outbox.relay_failed", error=repr(exc))
                await self._report_backlog()  # so a broker outage shows as a growing backlog
                await asyncio.sleep(min(1.0, interval * 10))
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            except TimeoutError:
                pass
        # Drain what is committed before stopping (SIGTERM finishes in-flight work).
        try:
            if await self._hold_lease():
                while await self.relay_once():
                    pass
        except Exception as exc:
            log.warning("outbox.final_drain_failed", error=repr(exc))
