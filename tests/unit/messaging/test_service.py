"""The send use case with its I/O faked: the mailer only sees allowed messages, and the
log, the event and the metric follow the provider's answer."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from messaging.composer import OutgoingEmail
from messaging.domain import ConsentState, ConsentStatus, MessageStatus, Recipient
from messaging.mailer import DeliveryError
from messaging.service import DeliveryFailed, MessagingService
from messaging.settings import MessagingSettings
from prometheus_client import REGISTRY
from support import make_identity, on_the_wire
from tribune_shared.auth import Role
from tribune_shared.errors import InvalidField, NotFound, Refused
from tribune_shared.events import decode
from tribune_shared.events.contracts import Channel, MessageFailedV1, MessageSentV1
from tribune_shared.suppression import email_hash

PARIS = make_identity("/root/paris/", Role.campaign_manager)
LYON = make_identity("/root/lyon/", Role.campaign_manager)


class FakeMessages:
    def __init__(self) -> None:
        self.recipients: dict[str, Recipient] = {}
        self.consents: dict[tuple[str, str, str], ConsentState] = {}
        self.log: dict[str, dict] = {}
        self.suppressed: set[str] = set()

    async def find_recipient(self, identity, contact_id):
        found = self.recipients.get(contact_id)
        return found if found and identity.can_see(found.federation_path) else None

    async def consent(self, contact_id, channel, purpose):
        return self.consents.get((contact_id, channel.value, purpose))

    async def is_suppressed(self, address_hash):
        return address_hash in self.suppressed

    async def record_sending(self, message):
        self.log[message["_id"]] = {**message, "status": "sending"}

    async def record_outcome(self, message_id, status, at, reason, session):
        assert session is not None, "the outcome must be written in a transaction"
        changed = {"status": status.value, "failure_reason": reason}
        self.log[message_id].update(changed)
        return changed


class FakeOutbox:
    def __init__(self) -> None:
        self.envelopes = []

    async def add(self, session, *envelopes):
        assert session is not None, "events must be added in the state's transaction"
        self.envelopes.extend(envelopes)


class FakeStore:
    @asynccontextmanager
    async def transaction(self):
        yield object()


class FakeMailer:
    def __init__(self, fail_with: str | None = None) -> None:
        self.sent: list[OutgoingEmail] = []
        self.fail_with = fail_with

    async def send(self, message: OutgoingEmail) -> None:
        if self.fail_with:
            raise DeliveryError(self.fail_with)
        self.sent.append(message)


@pytest.fixture
def messages() -> FakeMessages:
    fake = FakeMessages()
    fake.recipients["ana"] = Recipient(
        contact_id="ana",
        federation_id="paris",
        federation_path="/root/paris/",
        email="ana@example.org",
        given_name="Ana",
    )
    fake.recipients["bob"] = Recipient(
        contact_id="bob", federation_id="paris", federation_path="/root/paris/", email=None
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    fake.consents["ana", "email", "news"] = ConsentState(ConsentStatus.granted, at)
    fake.consents["ana", "email", "fundraising"] = ConsentState(ConsentStatus.revoked, at)
    fake.consents["bob", "email", "news"] = ConsentState(ConsentStatus.granted, at)
    return fake


def build(messages: FakeMessages, mailer: FakeMailer) -> tuple[MessagingService, FakeOutbox]:
    outbox = FakeOutbox()
    settings = MessagingSettings()
    svc = MessagingService(settings, FakeStore(), mailer, messages=messages, outbox=outbox)
    return svc, outbox


def counted(status: str) -> float:
    value = REGISTRY.get_sample_value(
        "tribune_messages_total", {"channel": "email", "status": status}
    )
    return value or 0.0


async def send(svc: MessagingService, identity=PARIS, contact_id="ana", purpose="news", **kw):
    args = {"channel": Channel.email, "subject": "Hello", "text": "Body"} | kw
    return await svc.send(identity, contact_id=contact_id, purpose=purpose, **args)


async def test_allowed_message_is_mailed_logged_and_announced(messages):
    mailer = FakeMailer()
    svc, outbox = build(messages, mailer)
    before = counted("sent")

    doc = await send(svc)

    assert doc["status"] == "sent"
    assert len(mailer.sent) == 1
    received = on_the_wire(mailer.sent[0])
    assert received["To"].addresses[0].addr_spec == "ana@example.org"
    assert received["X-Tribune-Message-Id"] == doc["_id"]
    assert messages.log[doc["_id"]]["status"] == MessageStatus.sent
    [envelope] = outbox.envelopes
    event = decode(envelope)
    assert isinstance(event, MessageSentV1)
    assert event.message_id == doc["_id"]
    assert envelope.federation_path == "/root/paris/"
    assert counted("sent") == before + 1


@pytest.mark.parametrize(
    ("contact_id", "purpose", "reason"),
    [
        ("ana", "campaigns", "no email consent for purpose 'campaigns'"),
        ("ana", "fundraising", "email consent for purpose 'fundraising' was revoked"),
        ("bob", "news", "contact has no email address"),
    ],
)
async def test_refused_message_reaches_no_one_and_changes_nothing(
    messages, contact_id, purpose, reason
):
    mailer = FakeMailer()
    svc, outbox = build(messages, mailer)
    before = counted("refused")

    with pytest.raises(Refused) as exc:
        await send(svc, contact_id=contact_id, purpose=purpose)

    assert exc.value.message == reason
    assert mailer.sent == []
    assert messages.log == {}
    assert outbox.envelopes == []
    assert counted("refused") == before + 1


async def test_provider_failure_is_logged_announced_and_answered_502(messages):
    svc, outbox = build(messages, FakeMailer(fail_with="SMTP server answered 451 try later"))
    before = counted("failed")

    with pytest.raises(DeliveryFailed) as exc:
        await send(svc)

    assert exc.value.status_code == 502
    body = exc.value.body()
    assert body["detail"] == "SMTP server answered 451 try later"
    logged = messages.log[body["message_id"]]
    assert logged["status"] == "failed"
    assert logged["failure_reason"] == "SMTP server answered 451 try later"
    event = decode(outbox.envelopes[0])
    assert isinstance(event, MessageFailedV1)
    assert event.reason == "SMTP server answered 451 try later"
    assert counted("failed") == before + 1


async def test_contact_of_another_federation_is_not_found(messages):
    mailer = FakeMailer()
    svc, outbox = build(messages, mailer)
    with pytest.raises(NotFound):
        await send(svc, identity=LYON)
    assert mailer.sent == [] and outbox.envelopes == []


async def test_sms_is_refused_as_unsupported_before_anything_else(messages):
    mailer = FakeMailer()
    svc, _ = build(messages, mailer)
    with pytest.raises(InvalidField) as exc:
        await send(svc, channel=Channel.sms, contact_id="nobody")
    assert exc.value.field == "channel"
    assert mailer.sent == []


# ---------------------------------------------------------------- beyond a purpose's consent


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
    messages.consents["ana", "email", "tracking"] = ConsentState(
        ConsentStatus.granted, datetime(2026, 1, 1, tzinfo=UTC)
    )
    second = await send(svc)
    assert second["per_person_tracking"] is True
    assert messages.log[second["_id"]]["per_person_tracking"] is True


async def test_tracking_is_refused_as_a_message_purpose(messages):
    mailer = FakeMailer()
    svc, _ = build(messages, mailer)
    with pytest.raises(InvalidField):
        await send(svc, purpose="tracking")
    assert mailer.sent == []
