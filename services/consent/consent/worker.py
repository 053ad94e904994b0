"""Consent worker process: ``python -m consent.worker`` (consumers + outbox relay)."""

from __future__ import annotations

from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.federations import INDEXES as FEDERATION_INDEXES
from tribune_shared.federations import FederationDirectory, path_fields
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from consent.forms.handlers import form_handlers
from consent.handlers import (
    contact_handlers,
    contact_merge_handlers,
    feedback_handlers,
    suppression_handlers,
)
from consent.monitoring.jobs import PrivacyWatch
from consent.privacy_handlers import privacy_handlers, retention_handlers, retention_sweeper
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
    privacy = PrivacyService(settings, store)
    indexes = [*INDEXES, *PRIVACY_INDEXES]
    # a moved federation's documents follow it (tribune_shared.federations)
    federations = FederationDirectory(
        store, path_fields(indexes, ContactDirectory.indexes), settings
    )
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(
            contact_handlers(
                ConsentStore(store), ContactDirectory(store), settings.suppression_salt
            )
        )
        .add(federations.handlers())
        .add(contact_merge_handlers(consent, privacy))
        # suppression first: the erased person's addresses join the list before privacy
        # drops what consent holds on them
        .add(suppression_handlers(consent))
        # messaging's delivery feedback: hard bounces suppress, complaints object
        .add(feedback_handlers(consent))
        # public forms: the boxes a person ticked, with their own proof
        .add(form_handlers(consent))
        .add(privacy_handlers(privacy), also=True)
        # retention clocks move with events other handlers project too
        .add(retention_handlers(privacy.data), also=True)
    )
    tasks = [federations.task()]
    if settings.retention_interval_seconds > 0:
        tasks.append(retention_sweeper(privacy, settings.retention_interval_seconds))
    if settings.privacy_watch_interval_seconds > 0:  # overdue privacy request gauges
        tasks.append(PrivacyWatch(settings, store).task())
    return Worker(
        settings,
        store,
        subscriptions=subscriptions,
        indexes=[*indexes, *FEDERATION_INDEXES],
        tasks=tasks,
    )


if __name__ == "__main__":
    run_worker(build_worker)
