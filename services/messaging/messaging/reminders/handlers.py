"""meeting-reminder-requested: the reminder email (idempotent: its message id derives
from the event id)."""

from __future__ import annotations

from tribune_shared.subscriptions import Handler

from messaging.reminders.service import MeetingReminders
from messaging.service import MessagingService


def meeting_reminder_handlers(service: MessagingService) -> dict[str, Handler]:
    return {"meeting-reminder-requested": MeetingReminders(service).on_reminder_requested}
