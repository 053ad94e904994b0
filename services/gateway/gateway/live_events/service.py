"""One replica's side of the live event stream: a single follower of the recorded sequence
(one indexed query per poll, whatever the number of connections) fanning events out to its
connections, each filtered by its role and subtree; connection limits per user and per
replica; resume from ``Last-Event-ID`` through the store, so any replica can resume it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge
from tribune_shared.errors import TooManyRequests
from tribune_shared.logging import get_logger

from gateway.live_events.domain import (
    HEARTBEAT,
    Follower,
    control,
    frame,
    needs_reset,
)
from gateway.live_events.store import LiveEventStore
from gateway.settings import GatewaySettings

log = get_logger(__name__)

OPEN_STREAMS = Gauge("tribune_live_event_streams", "Live event streams open on this replica")


@dataclass(eq=False)
class Connection:
    who: str
    follower: Follower
    #: events for this connection; None: it fell too far behind and must resume
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    #: the replica's position when it was registered: what follows reaches its queue
    start: int = 0


class LiveEventsHub:
    def __init__(self, settings: GatewaySettings, store: LiveEventStore) -> None:
        self.settings = settings
        self.store = store
        self._connections: set[Connection] = set()
        self._per_user: Counter[str] = Counter()
        self._poller: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        #: the last number fanned out
        self.position = 0

    # ------------------------------------------------------------ connections

    def _open(self, who: str, follower: Follower) -> Connection:
        retry = max(1, math.ceil(self.settings.live_events_heartbeat_seconds))
        if len(self._connections) >= self.settings.live_events_max_connections:
            raise TooManyRequests("too many live streams on this server", retry_after=retry)
        if self._per_user[who] >= self.settings.live_events_max_connections_per_user:
            raise TooManyRequests(
                f"at most {self.settings.live_events_max_connections_per_user} live streams "
                "per user: close one first",
                retry_after=retry,
            )
        conn = Connection(
            who,
            follower,
            asyncio.Queue(maxsize=self.settings.live_events_queue_size + 1),
            start=self.position,
        )
        self._connections.add(conn)
        self._per_user[who] += 1
        OPEN_STREAMS.set(len(self._connections))
        return conn

    def _close(self, conn: Connection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self._per_user[conn.who] -= 1
            if self._per_user[conn.who] <= 0:
                del self._per_user[conn.who]
        OPEN_STREAMS.set(len(self._connections))

    async def connect(self, who: str, follower: Follower) -> Connection:
        """Register a connection (429 past the limits) and make sure the replica follows
        the sequence; events numbered after ``self.position`` will reach it."""
        conn = self._open(who, follower)
        try:
            await self._follow()
        except BaseException:
            self._close(conn)
            raise
        return conn

    # ------------------------------------------------------------ following the store

    async def _follow(self) -> None:
        if self._poller is None or self._poller.done():
            self._started.clear()
            self._poller = asyncio.create_task(self._poll(), name="live-events-poller")
        await self._started.wait()

    async def _poll(self) -> None:
        limit = self.settings.live_events_batch_size
        started = False
        while True:
            try:
                if not started:
                    self.position = await self.store.latest()
                    started = True
                    self._started.set()
                docs = await self.store.after(self.position, limit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: connections keep their heartbeat
                log.warning("live_events.poll_failed", error=repr(exc))
                await asyncio.sleep(self.settings.live_events_retry_seconds)
                continue
            for doc in docs:
                self._fan_out(doc)
            if docs:
                self.position = int(docs[-1]["seq"])
            if len(docs) < limit:
                if not self._connections:
                    self._poller = None  # nobody follows: stop until the next connection
                    return
                await asyncio.sleep(self.settings.live_events_poll_seconds)

    def _fan_out(self, doc: dict[str, Any]) -> None:
        for conn in list(self._connections):
            if not conn.follower.sees(doc):
                continue
            if conn.queue.qsize() >= self.settings.live_events_queue_size:
                # too far behind: end it (it resumes from its last id, through the store)
                with contextlib.suppress(asyncio.QueueFull):
                    conn.queue.put_nowait(None)
                self._close(conn)
                continue
            conn.queue.put_nowait(doc)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
            self._poller = None

    # ------------------------------------------------------------ one stream

    async def stream(
        self, who: str, follower: Follower, last_event_id: int | None
    ) -> AsyncIterator[bytes]:
        """The SSE messages of one connection: ``ready``, the missed events (or ``reset``
        when they are no longer kept), then live events with keep-alives, and ``end``
        after ``live_events_max_seconds`` or when the client fell too far behind."""
        settings = self.settings
        conn = await self.connect(who, follower)
        try:
            retry_ms = int(settings.live_events_poll_seconds * 1000) + 1000
            sent = conn.start
            yield control("ready", {"position": self.position}, retry_ms=retry_ms)
            if last_event_id is not None:
                sent, messages = await self._backlog(follower, last_event_id, conn.start)
                for message in messages:
                    yield message
            deadline = time.monotonic() + settings.live_events_max_seconds
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    yield control("end", {"reason": "time"})
                    return
                try:
                    doc = await asyncio.wait_for(
                        conn.queue.get(), min(left, settings.live_events_heartbeat_seconds)
                    )
                except TimeoutError:
                    yield HEARTBEAT
                    continue
                if doc is None:
                    yield control("end", {"reason": "behind"})
                    return
                if int(doc["seq"]) <= sent:
                    continue  # already sent from the backlog
                sent = int(doc["seq"])
                yield frame(doc)
        finally:
            self._close(conn)

    async def _backlog(self, follower: Follower, last: int, start: int) -> tuple[int, list[bytes]]:
        """What a resumed connection missed after ``last``: (the last number covered,
        messages). Missed events no longer kept, or more than ``live_events_replay_max``
        of them: a ``reset`` (the client reloads what it shows), then live."""
        latest = await self.store.latest()
        oldest = await self.store.oldest()
        if needs_reset(last, oldest, latest):
            return start, [control("reset", {"reason": "not_kept"})]
        limit = self.settings.live_events_replay_max
        docs = await self.store.after(
            last, limit + 1, federation_path=follower.federation_path, types=follower.types
        )
        if len(docs) > limit:
            return start, [control("reset", {"reason": "too_many_missed"})]
        covered = max([last, *(int(d["seq"]) for d in docs)])
        return covered, [frame(d) for d in docs]
