"""Consent worker process: ``python -m consent.worker`` (consumers + outbox relay)."""

from __future__ import annotations

from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store
from tribune_shared.worker import ConsumerGroup, Worker, configure_worker_logging, run_worker

from consent.settings import ConsentSettings
from consent.store import INDEXES


def build_worker(settings: ConsentSettings | None = None) -> Worker:
    settings = settings or ConsentSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    handlers = {
        **ContactDirectory(store).handlers(),
        **FederationDirectory(store).handlers(),
    }
    return Worker(settings, store, groups=[ConsumerGroup("consent", handlers)], indexes=INDEXES)


if __name__ == "__main__":
    run_worker(build_worker)
