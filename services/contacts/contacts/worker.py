"""Contacts worker process: ``python -m contacts.worker`` (consumers + outbox relay)."""

from __future__ import annotations

from tribune_shared.store import Store
from tribune_shared.worker import ConsumerGroup, Worker, configure_worker_logging, run_worker

from contacts.handlers import federation_handlers
from contacts.settings import ContactsSettings
from contacts.store import INDEXES


def build_worker(settings: ContactsSettings | None = None) -> Worker:
    settings = settings or ContactsSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    handlers = {**federation_handlers(store)}
    return Worker(settings, store, groups=[ConsumerGroup("contacts", handlers)], indexes=INDEXES)


if __name__ == "__main__":
    run_worker(build_worker)
