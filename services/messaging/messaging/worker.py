"""Messaging worker process: ``python -m messaging.worker`` (consumers + outbox relay).

Several may run side by side: the consumer group shares the partitions, handlers are
idempotent, and one relay at a time holds the outbox lease.
"""

from __future__ import annotations

import asyncio

from tribune_shared.federations import INDEXES as FEDERATION_INDEXES
from tribune_shared.federations import FederationDirectory, path_fields
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from messaging.campaigns.content import TemplateContent
from messaging.campaigns.dispatcher import Dispatcher
from messaging.campaigns.guard import Guard
from messaging.campaigns.handlers import campaign_handlers
from messaging.campaigns.service import CampaignService
from messaging.campaigns.store import INDEXES as CAMPAIGN_INDEXES
from messaging.feedback.service import FeedbackService, early_receipts_task
from messaging.feedback.store import INDEXES as FEEDBACK_INDEXES
from messaging.handlers import (
    confirmation_handlers,
    consent_handlers,
    contact_handlers,
    membership_handlers,
    suppression_handlers,
)
from messaging.mailer import FailoverMailer
from messaging.monitoring.jobs import CampaignWatch
from messaging.privacy import erasure_handlers
from messaging.reminders.handlers import meeting_reminder_handlers
from messaging.renewals.handlers import renewal_handlers
from messaging.revocations import RevocationFeed
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.sms.providers import build_sms_sender, sms_http_client
from messaging.store import INDEXES, MessagingStore
from messaging.templates.service import TemplateService
from messaging.templates.store import TEMPLATE_INDEXES
from messaging.tracking.store import INDEXES as TRACKING_INDEXES


def build_worker(settings: MessagingSettings | None = None) -> Worker:
    settings = settings or MessagingSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    messages = MessagingStore(store)
    # the "no"s read straight from Kafka (messaging.revocations): the guard and the
    # transactional sends honour them before the views have applied them
    feed = RevocationFeed(settings) if settings.revocation_feed_enabled else None
    # one pool of SMTP sessions (and one rate limit per relay) for everything the worker
    # sends: campaigns, and the emails events ask for (confirmations, reminders), which a
    # viral petition asks for by the thousand
    mail = FailoverMailer.from_settings(settings)
    service = MessagingService(settings, store, mail, messages=messages, revocations=feed)
    indexes = [*INDEXES, *CAMPAIGN_INDEXES, *FEEDBACK_INDEXES]
    # a moved federation's documents follow it (tribune_shared.federations); the API's
    # collections too
    federations = FederationDirectory(
        store, path_fields(indexes, TEMPLATE_INDEXES, TRACKING_INDEXES), settings
    )
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(contact_handlers(messages))
        .add(consent_handlers(messages))
        .add(suppression_handlers(messages))
        .add(membership_handlers(messages))
        .add(confirmation_handlers(service))
        .add(renewal_handlers(service))
        .add(meeting_reminder_handlers(service))
        .add(federations.handlers())
        .add(erasure_handlers(store))
        .add(campaign_handlers(store))
    )
    content = TemplateContent(TemplateService(settings, store))
    campaigns = CampaignService(settings, store, content)

    async def dispatch(stop: asyncio.Event) -> None:  # campaign sending (messaging.campaigns)
        client = sms_http_client(settings)
        sms = build_sms_sender(settings, client)
        dispatcher = Dispatcher(
            settings,
            store,
            content=content,
            email=mail,
            sms=sms if sms.providers else None,
            launch=campaigns.launch_due,
            guard=Guard(store, memory_seconds=settings.campaign_guard_memory_seconds, feed=feed),
        )
        try:
            await dispatcher.run(stop)
        finally:
            # idle sessions are closed; one a consumer still uses closes with the process
            await mail.close()
            await client.aclose()

    tasks = [
        dispatch,
        # SMS receipts that came before their message's outcome (messaging.feedback)
        early_receipts_task(FeedbackService(settings, store)),
        federations.task(),
    ]
    if feed is not None:
        tasks.append(feed.run)
    if settings.campaign_watch_interval_seconds > 0:  # stalled-campaign gauges
        tasks.append(CampaignWatch(settings, store).task())
    return Worker(
        settings,
        store,
        subscriptions=subscriptions,
        indexes=[*indexes, *FEDERATION_INDEXES],
        tasks=tasks,
    )


if __name__ == "__main__":
    run_worker(build_worker)
