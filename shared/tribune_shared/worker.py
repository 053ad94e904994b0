"""The one way a Tribune worker process runs: consumers, the outbox relay and an ops
HTTP server (/health, /ready, /metrics); SIGTERM finishes in-flight work and commits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI

from tribune_shared.bus import EventConsumer, EventPublisher, ensure_topics
from tribune_shared.expiry import expiry_task
from tribune_shared.health import kafka_reachable, ops_router
from tribune_shared.logging import configure_logging, get_logger
from tribune_shared.outbox import OutboxRelay, kernel_indexes
from tribune_shared.projections import routes_task
from tribune_shared.runtime import tune_gc
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store
from tribune_shared.subscriptions import Subscriptions

log = get_logger(__name__)

#: a periodic job of a worker: runs until the event is set (SIGTERM), then returns
BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def periodic(
    name: str, interval_seconds: float, work: Callable[[], Awaitable[object]]
) -> BackgroundTask:
    """A worker background task running ``work`` every ``interval_seconds`` until SIGTERM.
    A failing round (the store is down) is logged as ``<name>.failed`` and the next round
    tries again: a periodic job never stops the worker."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await work()
            except Exception as exc:
                log.warning(f"{name}.failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)

    run.__name__ = name.replace(".", "_")
    return run


class _OpsServer(uvicorn.Server):
    # The worker owns the signals; uvicorn must not capture them.
    def capture_signals(self):
        return contextlib.nullcontext()


class Worker:
    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        *,
        subscriptions: Subscriptions | None = None,
        indexes: Sequence[IndexSpec] = (),
        relay: bool = True,
        tasks: Sequence[BackgroundTask] = (),
    ) -> None:
        self.settings = settings
        self.background = list(tasks)
        self.store = store
        self.indexes = indexes
        self.publisher = EventPublisher(settings)
        self.relay = OutboxRelay(store, self.publisher) if relay else None
        self.consumers: list[EventConsumer] = []
        if subscriptions is not None:
            subscriptions.check_registry()
            # One consumer per lane: an urgent event never waits behind a bulk batch.
            self.consumers = [
                EventConsumer(
                    settings,
                    store,
                    group=subscriptions.service,
                    handlers=steps,
                    dlq_publisher=self.publisher,
                    lane=lane,
                )
                for lane, steps in subscriptions.lanes()
            ]
        self.stop_requested = asyncio.Event()

    def request_stop(self) -> None:
        log.info("worker.stop_requested")
        self.stop_requested.set()
        for consumer in self.consumers:
            consumer.request_stop()
        if self.relay:
            self.relay.request_stop()

    def _ops_app(self) -> FastAPI:
        app = FastAPI(title=f"{self.settings.service_name} worker", docs_url=None)
        app.include_router(ops_router())
        app.state.readiness = {
            "store": self.store.ping,
            "kafka": lambda: kafka_reachable(self.settings),
        }
        return app

    async def run(self) -> None:
        # reads and writes go to each projection's active collection (a rebuild flips it)
        await self.store.load_routes()
        self.background.append(routes_task(self.store, self.settings))
        await self.store.ensure_indexes([*kernel_indexes(self.settings), *self.indexes])
        self.background.append(expiry_task(self.store, self.settings))
        await ensure_topics(self.settings)
        await self.publisher.start()
        for consumer in self.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run(), name=c.group) for c in self.consumers]
        if self.relay:
            tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        for job in self.background:
            name = getattr(job, "__name__", "background")
            tasks.append(asyncio.create_task(job(self.stop_requested), name=name))
        ops = _OpsServer(
            uvicorn.Config(
                self._ops_app(),
                host=self.settings.http_host,
                port=self.settings.worker_port,
                log_config=None,
                access_log=False,
            )
        )
        ops_task = asyncio.create_task(ops.serve(), name="ops-http")
        log.info("worker.started", groups=[c.group for c in self.consumers])
        try:
            done, _ = await asyncio.wait(
                [*tasks, asyncio.create_task(self.stop_requested.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                if task in tasks and task.exception():
                    log.error(
                        "worker.task_failed", task=task.get_name(), error=repr(task.exception())
                    )
            self.request_stop()
            await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True),
                timeout=self.settings.consumer_shutdown_timeout_seconds,
            )
        finally:
            ops.should_exit = True
            await ops_task
            await self.publisher.stop()
            await self.store.close()
            log.info("worker.stopped")


def run_worker(worker_factory) -> None:
    """Process entry point: build the worker inside the loop, stop it on SIGTERM/SIGINT."""

    async def main() -> None:
        worker: Worker = worker_factory()
        tune_gc(worker.settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        await worker.run()

    # uvloop, as the APIs' uvicorn: a worker's loop turns once per Kafka poll, store reply
    # and SMTP answer, and the stdlib loop's own work showed in the campaign worker's profile
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def configure_worker_logging(settings: ServiceSettings) -> None:
    configure_logging(f"{settings.service_name}-worker", settings.log_level)
