"""Messaging API process: ``python -m messaging.main``."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from messaging.api import router
from messaging.campaigns.api import router as campaigns_router
from messaging.campaigns.content import TemplateContent
from messaging.campaigns.service import CampaignService
from messaging.campaigns.store import INDEXES as CAMPAIGN_INDEXES
from messaging.feedback.api import router as feedback_router
from messaging.feedback.service import FeedbackService
from messaging.feedback.store import INDEXES as FEEDBACK_INDEXES
from messaging.mailer import Mailer, SmtpMailer
from messaging.privacy import router as privacy_router
from messaging.revocations import RevocationFeed
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import INDEXES
from messaging.templates.api import router as templates_router
from messaging.templates.service import TemplateService
from messaging.templates.store import TEMPLATE_INDEXES
from messaging.tracking.api import router as tracking_router
from messaging.tracking.service import TrackingService
from messaging.tracking.store import INDEXES as TRACKING_INDEXES


def create_app(settings: MessagingSettings | None = None, mailer: Mailer | None = None) -> FastAPI:
    settings = settings or MessagingSettings()

    async def on_startup(app: FastAPI) -> None:
        # the "no"s read straight from Kafka (messaging.revocations): reachability and
        # sends honour them before the views have applied them
        feed = RevocationFeed(settings) if settings.revocation_feed_enabled else None
        app.state.revocations_stop = asyncio.Event()
        app.state.revocations_task = (
            asyncio.create_task(feed.run(app.state.revocations_stop), name="revocation_feed")
            if feed is not None
            else None
        )
        app.state.messaging_service = MessagingService(
            settings, app.state.store, mailer or SmtpMailer(settings), revocations=feed
        )
        app.state.template_service = TemplateService(settings, app.state.store)
        app.state.campaign_service = CampaignService(
            settings,
            app.state.store,
            TemplateContent(app.state.template_service),
            app.state.messaging_service.mailer,
        )
        app.state.feedback_service = FeedbackService(settings, app.state.store)
        app.state.tracking_service = TrackingService(settings, app.state.store)
        app.state.tracking_service.start()  # buffered opens/clicks, flushed in batches

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.tracking_service.stop()
        await app.state.feedback_service.close()  # feedback received is recorded first
        app.state.revocations_stop.set()
        if (task := app.state.revocations_task) is not None:
            # it may be waiting on a broker that does not answer: nothing to finish
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return create_service_app(
        settings,
        title="Tribune messaging",
        routers=[
            privacy_router,
            router,
            templates_router,
            campaigns_router,
            feedback_router,
            tracking_router,
        ],
        indexes=[
            *INDEXES,
            *TEMPLATE_INDEXES,
            *CAMPAIGN_INDEXES,
            *FEEDBACK_INDEXES,
            *TRACKING_INDEXES,
        ],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    settings = MessagingSettings()
    serve(create_app(settings), settings)
