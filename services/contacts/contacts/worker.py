"""Contacts worker process: ``python -m contacts.worker`` (consumers + outbox relay)."""

from __future__ import annotations

import asyncio

from tribune_shared.federations import INDEXES as FEDERATION_INDEXES
from tribune_shared.federations import FederationDirectory, path_fields
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, periodic, run_worker

from contacts.audiences.handlers import audience_handlers
from contacts.audiences.jobs import run_audience_jobs
from contacts.audiences.store import INDEXES as AUDIENCE_INDEXES
from contacts.forms.handlers import text_handlers
from contacts.forms.store import INDEXES as FORM_INDEXES
from contacts.import_jobs import run_import_jobs
from contacts.meetings.service import MeetingReminders
from contacts.meetings.store import INDEXES as MEETING_INDEXES
from contacts.privacy import erasure_handlers
from contacts.settings import ContactsSettings
from contacts.store import INDEXES
from contacts.submissions.handlers import submission_handlers
from contacts.submissions.store import INDEXES as SUBMISSION_INDEXES
from contacts.suppression import suppression_handlers


def build_worker(settings: ContactsSettings | None = None) -> Worker:
    settings = settings or ContactsSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    indexes = [
        *INDEXES,
        *AUDIENCE_INDEXES,
        *SUBMISSION_INDEXES,
        *MEETING_INDEXES,
        *FORM_INDEXES,
    ]
    # a moved federation's documents follow it (tribune_shared.federations)
    federations = FederationDirectory(store, path_fields(indexes), settings)
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(federations.handlers())
        .add(erasure_handlers(store))
        .add(suppression_handlers(store))
        .add(audience_handlers(store))
        .add(submission_handlers(settings, store))
        .add(text_handlers(store))  # copy of consent texts (contacts.forms)
    )

    async def import_jobs(stop: asyncio.Event) -> None:  # CSV imports (contacts.import_jobs)
        await run_import_jobs(settings, store, stop)

    async def audiences(stop: asyncio.Event) -> None:  # campaign audiences (contacts.audiences)
        await run_audience_jobs(settings, store, stop)

    return Worker(
        settings,
        store,
        subscriptions=subscriptions,
        indexes=[*indexes, *FEDERATION_INDEXES],
        tasks=[
            import_jobs,
            audiences,
            federations.task(),
            # meeting reminders due (contacts.meetings)
            periodic(
                "meetings.reminders",
                settings.meeting_reminder_interval_seconds,
                MeetingReminders(settings, store).run,
            ),
        ],
    )


if __name__ == "__main__":
    run_worker(build_worker)
