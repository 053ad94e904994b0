"""Messaging worker process: ``python -m messaging.worker`` (consumers + outbox relay).

Several may run side by side: the consumer group shares the partitions, handlers are
idempotent, and one relay at a time holds the outbox lease.
"""

from __future__ import annotations

from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from messaging.handlers import (
    confirmation_handlers,
    consent_handlers,
    contact_handlers,
    suppression_handlers,
)
from messaging.mailer import SmtpMailer
from messaging.privacy import erasure_handlers
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import INDEXES, MessagingStore


def build_worker(settings: MessagingSettings | None = None) -> Worker:
    settings = settings or MessagingSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    messages = MessagingStore(store)
    service = MessagingService(settings, store, SmtpMailer(settings), messages=messages)
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(contact_handlers(messages))
        .add(consent_handlers(messages))
        .add(suppression_handlers(messages))
        .add(confirmation_handlers(service))
        .add(FederationDirectory(store).handlers())
        .add(erasure_handlers(store))
    )
    return Worker(settings, store, subscriptions=subscriptions, indexes=INDEXES)


if __name__ == "__main__":
    run_worker(build_worker)
