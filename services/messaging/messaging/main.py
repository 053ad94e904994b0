"""Messaging API process: ``python -m messaging.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from messaging.api import router
from messaging.mailer import Mailer, SmtpMailer
from messaging.privacy import router as privacy_router
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import INDEXES


def create_app(settings: MessagingSettings | None = None, mailer: Mailer | None = None) -> FastAPI:
    settings = settings or MessagingSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.messaging_service = MessagingService(
            settings, app.state.store, mailer or SmtpMailer(settings)
        )

    return create_service_app(
        settings,
        title="Tribune messaging",
        routers=[privacy_router, router],
        indexes=INDEXES,
        on_startup=on_startup,
    )


if __name__ == "__main__":
    settings = MessagingSettings()
    serve(create_app(settings), settings)
