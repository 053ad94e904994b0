"""Gateway worker process: ``python -m gateway.worker`` (the outbox relay: federation-*)."""

from __future__ import annotations

from tribune_shared.store import Store
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from gateway.settings import GatewaySettings
from gateway.store import INDEXES, audit_indexes


def build_worker(settings: GatewaySettings | None = None) -> Worker:
    settings = settings or GatewaySettings()
    configure_worker_logging(settings)
    indexes = [*INDEXES, *audit_indexes(settings.audit_retention_days)]
    return Worker(settings, Store(settings), indexes=indexes)


if __name__ == "__main__":
    run_worker(build_worker)
