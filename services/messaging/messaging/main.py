"""Messaging API process: ``python -m messaging.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from messaging.api import router
from messaging.campaigns.api import router as campaigns_router
from messaging.campaigns.content import TemplateContent
from messaging.campaigns.service import CampaignService
from messaging.campaigns.store import INDEXES as CAMPAIGN_INDEXES
from messaging.mailer import Mailer, SmtpMailer
from messaging.privacy import router as privacy_router
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import INDEXES
from messaging.templates.api import router as templates_router
from messaging.templates.service import TemplateService
from messaging.templates.store import TEMPLATE_INDEXES


def create_app(settings: MessagingSettings | None = None, mailer: Mailer | None = None) -> FastAPI:
    settings = settings or MessagingSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.messaging_service = MessagingService(
            settings, app.state.store, mailer or SmtpMailer(settings)
        )
        app.state.template_service = TemplateService(settings, app.state.store)
        app.state.campaign_service = CampaignService(
            settings, app.state.store, TemplateContent(app.state.template_service)
        )

    return create_service_app(
        settings,
        title="Tribune messaging",
        routers=[privacy_router, router, templates_router, campaigns_router],
        indexes=[*INDEXES, *TEMPLATE_INDEXES, *CAMPAIGN_INDEXES],
        on_startup=on_startup,
    )


if __name__ == "__main__":
    settings = MessagingSettings()
    serve(create_app(settings), settings)
