"""Meeting reminders in messaging over the real store: the person who consented to the
purpose the request names gets one email; the one who did not gets none; a redelivered
request sends nothing twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from messaging.handlers import consent_handlers, contact_handlers
from messaging.mailer import SmtpMailer
from messaging.reminders.handlers import meeting_reminder_handlers
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from support import deliver, run_with_store
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ConsentGrantedV1,
    ContactCreatedV1,
    ContactState,
    MeetingReminderRequestedV1,
)
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
PURPOSE = "news"
STARTS = datetime(2026, 6, 10, 16, 30, tzinfo=UTC)  # 18:30 in Paris


def envelope(event) -> Envelope:
    producer = "consent" if isinstance(event, ConsentGrantedV1) else "contacts"
    return new_envelope(event, producer=producer, federation_id="paris", federation_path=PARIS)


def people(cid: str) -> Envelope:
    state = ContactState(given_name="Ada", family_name=cid, email=f"{cid}@example.org")
    return envelope(ContactCreatedV1(contact_id=cid, contact_version=1, contact=state))


def granted(cid: str, purpose: str) -> Envelope:
    return envelope(
        ConsentGrantedV1(
            contact_id=cid,
            channel=Channel.email,
            purpose=purpose,
            source="web form",
            granted_at=datetime(2026, 1, 15, tzinfo=UTC),
        )
    )


def reminder(cid: str) -> Envelope:
    return envelope(
        MeetingReminderRequestedV1(
            meeting_id="m1",
            contact_id=cid,
            title="Réunion\npublique",
            kind="meeting",
            starts_at=STARTS,
            place="Salle des fêtes, Lyon 3e",
            purpose=PURPOSE,
            hours_before=24,
        )
    )


def test_a_reminder_goes_only_to_who_consented_and_only_once(
    isolated_env, smtp_server, monkeypatch
):
    sink, port = smtp_server
    monkeypatch.setenv("MESSAGING_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MESSAGING_SMTP_PORT", str(port))
    settings = MessagingSettings()
    sink.take()

    async def handle(*envelopes: Envelope) -> None:
        store = Store(settings)
        messages = MessagingStore(store)
        service = MessagingService(settings, store, SmtpMailer(settings), messages=messages)
        subscriptions = (
            Subscriptions("messaging")
            .add(contact_handlers(messages))
            .add(consent_handlers(messages))
            .add(meeting_reminder_handlers(service))
        )
        try:
            await deliver(store, subscriptions, *envelopes)
        finally:
            await store.close()

    requests = [reminder("yes"), reminder("no")]
    asyncio.run(
        handle(
            people("yes"),
            people("no"),
            granted("yes", PURPOSE),
            granted("no", "fundraising"),  # another purpose only
            *requests,
        )
    )
    [(_, mail)] = sink.take()
    assert mail["To"].addresses[0].addr_spec == "yes@example.org"
    assert mail["Subject"] == "Reminder: Réunion publique, 2026-06-10 at 18:30"
    assert "Salle des fêtes, Lyon 3e" in mail.get_content()
    assert "List-Unsubscribe" in mail  # consent-based, not transactional

    asyncio.run(handle(*requests))  # redelivered: nothing twice
    assert sink.take() == []

    async def logged(store: Store) -> list[dict[str, Any]]:
        return await store["messages"].find({"meeting_id": "m1"}).to_list()

    [message] = run_with_store(settings, logged)
    assert (message["contact_id"], message["status"], message["purpose"]) == (
        "yes",
        "sent",
        PURPOSE,
    )
