"""The renewal reminder email: one per membership-renewal-requested, only to a person who
consented to emails for the membership purpose (``MESSAGING_RENEWAL_PURPOSE``), never to a
suppressed address or an erased person. It is not transactional: it carries the
unsubscribe link (List-Unsubscribe, one click) of that purpose."""

from __future__ import annotations

import hashlib

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import MembershipRenewalRequestedV1
from tribune_shared.logging import get_logger

from messaging.service import MessagingService

log = get_logger(__name__)

RENEWAL_REMINDERS = Counter(
    "tribune_renewal_reminders_total",
    "Renewal reminders by outcome: sent, or why not (no_consent, consent_revoked, "
    "suppressed, no_address, bad_address, erased)",
    ["outcome"],
)


def reminder_message_id(event_id: str) -> str:
    """The reminder's message id derives from its event: a redelivery is the same mail."""
    return hashlib.sha256(f"renewal:{event_id}".encode()).hexdigest()[:32]


def fill(template: str, event: MembershipRenewalRequestedV1) -> str:
    # a plan name is configuration, yet it lands in a header: one line, whatever it holds
    plan = " ".join(event.plan.split())
    return (
        template.replace("{ends_on}", event.ends_on.isoformat())
        .replace("{days_left}", str(event.days_left))
        .replace("{plan}", plan)
    )


class RenewalReminders:
    def __init__(self, service: MessagingService) -> None:
        self.service = service
        self.settings = service.settings
        self.messages = service.messages

    def _skipped(self, event: MembershipRenewalRequestedV1, reason: str) -> None:
        RENEWAL_REMINDERS.labels(reason).inc()
        log.info("renewal_reminder.skipped", contact_id=event.contact_id, reason=reason)

    async def on_renewal_requested(self, envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, MembershipRenewalRequestedV1)
        message_id = reminder_message_id(envelope.event_id)
        outcome = await self.service.send_consented_email(
            envelope,
            session,
            contact_id=event.contact_id,
            purpose=self.settings.renewal_purpose,
            message_id=message_id,
            subject=fill(self.settings.renewal_subject, event),
            text=fill(self.settings.renewal_text, event),
            extra={"membership_id": event.membership_id},
        )
        if outcome == "already_sent":
            return
        if outcome != "sent":
            return self._skipped(event, outcome)
        RENEWAL_REMINDERS.labels("sent").inc()
        log.info("renewal_reminder.sent", message_id=message_id, contact_id=event.contact_id)
