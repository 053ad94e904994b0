"""Contacts API process: ``python -m contacts.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from contacts.api import router
from contacts.export_service import ExportsService
from contacts.forms.api import router as forms_router
from contacts.forms.public_api import router as public_forms_router
from contacts.forms.service import FormsService, PublicForms
from contacts.forms.store import INDEXES as FORM_INDEXES
from contacts.import_api import router as imports_router
from contacts.import_service import ImportsService
from contacts.meetings.api import router as meetings_router
from contacts.meetings.service import MeetingsService
from contacts.meetings.store import INDEXES as MEETING_INDEXES
from contacts.merge_service import MergeService
from contacts.privacy import router as privacy_router
from contacts.segment_service import SegmentsService
from contacts.segments_api import router as segments_router
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import INDEXES
from contacts.submissions.api import router as submissions_router


def create_app(settings: ContactsSettings | None = None) -> FastAPI:
    settings = settings or ContactsSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.contacts_service = ContactsService(settings, app.state.store)
        app.state.segments_service = SegmentsService(
            settings, app.state.store, app.state.contacts_service
        )
        app.state.exports_service = ExportsService(
            settings, app.state.store, app.state.contacts_service, app.state.segments_service
        )
        app.state.imports_service = ImportsService(settings, app.state.store)
        app.state.merge_service = MergeService(settings, app.state.store)
        app.state.forms_service = FormsService(
            settings, app.state.store, app.state.contacts_service
        )
        app.state.public_forms = PublicForms(settings, app.state.store, app.state.contacts_service)
        app.state.meetings_service = MeetingsService(settings, app.state.store)

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.public_forms.close()  # queued submissions are written first

    return create_service_app(
        settings,
        title="Tribune contacts",
        # /contacts/privacy/{id}, /contacts/imports, /duplicates, /merges before /{id}
        routers=[
            privacy_router,
            imports_router,
            router,
            segments_router,
            forms_router,
            public_forms_router,
            submissions_router,
            meetings_router,
        ],
        indexes=[*INDEXES, *MEETING_INDEXES, *FORM_INDEXES],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    settings = ContactsSettings()
    serve(create_app(settings), settings)
