"""The last-instant guard: a "no" that lands while a hand-off is being sent still wins.

A hand-off reads consents, suppression and erasure once, then hands its messages over one
after the other on the pooled sessions. A revocation committed in between would otherwise
only be seen at the next hand-off. The guard follows messaging's own views through the
store's change streams (consents turning ``revoked``, addresses added to the suppression
list, contacts becoming erasure tombstones) and the dispatcher asks it right before each
message goes to the provider. A change stream delivers a commit within milliseconds, so
what is sent after a revocation is at most the messages already in a provider's hands.

If a stream breaks, the guard is not ``healthy`` until it is watching again; the
dispatcher sends nothing meanwhile (when in doubt, do not message).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from messaging.revocations import RevocationFeed
from messaging.store import CONSENTS, CONTACTS, SUPPRESSED, consent_key

log = get_logger(__name__)

#: (collection, the change stream's filter, what to remember of a change)
_WATCHES: list[tuple[str, list[dict[str, Any]], Callable[[dict[str, Any]], str | None]]] = [
    (
        CONSENTS,
        [{"$match": {"fullDocument.status": "revoked"}}],
        lambda d: d.get("_id"),  # contact:channel:purpose
    ),
    (
        SUPPRESSED,
        [{"$match": {"operationType": {"$in": ["insert", "replace"]}}}],
        lambda d: d.get("_id"),
    ),
    (
        CONTACTS,
        [
            {
                "$match": {
                    "$or": [
                        {"fullDocument.erased": True},
                        {"fullDocument.merged_into": {"$exists": True}},
                    ]
                }
            }
        ],
        lambda d: d.get("_id"),
    ),
]


class Guard:
    def __init__(
        self, store: Store, *, memory_seconds: float, feed: RevocationFeed | None = None
    ) -> None:
        self.store = store
        self.memory_seconds = memory_seconds
        #: the same "no"s read straight from Kafka (messaging.revocations), which come
        #: before the views apply them when the store is busy; run by the worker
        self.feed = feed
        self._seen: dict[str, float] = {}  # key -> when it was seen (monotonic)
        self._watching: dict[str, bool] = {name: False for name, _, _ in _WATCHES}
        self._started = asyncio.Event()

    @property
    def healthy(self) -> bool:
        return all(self._watching.values())

    def blocks(
        self, contact_id: str, channel: str, purpose: str, address_hash: str | None
    ) -> str | None:
        """The rule of a "no" about this message that came in since its hand-off read the
        views (None: nothing came)."""
        if self._said(consent_key(contact_id, channel, purpose)):
            return "consent_revoked"
        if address_hash is not None and self._said(address_hash):
            return "suppressed"
        if self._said(contact_id):
            return "erased"
        return None

    def _said(self, key: str) -> bool:
        """A "no" under ``key`` seen by the change streams, or read by the feed first."""
        return key in self._seen or (self.feed is not None and self.feed.knows(key))

    async def run(self, stop: asyncio.Event) -> None:
        watches = {name: (pipeline, key) for name, pipeline, key in _WATCHES}
        tasks = {
            name: asyncio.create_task(self._follow(name, pipeline, key, stop))
            for name, (pipeline, key) in watches.items()
        }
        watched = {name: self.store.physical(name) for name in watches}
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
                # a rebuilt view was switched to (tribune_shared.projections): watch the
                # collection now written, not the one left behind
                for name, (pipeline, key) in watches.items():
                    if self.store.physical(name) != watched[name]:
                        watched[name] = self.store.physical(name)
                        tasks[name].cancel()
                        await asyncio.gather(tasks[name], return_exceptions=True)
                        self._watching[name] = False
                        tasks[name] = asyncio.create_task(self._follow(name, pipeline, key, stop))
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def wait_started(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._started.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _follow(
        self,
        name: str,
        pipeline: list[dict[str, Any]],
        key: Callable[[dict[str, Any]], str | None],
        stop: asyncio.Event,
    ) -> None:
        resume: Any = None
        while not stop.is_set():
            try:
                async with await self.store[name].watch(
                    pipeline, full_document="updateLookup", resume_after=resume
                ) as stream:
                    self._watching[name] = True
                    if self.healthy:
                        self._started.set()
                    async for change in stream:
                        resume = change.get("_id")
                        found = key(change.get("fullDocument") or {})
                        if found is not None:
                            self._remember(found)
            except asyncio.CancelledError:
                raise
            except PyMongoError as exc:
                log.warning("campaigns.guard_stream_broken", collection=name, error=repr(exc))
            self._watching[name] = False
            await asyncio.sleep(0.5)

    def _remember(self, key: str) -> None:
        now = time.monotonic()
        self._seen[key] = now
        if len(self._seen) % 1024 == 0:  # forget what every later read already sees
            horizon = now - self.memory_seconds
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
