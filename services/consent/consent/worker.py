"""Consent worker process: ``python -m consent.worker`` (consumers + outbox relay)."""

from __future__ import annotations

from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store
from tribune_shared.worker import ConsumerGroup, Worker, configure_worker_logging, run_worker

from consent.handlers import contact_handlers, contact_merge_handlers, suppression_handlers
from consent.privacy_handlers import all_privacy_handlers, merge_handlers, retention_sweeper
from consent.privacy_service import PrivacyService
from consent.privacy_store import PRIVACY_INDEXES
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import INDEXES, ConsentStore


def build_worker(settings: ConsentSettings | None = None) -> Worker:
    settings = settings or ConsentSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    consent = ConsentService(settings, store)
    handlers = {
        **contact_handlers(ConsentStore(store), ContactDirectory(store), settings.suppression_salt),
        **FederationDirectory(store).handlers(),
        **suppression_handlers(consent),
        **contact_merge_handlers(consent),
    }
    # Privacy and retention: their handlers chain with the others on shared event types.
    privacy = PrivacyService(settings, store)
    handlers = merge_handlers(handlers, *all_privacy_handlers(privacy))
    tasks = []
    if settings.retention_interval_seconds > 0:
        tasks.append(retention_sweeper(privacy, settings.retention_interval_seconds))
    return Worker(
        settings,
        store,
        groups=[ConsumerGroup("consent", handlers)],
        indexes=[*INDEXES, *PRIVACY_INDEXES],
        tasks=tasks,
    )


if __name__ == "__main__":
    run_worker(build_worker)
