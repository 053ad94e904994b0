"""Gateway worker process: ``python -m gateway.worker`` (the outbox relay: federation-*;
the recorder of the live event stream: gateway.live_events)."""

from __future__ import annotations

from tribune_shared.store import Store
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from gateway.live_events.recorder import LiveEventsRecorder
from gateway.live_events.store import LiveEventStore
from gateway.live_events.store import indexes as live_event_indexes
from gateway.settings import GatewaySettings
from gateway.store import INDEXES, audit_indexes


def build_worker(settings: GatewaySettings | None = None) -> Worker:
    settings = settings or GatewaySettings()
    configure_worker_logging(settings)
    indexes = [
        *INDEXES,
        *audit_indexes(settings.audit_retention_days),
        *live_event_indexes(settings.live_events_retention_seconds),
    ]
    store = Store(settings)
    recorder = LiveEventsRecorder(settings, LiveEventStore(store))
    return Worker(settings, store, indexes=indexes, tasks=[recorder.run])


if __name__ == "__main__":
    run_worker(build_worker)
