"""The meeting reminder's text: filled in the configured time zone, one line where a
header takes it, and one message id per request event (a redelivery is the same mail)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from messaging.reminders.service import fill, reminder_message_id
from tribune_shared.events.contracts import MeetingReminderRequestedV1


def event(**fields) -> MeetingReminderRequestedV1:
    base = {
        "meeting_id": "m1",
        "contact_id": "c1",
        "title": "Porte-à-porte\r\nBcc: x@y",
        "kind": "canvassing",
        "starts_at": datetime(2026, 12, 10, 17, 30, tzinfo=UTC),
        "place": "",
        "purpose": "news",
        "hours_before": 24,
    }
    return MeetingReminderRequestedV1.model_validate({**base, **fields})


def test_the_reminder_is_written_in_the_local_time_on_one_line():
    text = fill("{title} | {date} {time} | {place}", event(), ZoneInfo("Europe/Paris"))
    assert text == "Porte-à-porte Bcc: x@y | 2026-12-10 18:30 | -"
    summer = event(starts_at=datetime(2026, 6, 10, 16, 30, tzinfo=UTC), place="Salle A")
    assert fill("{time} {place}", summer, ZoneInfo("Europe/Paris")) == "18:30 Salle A"


def test_one_message_id_per_request():
    assert reminder_message_id("e1") == reminder_message_id("e1")
    assert reminder_message_id("e1") != reminder_message_id("e2")
    assert len(reminder_message_id("e1")) == 32
