"""Contacts API process: ``python -m contacts.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from contacts.api import router
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import INDEXES


def create_app(settings: ContactsSettings | None = None) -> FastAPI:
    settings = settings or ContactsSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.contacts_service = ContactsService(settings, app.state.store)

    return create_service_app(
        settings, title="Tribune contacts", routers=[router], indexes=INDEXES, on_startup=on_startup
    )


if __name__ == "__main__":
    settings = ContactsSettings()
    serve(create_app(settings), settings)
