"""Who waits for which federation's figures (the figure streams)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Watchers:
    """Each stream registers an ``asyncio.Event`` for its federation; a change of that
    federation's figures sets it. A burst of changes sets it many times and wakes the
    stream once: it then sends the figures as they are (never a backlog of old ones)."""

    def __init__(self) -> None:
        self._by_federation: dict[str, set[asyncio.Event]] = {}

    @property
    def count(self) -> int:
        return sum(len(events) for events in self._by_federation.values())

    @contextmanager
    def watch(self, federation_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._by_federation.setdefault(federation_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._by_federation.get(federation_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._by_federation[federation_id]

    def notify(self, federation_ids: Iterable[str]) -> None:
        for fid in federation_ids:
            for event in self._by_federation.get(fid, ()):
                event.set()
