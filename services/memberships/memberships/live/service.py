"""Use cases of the live figures: a federation's figures now, and a stream of them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from tribune_shared.auth import Identity
from tribune_shared.errors import ServiceUnavailable
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store

from memberships.live.app import LiveFigures
from memberships.live.domain import empty_view
from memberships.settings import MembershipsSettings

#: what a client is told to wait before reconnecting a dropped stream (EventSource)
RETRY_MILLISECONDS = 3000


class LiveService:
    def __init__(self, settings: MembershipsSettings, store: Store, live: LiveFigures) -> None:
        self.settings = settings
        self.live = live
        # the federation tree the memberships worker keeps (its own database)
        self.federations = FederationDirectory(store)
        self.streams = 0

    def year(self) -> int:
        return datetime.now(self.settings.zone).year

    async def resolve(self, identity: Identity, federation_id: str | None) -> tuple[str, str]:
        """The caller's federation, or one of its subtree; anything else is 404."""
        return await self.federations.resolve(identity, federation_id)

    def view(self, federation_id: str, federation_path: str, year: int | None = None) -> dict:
        year = year or self.year()
        figures = self.live.figures.get(federation_id)
        return figures.view(year) if figures else empty_view(federation_id, federation_path, year)

    async def figures(
        self, identity: Identity, federation_id: str | None, year: int | None = None
    ) -> dict[str, Any]:
        fid, path = await self.resolve(identity, federation_id)
        return self.view(fid, path, year)

    async def open_stream(
        self, identity: Identity, federation_id: str | None
    ) -> AsyncIterator[bytes]:
        """Checks the caller and the limit now (404, 503 before anything is sent), then
        the Server-Sent Events: the figures at once, then whenever they change (at most
        one push per ``live_stream_min_interval_seconds``), a comment when idle."""
        fid, path = await self.resolve(identity, federation_id)
        if self.streams >= self.settings.live_stream_max_clients:
            raise ServiceUnavailable("too many live figure streams; try again later")
        return self._events(fid, path)

    async def _events(self, fid: str, path: str) -> AsyncIterator[bytes]:
        s = self.settings
        deadline = time.monotonic() + s.live_stream_max_seconds
        # counted while it runs (a stream never started is never counted)
        self.streams += 1
        try:
            with self.live.watchers.watch(fid) as changed:
                view = self.view(fid, path)
                yield b"retry: %d\n" % RETRY_MILLISECONDS + frame(view)
                sent = view
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        await asyncio.wait_for(
                            changed.wait(), timeout=min(s.live_stream_heartbeat_seconds, left)
                        )
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    changed.clear()
                    view = self.view(fid, path)
                    if view != sent:
                        yield frame(view)
                        sent = view
                    if s.live_stream_min_interval_seconds:
                        await asyncio.sleep(s.live_stream_min_interval_seconds)
        finally:
            self.streams -= 1


def frame(view: dict[str, Any]) -> bytes:
    """One Server-Sent Event: ``event: figures``, the figures as JSON, the version as id."""
    data = json.dumps(view, separators=(",", ":"))
    return f"id: {view['version']}\nevent: figures\ndata: {data}\n\n".encode()
