"""Concurrent requests decided together: each caller submits one item and waits for its own
result, while batches of items are handed to one function that decides them all at once
(the webhook's recording: one shared transaction per batch).

The kernel's ``GroupCommit`` is the same idea for writes that all succeed or all fail; here
every item gets its own answer (recorded, duplicate, flagged, or its own error), several
batches may run at once, and batches run outside any request's context, so what a request
collects (its consistency token) is only ever its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from tribune_shared.logging import get_logger

log = get_logger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

#: decides a batch: one result or one exception per item, in order
Decide = Callable[[list[In]], Awaitable[Sequence[Out | Exception]]]


class Batcher(Generic[In, Out]):
    """Items queue up; a dispatcher hands them to ``decide`` in batches of at most
    ``max_batch``, with at most ``max_in_flight`` batches running. A batch starts when a
    slot is free, after waiting up to ``max_wait`` seconds for it to fill (0: at once:
    items arriving while the slots are busy form the next batch)."""

    def __init__(
        self,
        decide: Decide[In, Out],
        *,
        max_batch: int,
        max_wait: float = 0.0,
        max_in_flight: int = 1,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or max_wait < 0:
            raise ValueError("max_batch and max_in_flight must be >= 1, max_wait >= 0")
        self.decide = decide
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_in_flight = max_in_flight
        self.name = name
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: asyncio.Event | None = None
        self._closed = False

    async def submit(self, item: In) -> Out:
        """The item's result once its batch is decided; raise the item's own error."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (tests)
            self._loop, self._slots = loop, asyncio.Semaphore(self.max_in_flight)
            self._dispatcher, self._running = None, set()
        done: asyncio.Future[Out] = loop.create_future()
        # Retrieved even if the caller went away, so a failure is not reported as unseen.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append((item, done))
        if self._full is not None and len(self._queue) >= self.max_batch:
            self._full.set()
        if self._dispatcher is None or self._dispatcher.done():
            # An empty context: batches must not write into the first caller's context.
            self._dispatcher = loop.create_task(
                self._dispatch(), name=self.name, context=contextvars.Context()
            )
        # shielded: a caller that goes away leaves its item to be decided with the batch
        return await asyncio.shield(done)

    async def _dispatch(self) -> None:
        assert self._slots is not None
        try:
            while self._queue:
                await self._slots.acquire()
                if self.max_wait > 0 and len(self._queue) < self.max_batch:
                    self._full = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.max_wait)
                    self._full = None
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                task = asyncio.create_task(self._run(batch), name=f"{self.name}.batch")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        except BaseException:
            _settle_all(self._queue, RuntimeError(f"{self.name} stopped"))
            self._queue = []
            raise

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        assert self._slots is not None
        try:
            try:
                results = list(await self.decide([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)}")
            except Exception as exc:
                log.error(f"{self.name}.batch_failed", items=len(batch), error=repr(exc))
                results = [exc] * len(batch)
        except BaseException:
            _settle_all(batch, RuntimeError(f"{self.name} stopped"))
            raise
        finally:
            self._slots.release()
        for (_, done), result in zip(batch, results, strict=True):
            if done.done():
                continue
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)

    async def close(self) -> None:
        """Refuse new items and wait until the queued ones are decided."""
        self._closed = True
        if self._dispatcher is not None:
            with contextlib.suppress(Exception):
                await self._dispatcher
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)


def _settle_all(batch: list[tuple[In, asyncio.Future[Out]]], error: Exception) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(error)
