"""In-process caches of the gateway's hot path: what every request would otherwise fetch
from the store or recompute (the user behind a token, the identity signed for it)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from tribune_shared.auth import Identity, sign_identity

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded LRU whose entries expire ``ttl_seconds`` after they were loaded.

    Concurrent misses of one key share one load, so a popular user's entry expiring does
    not send a burst of identical lookups to the store. A load that was running when its
    key was invalidated is not cached (it may have read the state from before the
    change). ``None`` is never cached: what is unknown or refused is read again next time.
    ``ttl_seconds`` 0 turns the cache off.
    """

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V | None]] = {}
        self._invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (self.clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)  # later callers load afresh
        self._invalidations += 1

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        hit = self.get(key)
        if hit is not None:
            return hit
        if self.ttl <= 0:
            return await load()
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load, self._invalidations))
            self._loading[key] = task
        # shielded: a caller that goes away does not cancel the load the others wait for
        return await asyncio.shield(task)

    async def _load(self, key: K, load: Callable[[], Awaitable[V | None]], seen: int) -> V | None:
        try:
            value = await load()
        finally:
            if self._loading.get(key) is asyncio.current_task():
                del self._loading[key]
        if value is not None and self._invalidations == seen:
            self.put(key, value)
        return value


class SignedIdentities:
    """The ``X-Tribune-Identity`` signed for each identity, reused for half its lifetime
    (so what a service receives always has at least half of it left): signing an HS256
    JWT on every forwarded request is a measurable part of the gateway's own time."""

    def __init__(
        self,
        secret: str,
        ttl_seconds: int,
        max_entries: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret = secret
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: TtlCache[Identity, str] = TtlCache(ttl_seconds / 2, max_entries, clock=clock)

    def __call__(self, identity: Identity) -> str:
        signed = self._cache.get(identity)
        if signed is None:
            signed = sign_identity(identity, self.secret, self.ttl)
            self._cache.put(identity, signed)
        return signed
