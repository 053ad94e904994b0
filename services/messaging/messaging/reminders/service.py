"""The meeting reminder email: one per meeting-reminder-requested, only to a person who
consented to emails for the purpose the request names (contacts'
``CONTACTS_MEETING_REMINDER_PURPOSE``), never to a suppressed address or an erased person.
It is not transactional: it carries the unsubscribe link (List-Unsubscribe, one click) of
that purpose. It goes through the one sending path of event-driven emails
(``MessagingService.send_for_event``), like the renewal reminder."""

from __future__ import annotations

import hashlib
from zoneinfo import ZoneInfo

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import MeetingReminderRequestedV1
from tribune_shared.logging import get_logger

from messaging.service import MessagingService

log = get_logger(__name__)

MEETING_REMINDERS = Counter(
    "tribune_meeting_reminders_total",
    "Meeting reminders by outcome: sent, or why not (no_consent, consent_revoked, "
    "suppressed, no_address, bad_address, erased)",
    ["outcome"],
)


def reminder_message_id(event_id: str) -> str:
    """The reminder's message id derives from its event: a redelivery is the same mail."""
    return hashlib.sha256(f"meeting-reminder:{event_id}".encode()).hexdigest()[:32]


def _line(value: str) -> str:
    # a title or a place is typed by an operator, yet lands in a header: one line
    return " ".join(value.split())


def fill(template: str, event: MeetingReminderRequestedV1, tz: ZoneInfo) -> str:
    local = event.starts_at.astimezone(tz)
    return (
        template.replace("{title}", _line(event.title))
        .replace("{date}", local.date().isoformat())
        .replace("{time}", local.strftime("%H:%M"))
        .replace("{place}", _line(event.place) or "-")
    )


class MeetingReminders:
    def __init__(self, service: MessagingService) -> None:
        self.service = service
        self.settings = service.settings
        self.messages = service.messages
        self.tz = ZoneInfo(self.settings.meeting_reminder_timezone)

    def _skipped(self, event: MeetingReminderRequestedV1, reason: str) -> None:
        MEETING_REMINDERS.labels(reason).inc()
        log.info(
            "meeting_reminder.skipped",
            contact_id=event.contact_id,
            meeting_id=event.meeting_id,
            reason=reason,
        )

    async def on_reminder_requested(self, envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, MeetingReminderRequestedV1)
        message_id = reminder_message_id(envelope.event_id)
        outcome = await self.service.send_consented_email(
            envelope,
            session,
            contact_id=event.contact_id,
            purpose=event.purpose,
            message_id=message_id,
            subject=fill(self.settings.meeting_reminder_subject, event, self.tz),
            text=fill(self.settings.meeting_reminder_text, event, self.tz),
            extra={"meeting_id": event.meeting_id},
        )
        if outcome == "already_sent":
            return
        if outcome != "sent":
            return self._skipped(event, outcome)
        MEETING_REMINDERS.labels("sent").inc()
        log.info("meeting_reminder.sent", message_id=message_id, contact_id=event.contact_id)
