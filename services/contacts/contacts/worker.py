"""Contacts worker process: ``python -m contacts.worker`` (consumers + outbox relay)."""

from __future__ import annotations

import asyncio

from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from contacts.audiences.handlers import audience_handlers
from contacts.audiences.jobs import run_audience_jobs
from contacts.audiences.store import INDEXES as AUDIENCE_INDEXES
from contacts.handlers import federation_handlers
from contacts.import_jobs import run_import_jobs
from contacts.privacy import erasure_handlers
from contacts.settings import ContactsSettings
from contacts.store import INDEXES
from contacts.suppression import suppression_handlers


def build_worker(settings: ContactsSettings | None = None) -> Worker:
    settings = settings or ContactsSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(federation_handlers(store))
        .add(erasure_handlers(store))
        .add(suppression_handlers(store))
        .add(audience_handlers(store))
    )

    async def import_jobs(stop: asyncio.Event) -> None:  # CSV imports (contacts.import_jobs)
        await run_import_jobs(settings, store, stop)

    async def audiences(stop: asyncio.Event) -> None:  # campaign audiences (contacts.audiences)
        await run_audience_jobs(settings, store, stop)

    return Worker(
        settings,
        store,
        subscriptions=subscriptions,
        indexes=[*INDEXES, *AUDIENCE_INDEXES],
        tasks=[import_jobs, audiences],
    )


if __name__ == "__main__":
    run_worker(build_worker)
