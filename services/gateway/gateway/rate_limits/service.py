"""The rate limiter of the gateway's hot path (rules and their price: domain.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tribune_shared.errors import TooManyRequests
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from gateway.rate_limits import domain
from gateway.rate_limits.store import RateLimitStore

log = get_logger(__name__)


class RateLimited(TooManyRequests):
    code = "rate_limited"


class RateLimiter:
    def __init__(
        self,
        store: Store,
        *,
        window_seconds: float,
        sync_share: float,
        sync_seconds: float,
        max_principals: int,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data = RateLimitStore(store)
        self.window_seconds = window_seconds
        self.sync_share = sync_share
        self.sync_seconds = sync_seconds
        self.max_principals = max_principals
        self.clock = clock
        self.monotonic = monotonic
        self.counters: dict[str, domain.Counter] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def check(self, principal: str, limit: int) -> None:
        """Counts one request of ``principal``, or refuses it (429 with Retry-After until
        the window ends). Never waits for the store."""
        now = self.clock()
        window, ends = domain.window_of(now, self.window_seconds)
        counter = self.counters.get(principal)
        if counter is None or counter.window != window:
            if len(self.counters) >= self.max_principals:
                self._forget_old(window)
            counter = self.counters[principal] = domain.Counter(window)
        if not counter.admit(limit):
            raise RateLimited(
                f"too many requests; retry in {domain.retry_after(now, ends)} s",
                retry_after=domain.retry_after(now, ends),
            )
        tick = self.monotonic()
        if counter.due(tick, domain.sync_every(limit, self.sync_share), self.sync_seconds):
            sent = counter.start_sync(tick)
            task = asyncio.ensure_future(self._sync(principal, counter, sent, ends))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sync(self, principal: str, counter: domain.Counter, sent: int, ends: float) -> None:
        total: int | None = None
        try:
            # kept one more window: a replica whose clock is a little behind still finds it
            expires = datetime.fromtimestamp(ends + self.window_seconds, UTC)
            total = await self.data.add(f"{principal}:{counter.window}", sent, expires)
        except Exception as exc:  # the store is down: count locally, send again later
            log.warning("gateway.rate_limit_sync_failed", error=repr(exc))
        finally:
            counter.synced(total)

    def _forget_old(self, window: int) -> None:
        for principal in [p for p, c in self.counters.items() if c.window != window]:
            del self.counters[principal]
        if len(self.counters) >= self.max_principals:  # all current: the oldest go
            for principal in list(self.counters)[: len(self.counters) // 2]:
                del self.counters[principal]

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
