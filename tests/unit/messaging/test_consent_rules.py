"""Messaging honours what consent decides beyond a purpose's consent: the suppression list,
the tracking consent, and the transactional confirmation email."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from messaging.composer import build_transactional_email
from messaging.domain import (
    ConsentState,
    ConsentStatus,
    Recipient,
    check_purpose,
    refusal,
    tracking_allowed,
)
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from tribune_shared.auth import Role
from tribune_shared.errors import InvalidField, Refused
from tribune_shared.events.contracts import Channel
from tribune_shared.suppression import email_hash
from tribune_shared.testing import make_identity

AT = datetime(2026, 1, 1, tzinfo=UTC)
ANA = Recipient(
    contact_id="ana", federation_id="paris", federation_path="/root/paris/", email="ana@x.org"
)
GRANTED = ConsentState(ConsentStatus.granted, AT)


def test_a_suppressed_address_is_refused_whatever_the_consent():
    found = refusal(ANA, GRANTED, Channel.email, "news", suppressed=True)
    assert found is not None and found.rule == "suppressed"
    assert refusal(ANA, GRANTED, Channel.email, "news") is None


def test_tracking_needs_a_granted_tracking_consent():
    assert tracking_allowed(GRANTED)
    assert not tracking_allowed(None)
    assert not tracking_allowed(ConsentState(ConsentStatus.revoked, AT))


def test_tracking_is_not_a_message_purpose():
    check_purpose("news", "tracking")
    with pytest.raises(InvalidField) as refused:
        check_purpose("tracking", "tracking")
    assert refused.value.field == "purpose"


def test_the_confirmation_email_carries_no_unsubscribe():
    mail = build_transactional_email(
        message_id="m1",
        mail_from="Parti <news@parti.example.org>",
        recipient=ANA,
        subject="Please confirm",
        text="Open https://x.example/confirm?token=t",
        date=AT,
    )
    assert "List-Unsubscribe" not in mail
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "https://x.example/confirm?token=t" in mail.get_content()


def test_the_confirmation_text_must_hold_the_link(monkeypatch):
    monkeypatch.setenv("MESSAGING_CONFIRMATION_TEXT", "Please confirm.")
    with pytest.raises(ValueError, match="url"):
        MessagingSettings()


class FakeMessages:
    def __init__(self) -> None:
        self.recipients: dict[str, Recipient] = {}
        self.consents: dict[tuple[str, str, str], ConsentState] = {}
        self.suppressed: set[str] = set()
        self.log: dict[str, dict] = {}

    async def find_recipient(self, identity, contact_id):
        return self.recipients.get(contact_id)

    async def consent(self, contact_id, channel, purpose):
        return self.consents.get((contact_id, channel.value, purpose))

    async def is_suppressed(self, address_hash):
        return address_hash in self.suppressed

    async def record_sending(self, message):
        self.log[message["_id"]] = {**message, "status": "sending"}

    async def record_outcome(self, message_id, status, at, reason, session):
        self.log[message_id]["status"] = status.value
        return {"status": status.value}


class FakeOutbox:
    def __init__(self) -> None:
        self.envelopes: list = []

    async def add(self, session, *envelopes):
        self.envelopes.extend(envelopes)


class FakeStore:
    @asynccontextmanager
    async def transaction(self):
        yield object()


class FakeMailer:
    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, message) -> None:
        self.sent.append(message)


def build(messages: FakeMessages, mailer: FakeMailer) -> tuple[MessagingService, FakeOutbox]:
    outbox = FakeOutbox()
    svc = MessagingService(
        MessagingSettings(), FakeStore(), mailer, messages=messages, outbox=outbox
    )
    return svc, outbox


async def send(svc: MessagingService, purpose: str = "news"):
    return await svc.send(
        make_identity("/root/paris/", Role.campaign_manager),
        contact_id="ana",
        channel=Channel.email,
        purpose=purpose,
        subject="Hello",
        text="Body",
    )


@pytest.fixture
def messages() -> FakeMessages:
    fake = FakeMessages()
    fake.recipients["ana"] = Recipient(
        contact_id="ana",
        federation_id="paris",
        federation_path="/root/paris/",
        email="Ana@Example.org",
    )
    fake.consents["ana", "email", "news"] = GRANTED
    return fake


async def test_send_refuses_a_suppressed_address_and_mails_nothing(messages):
    mailer = FakeMailer()
    svc, outbox = build(messages, mailer)
    messages.suppressed.add(email_hash("ana@example.org", svc.settings.suppression_salt))
    with pytest.raises(Refused) as refused:
        await send(svc)
    assert refused.value.extra["rule"] == "suppressed"
    assert mailer.sent == [] and outbox.envelopes == [] and messages.log == {}


async def test_the_log_says_whether_per_person_tracking_was_allowed(messages):
    svc, _ = build(messages, FakeMailer())
    first = await send(svc)
    assert first["per_person_tracking"] is False
    messages.consents["ana", "email", "tracking"] = GRANTED
    second = await send(svc)
    assert second["per_person_tracking"] is True
    assert messages.log[second["_id"]]["per_person_tracking"] is True


async def test_tracking_is_refused_as_a_message_purpose(messages):
    mailer = FakeMailer()
    svc, _ = build(messages, mailer)
    with pytest.raises(InvalidField):
        await send(svc, purpose="tracking")
    assert mailer.sent == []
