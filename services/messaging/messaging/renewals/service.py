"""The renewal reminder email: one per membership-renewal-requested, only to a person who
consented to emails for the membership purpose (``MESSAGING_RENEWAL_PURPOSE``), never to a
suppressed address or an erased person. It is not transactional: it carries the
unsubscribe link (List-Unsubscribe, one click) of that purpose."""

from __future__ import annotations

import hashlib

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, decode_as, utcnow
from tribune_shared.events.contracts import Channel, MembershipRenewalRequestedV1
from tribune_shared.logging import get_logger
from tribune_shared.metrics import MESSAGES
from tribune_shared.subscriptions import Awaiting

from messaging.composer import InvalidRecipientAddress, build_email, unsubscribe_url
from messaging.domain import MessageStatus, refusal
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
        done = await self.messages.message(message_id, session)
        if done is not None and done.get("status") == MessageStatus.sent.value:
            return
        recipient = await self.messages.recipient(event.contact_id, session)
        if recipient is None:
            if await self.messages.is_erased(event.contact_id, session):
                return self._skipped(event, "erased")
            # Not projected yet (contact-created comes on another topic): waited for.
            raise Awaiting(f"contact {event.contact_id} is not known to messaging yet")
        purpose = self.settings.renewal_purpose
        consent = await self.messages.consent(event.contact_id, Channel.email, purpose)
        refused = refusal(
            recipient,
            consent,
            Channel.email,
            purpose,
            suppressed=await self.service._suppressed(recipient),
        )
        if refused is not None:  # no consent for the membership purpose: nothing is sent
            MESSAGES.labels(Channel.email.value, "refused").inc()
            return self._skipped(event, refused.rule)
        now = utcnow()
        subject = fill(self.settings.renewal_subject, event)
        link = unsubscribe_url(
            self.settings.unsubscribe_base_url,
            self.service.tokens.sign(event.contact_id, purpose),
        )
        try:
            email = build_email(
                message_id=message_id,
                mail_from=self.settings.mail_from,
                recipient=recipient,
                subject=subject,
                text=fill(self.settings.renewal_text, event),
                unsubscribe_link=link,
                footer_template=self.settings.unsubscribe_footer,
                date=now,
            )
        except InvalidRecipientAddress:
            MESSAGES.labels(Channel.email.value, "refused").inc()
            return self._skipped(event, "bad_address")
        message = {
            "_id": message_id,
            "contact_id": event.contact_id,
            "channel": Channel.email.value,
            "purpose": purpose,
            "subject": subject,
            "campaign_id": None,
            "federation_id": recipient.federation_id,
            "federation_path": recipient.federation_path,
            "created_by": envelope.producer,
            "created_at": now,
            "transactional": False,
            "per_person_tracking": False,
            "cause_event_id": envelope.event_id,
            "membership_id": event.membership_id,
        }
        await self.service.send_for_event(
            envelope, session, recipient=recipient, message=message, email=email
        )
        RENEWAL_REMINDERS.labels("sent").inc()
        log.info("renewal_reminder.sent", message_id=message_id, contact_id=event.contact_id)
