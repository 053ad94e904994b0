"""Group commit: many concurrent writers share one batch write, and each learns whether
the batch holding its document was written.

Used where many small requests each need one durable write: the gateway's access audit
(recording a read costs one share of an ``insert_many`` instead of one ``insert_one`` per
request) and the public forms' intake (a viral petition's submissions share transactions).
A request still waits until its entry is stored, and is refused if it could not be;
one that need not wait (``submit``: an audit entry of a write, whose answer is given
anyway) only queues its document, up to a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from tribune_shared.logging import get_logger

log = get_logger(__name__)

Document = dict[str, Any]


class GroupCommit:
    """Documents queue up; one writer task writes them in batches of at most
    ``max_batch``, one batch at a time. A batch is written as soon as the previous one is
    done (documents arriving meanwhile form the next one), or, with ``interval`` > 0,
    after waiting up to that long for the batch to fill."""

    def __init__(
        self,
        write: Callable[[list[Document]], Awaitable[None]],
        *,
        max_batch: int,
        interval: float = 0.0,
        max_pending: int | None = None,
        name: str = "group_commit",
    ) -> None:
        self.write_batch = write
        self.max_batch = max_batch
        self.interval = interval
        #: documents ``submit`` leaves queued without waiting, at most (then it waits)
        self.max_pending = max_pending if max_pending is not None else 10 * max_batch
        self.name = name
        self._queue: list[tuple[Document, asyncio.Future[None]]] = []
        self._inflight: list[tuple[Document, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._full: asyncio.Event | None = None
        self._closed = False

    async def write(self, doc: Document) -> None:
        """Return once the batch holding ``doc`` is written; raise what its write raised."""
        # shielded: a cancelled request leaves its entry to be written with the batch
        await asyncio.shield(self._enqueue(doc))

    async def submit(self, doc: Document) -> None:
        """Queue ``doc`` to be written with a coming batch, without waiting for it: a
        failed write is logged (``<name>.write_failed``), not raised. While more than
        ``max_pending`` documents wait (the store is slow or down), this waits like
        ``write`` instead, so the queue stays bounded."""
        done = self._enqueue(doc)
        if len(self._queue) + len(self._inflight) > self.max_pending:
            await asyncio.shield(done)

    async def drained(self) -> None:
        """Return once every document queued before this call is written (or failed):
        a reader of what was submitted sees it."""
        waiting = [done for _, done in (*self._inflight, *self._queue)]
        if waiting:
            await asyncio.gather(*(asyncio.shield(d) for d in waiting), return_exceptions=True)

    def _enqueue(self, doc: Document) -> asyncio.Future[None]:
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved even if the caller went away, so a failure is not reported as unseen.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append((doc, done))
        if self._full is not None and len(self._queue) >= self.max_batch:
            self._full.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=self.name)
        return done

    async def _drain(self) -> None:
        batch: list[tuple[Document, asyncio.Future[None]]] = []
        try:
            while self._queue:
                if self.interval > 0 and len(self._queue) < self.max_batch:
                    self._full = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.interval)
                    self._full = None
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._inflight = batch
                try:
                    await self.write_batch([doc for doc, _ in batch])
                except Exception as exc:
                    log.error(f"{self.name}.write_failed", documents=len(batch), error=repr(exc))
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = self._inflight = []
        except BaseException:
            # Cancelled (shutdown): nobody may wait forever, nor take an unwritten entry
            # for a written one.
            _settle([*batch, *self._queue], RuntimeError(f"{self.name} stopped"))
            self._queue = []
            raise

    async def close(self) -> None:
        """Refuse new documents and wait until the queued ones are written."""
        self._closed = True
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer


def _settle(batch: list[tuple[Document, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
