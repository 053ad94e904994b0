"""Transactional outbox: a state change and its events commit in one transaction;
a relay publishes committed events to Kafka, then marks them published.

A row holds one event, or a whole batch of them (``Outbox.pack``: bulk writers such as a
CSV import commit thousands of events at once; one compressed row per batch costs one
insert and one delete instead of thousands of each). A published batch row is deleted at
once: its events are on Kafka and it cannot be forgotten person by person.

A crash after publish and before the mark re-publishes on restart: consumers are
idempotent (event ids), so that is harmless. A crash before commit leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
import weakref
import zlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from tribune_shared.bus import EventPublisher
from tribune_shared.consistency import record as record_written
from tribune_shared.events import Envelope, utcnow
from tribune_shared.logging import get_logger
from tribune_shared.metrics import OUTBOX_BACKLOG
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store
from tribune_shared.vault import vault_for

log = get_logger(__name__)

OUTBOX = "outbox"
LOCKS = "locks"

PROCESSED_EVENTS = "processed_events"

#: the relays running in this process: a write to the outbox here keeps them polling at
#: the fast pace (OutboxRelay.nudge), so what this process commits goes out at once even
#: when its relay was idle
_LOCAL_RELAYS: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def _nudge_local_relays() -> None:
    for relay in _LOCAL_RELAYS:
        relay.nudge()


def kernel_indexes(settings: ServiceSettings) -> list[IndexSpec]:
    """Indexes every service database needs for the outbox and consumer idempotency."""
    return [
        IndexSpec(OUTBOX, [("published_at", ASCENDING), ("seq", ASCENDING)]),
        # Erasure drops a person's published rows (Outbox.forget_published).
        IndexSpec(OUTBOX, [("envelope.key", ASCENDING)]),
        # Published events are kept a while for audit, then expire (unpublished never do).
        IndexSpec(
            OUTBOX,
            [("published_at", ASCENDING)],
            expire_after_seconds=settings.outbox_retention_hours * 3600,
        ),
        # Remembered event ids must outlive Kafka's retention so no replay is handled twice.
        IndexSpec(
            PROCESSED_EVENTS,
            [("at", ASCENDING)],
            expire_after_seconds=settings.processed_events_retention_days * 86400,
        ),
    ]


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, session: AsyncClientSession, *envelopes: Envelope) -> None:
        """Record events in the caller's transaction (published once it commits).

        Personal fields are sealed with their person's data key first (the vault), so
        neither the outbox nor any topic ever holds them in clear."""
        if not envelopes:
            return
        envelopes = tuple(await vault_for(self.store).seal_many(envelopes))
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
        for env in envelopes:  # the request's consistency token names them (if they commit)
            record_written(env.type, env.event_id, env.key)
        _nudge_local_relays()

    async def committed(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these events (added one by one) are committed in the outbox."""
        rows = self.store[OUTBOX].find({"_id": {"$in": list(event_ids)}}, {"_id": 1})
        return {row["_id"] async for row in rows}

    async def pack(self, envelopes: Sequence[Envelope]) -> dict[str, Any]:
        """One outbox row for a batch of events, sealed and compressed; pack outside the
        transaction, then ``add_packed`` inside it (or ``add_batch`` for both)."""
        sealed = await vault_for(self.store).seal_many(envelopes)
        text = "[" + ",".join(e.model_dump_json() for e in sealed) + "]"
        now = utcnow()
        return {
            "_id": f"batch-{uuid.uuid4().hex}",
            "seq": now.timestamp(),
            "count": len(sealed),
            "batch": zlib.compress(text.encode(), 1),
            "created_at": now,
            "published_at": None,
        }

    async def add_packed(self, session: AsyncClientSession, row: dict[str, Any]) -> None:
        await self.store[OUTBOX].insert_one(row, session=session)
        _nudge_local_relays()

    async def add_batch(self, session: AsyncClientSession, envelopes: Sequence[Envelope]) -> None:
        if envelopes:
            await self.add_packed(session, await self.pack(envelopes))

    async def backlog(self) -> int:
        """Events committed and not yet published (a batch row counts its events)."""
        pending = {"published_at": None}
        singles = await self.store[OUTBOX].count_documents({**pending, "batch": None})
        batched = 0
        async for row in self.store[OUTBOX].find({**pending, "batch": {"$ne": None}}, {"count": 1}):
            batched += row.get("count", 0)
        return singles + batched

    async def forget_published(self, key: str, session: AsyncClientSession | None = None) -> int:
        """Erasure: drop the already published rows of an aggregate (a person's events kept
        for audit); unpublished ones stay so nothing committed is lost. Their personal
        fields were sealed anyway (the key is destroyed); this removes even the ciphertext."""
        result = await self.store[OUTBOX].delete_many(
            {"envelope.key": key, "published_at": {"$ne": None}}, session=session
        )
        return result.deleted_count


def unpack_batch(row: dict[str, Any]) -> list[Envelope]:
    """The (sealed) events of a batch row, in the order they were packed."""
    return [Envelope.model_validate(e) for e in json.loads(zlib.decompress(row["batch"]))]


class OutboxRelay:
    """Publishes the outbox in order. One relay per service holds a lease at a time."""

    def __init__(self, store: Store, publisher: EventPublisher) -> None:
        self.store = store
        self.publisher = publisher
        self.settings = store.settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._lease_renew_at = 0.0  # monotonic: renew the lease from then on
        self._busy_until = 0.0  # monotonic: poll at the fast pace until then
        self._waiting_idle = False  # waiting out the idle pace right now
        self._next_report = 0.0  # monotonic: the backlog gauge is read again from then on
        self.lock_id = "outbox-relay"

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def nudge(self) -> None:
        """Events are being written in this process (not committed yet): keep looking at
        the fast pace for a while, so they go out as soon as they commit. A relay waiting
        out the idle pace is woken to take it up; a busy one is not (a poll per write,
        before its commit, would find nothing)."""
        self._busy_until = time.monotonic() + self.settings.outbox_idle_after_seconds
        if self._waiting_idle:
            self._wake.set()

    def _poll_interval(self, relayed: int) -> float:
        """The fast pace while events flow (or were just written here), the idle pace once
        none came for outbox_idle_after_seconds."""
        now = time.monotonic()
        if relayed:
            self._busy_until = now + self.settings.outbox_idle_after_seconds
        fast = self.settings.outbox_poll_interval_seconds
        if now < self._busy_until:
            return fast
        return max(fast, self.settings.outbox_idle_poll_interval_seconds)

    async def _watch_outbox(self) -> None:
        """Wake the relay as soon as a transaction commits events (a change stream on the
        outbox), instead of waiting for the next poll. Polling stays the safety net: a
        stream that fails or is unsupported only costs latency."""
        while not self._stopping.is_set():
            try:
                pipeline = [{"$match": {"operationType": "insert"}}]
                async with await self.store[OUTBOX].watch(pipeline) as stream:
                    async for _ in stream:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("outbox.change_stream_unavailable", error=repr(exc))
                await asyncio.sleep(5)

    async def _hold_lease(self) -> bool:
        # A lease held for more than half its time left is not renewed at every wake-up
        # (one store write less per batch); it is renewed well before it can expire.
        if time.monotonic() < self._lease_renew_at:
            return True
        renew_at = time.monotonic() + self.settings.outbox_lease_seconds / 2
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
            self._lease_renew_at = 0.0
            return False
        held = doc is not None and doc["owner"] == self.owner
        self._lease_renew_at = renew_at if held else 0.0
        return held

    async def _report_backlog(self) -> None:
        if time.monotonic() < self._next_report:
            return
        self._next_report = time.monotonic() + self.settings.outbox_backlog_report_seconds
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
        if pending[0].get("batch") is not None:  # a batch row goes alone, then is deleted
            row = pending[0]
            envelopes = unpack_batch(row)
            await self.publisher.publish_many(envelopes)
            await self.store[OUTBOX].delete_one({"_id": row["_id"]})
            await self._report_backlog()
            return len(envelopes)
        # single events up to the next batch row, so the order of commits is kept
        singles = []
        for row in pending:
            if row.get("batch") is not None:
                break
            singles.append(row)
        await self.publisher.publish_many([Envelope.model_validate(d["envelope"]) for d in singles])
        await self.store[OUTBOX].update_many(
            {"_id": {"$in": [d["_id"] for d in singles]}}, {"$set": {"published_at": utcnow()}}
        )
        if len(pending) >= self.settings.outbox_batch_size:  # else the next call reports 0
            await self._report_backlog()
        return len(singles)

    async def run(self) -> None:
        watcher = (
            asyncio.create_task(self._watch_outbox(), name="outbox-watch")
            if self.settings.outbox_wake_on_insert
            else None
        )
        _LOCAL_RELAYS.add(self)
        try:
            await self._relay_until_stopped()
        finally:
            _LOCAL_RELAYS.discard(self)
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    async def _relay_until_stopped(self) -> None:
        fast = self.settings.outbox_poll_interval_seconds
        while not self._stopping.is_set():
            self._wake.clear()  # events committed from now on wake the next wait
            relayed = 0
            try:
                if await self._hold_lease():
                    while (n := await self.relay_once()) and not self._stopping.is_set():
                        relayed += n
            except Exception as exc:  # keep relaying after transient broker/store errors
                log.warning("outbox.relay_failed", error=repr(exc))
                await self._report_backlog()  # so a broker outage shows as a growing backlog
                await asyncio.sleep(min(1.0, fast * 10))
            interval = self._poll_interval(relayed)
            self._waiting_idle = interval > fast
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass
            finally:
                self._waiting_idle = False
        # Drain what is committed before stopping (SIGTERM finishes in-flight work).
        try:
            if await self._hold_lease():
                while await self.relay_once():
                    pass
        except Exception as exc:
            log.warning("outbox.final_drain_failed", error=repr(exc))
