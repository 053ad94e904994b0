"""What messaging does with consent's decisions, over the real store and a real SMTP
server: the double opt-in email (transactional, never to a suppressed or erased person),
the suppression list, the tracking consent, and unsubscribe links consent can verify."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from consent.settings import ConsentSettings
from fastapi.testclient import TestClient
from messaging.handlers import (
    confirmation_handlers,
    consent_handlers,
    contact_handlers,
    suppression_handlers,
)
from messaging.mailer import FailoverMailer
from messaging.main import create_app
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from support import deliver, identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ConsentConfirmationRequestedV1,
    ConsentGrantedV1,
    ContactCreatedV1,
    ContactState,
    EventContract,
    SuppressionAddedV1,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Awaiting, Subscriptions, apply_steps
from tribune_shared.suppression import email_hash
from tribune_shared.tokens import UnsubscribeTokens

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CONFIRM_URL = "https://tribune.example.org/api/v1/public/consents/confirm?token=abc.def"


def envelope(event: EventContract, producer: str = "consent") -> Envelope:
    return new_envelope(event, producer=producer, federation_id="paris", federation_path=PARIS)


def contact(contact_id: str, address: str | None = "ana.martin@example.org") -> Envelope:
    state = ContactState(given_name="Ana", family_name="Martin", email=address)
    return envelope(
        ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=state), "contacts"
    )


def granted(contact_id: str, purpose: str = "news") -> Envelope:
    return envelope(
        ConsentGrantedV1(
            contact_id=contact_id,
            channel=Channel.email,
            purpose=purpose,
            source="web_form",
            granted_at=T0,
        )
    )


def confirmation(contact_id: str) -> Envelope:
    return envelope(
        ConsentConfirmationRequestedV1(
            request_id=f"req-{contact_id}",
            contact_id=contact_id,
            channel=Channel.email,
            purpose="news",
            confirm_url=CONFIRM_URL,
            expires_at=T0 + timedelta(days=7),
        )
    )


def suppressed(address: str, settings: MessagingSettings) -> Envelope:
    hashed = email_hash(address, settings.suppression_salt)
    return envelope(
        SuppressionAddedV1(address_hash=hashed, kind="email", reason="objection", suppressed_at=T0)
    )


def handle(settings: MessagingSettings, *envelopes: Envelope, batch: bool = False) -> None:
    """Apply events with messaging's handlers, each in its own transaction, or (``batch``,
    events of one type) all of them in one, as the consumer applies a partition batch; the
    worker's pooled mailer."""

    async def run():
        store = Store(settings)
        messages = MessagingStore(store)
        mail = FailoverMailer.from_settings(settings)
        service = MessagingService(settings, store, mail, messages=messages)
        subscriptions = (
            Subscriptions("messaging")
            .add(contact_handlers(messages))
            .add(consent_handlers(messages))
            .add(suppression_handlers(messages))
            .add(confirmation_handlers(service))
        )
        try:
            if batch:
                async with store.transaction() as session:
                    steps = subscriptions.steps(envelopes[0].type)
                    await apply_steps(steps, list(envelopes), session)
            else:
                await deliver(store, subscriptions, *envelopes)
        finally:
            await mail.close()
            await store.close()

    asyncio.run(run())


def outbox_types(settings) -> list[str]:
    async def run():
        store = Store(settings)
        try:
            return [d["topic"] for d in await store[OUTBOX].find({}).sort("seq").to_list()]
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture
def api(isolated_env, smtp_server, monkeypatch):
    sink, port = smtp_server
    monkeypatch.setenv("MESSAGING_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MESSAGING_SMTP_PORT", str(port))
    monkeypatch.setenv("MESSAGING_MAIL_FROM", "Parti Exemple <news@parti.example.org>")
    settings = MessagingSettings()
    sink.take()
    with TestClient(create_app(settings)) as client:
        yield client, settings, sink


def headers(settings):
    identity = make_identity(PARIS, Role.campaign_manager)
    return identity_headers(identity, settings.identity_secret)


def send(client, settings, contact_id="ana"):
    body = {
        "contact_id": contact_id,
        "channel": "email",
        "purpose": "news",
        "subject": "Réunion publique",
        "text": "Jeudi à 19h.",
    }
    return client.post("/api/v1/messages", json=body, headers=headers(settings))


def reachability(client, settings, contact_id="ana") -> dict:
    r = client.get(
        f"/api/v1/messages/reachability/{contact_id}",
        params={"purpose": "news"},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- double opt-in email


def test_the_confirmation_email_is_sent_once_without_marketing_consent(api):
    client, settings, sink = api
    request = confirmation("ana")
    handle(settings, contact("ana"), request)

    [(_, mail)] = sink.take()
    assert mail["To"].addresses[0].addr_spec == "ana.martin@example.org"
    assert mail["Subject"] == settings.confirmation_subject
    assert CONFIRM_URL in mail.get_content() and "news" in mail.get_content()
    assert "List-Unsubscribe" not in mail  # transactional, asked for by the person
    [logged] = client.get(
        "/api/v1/messages", params={"contact_id": "ana"}, headers=headers(settings)
    ).json()["items"]
    assert logged["status"] == "sent" and logged["transactional"] is True
    assert logged["message_id"] == mail["X-Tribune-Message-Id"]
    assert outbox_types(settings) == ["message-sent"]

    handle(settings, request)  # redelivered (a crash before the commit, a replay)
    assert sink.take() == []
    assert outbox_types(settings) == ["message-sent"]


def test_no_confirmation_email_to_a_suppressed_or_erased_person(api):
    _, settings, sink = api
    handle(settings, contact("ana"), suppressed("Ana.Martin@example.org", settings))
    handle(settings, confirmation("ana"))
    assert sink.take() == []

    async def erase():
        store = Store(settings)
        await store["contacts"].replace_one(
            {"_id": "gus"}, {"erased": True, "version": 2**62}, upsert=True
        )
        await store.close()

    asyncio.run(erase())
    handle(settings, confirmation("gus"))
    assert sink.take() == []
    assert outbox_types(settings) == []


def test_a_refused_confirmation_is_logged_as_failed_and_retried(api):
    client, settings, sink = api
    handle(settings, contact("gus", "gone@example.org"))
    with pytest.raises(Exception, match="mailbox unavailable"):
        handle(settings, confirmation("gus"))
    [logged] = client.get(
        "/api/v1/messages", params={"contact_id": "gus"}, headers=headers(settings)
    ).json()["items"]
    assert logged["status"] == "failed" and "550" in logged["failure_reason"]
    assert sink.take() == [] and outbox_types(settings) == []


def test_a_confirmation_for_a_contact_not_projected_yet_awaits_it(api):
    """contact-created comes on another topic: the consumer holds the event until it has
    (subscriptions.Awaiting), instead of parking it after a few quick retries."""
    _, settings, sink = api
    with pytest.raises(Awaiting):
        handle(settings, confirmation("not-yet"))
    assert sink.take() == []


def messages_logged(settings) -> dict[str, str]:
    """contact id -> status of messaging's message log."""

    async def run():
        store = Store(settings)
        try:
            return {d["contact_id"]: d["status"] async for d in store["messages"].find({})}
        finally:
            await store.close()

    return asyncio.run(run())


def test_a_batch_of_confirmations_is_sent_together_and_once(api):
    """A viral petition's confirmations come by the hundred: a partition batch is sent
    together, each email once, whatever is redelivered."""
    _, settings, sink = api
    people = {f"p{i}": f"person{i}@example.org" for i in range(12)}
    handle(settings, *(contact(c, address) for c, address in people.items()))
    requests = [confirmation(c) for c in people]
    handle(settings, *requests[:5], batch=True)
    handle(settings, *requests, batch=True)  # the first five redelivered with the rest

    mails = sink.take()
    assert sorted(m["To"].addresses[0].addr_spec for _, m in mails) == sorted(people.values())
    assert set(messages_logged(settings).values()) == {"sent"}
    assert outbox_types(settings) == ["message-sent"] * 12


def test_a_batch_waits_whole_for_a_person_not_projected_yet(api):
    """Nothing of the batch goes while one of its people is unknown: the consumer splits
    it and holds that event alone (the others are then sent once, not twice)."""
    _, settings, sink = api
    handle(settings, contact("ana"))
    with pytest.raises(Awaiting):
        handle(settings, confirmation("ana"), confirmation("not-yet"), batch=True)
    assert sink.take() == [] and messages_logged(settings) == {}


def test_a_failed_email_in_a_batch_does_not_resend_the_others(api):
    """The sink refuses gone@: that confirmation is logged failed and raised (the consumer
    retries it), while the two that went are committed first: the retry of the batch
    sends them nothing more."""
    _, settings, sink = api
    handle(
        settings,
        contact("ana", "ana@example.org"),
        contact("gus", "gone@example.org"),
        contact("bob", "bob@example.org"),
    )
    batch = [confirmation("ana"), confirmation("gus"), confirmation("bob")]
    with pytest.raises(Exception, match="mailbox unavailable"):
        handle(settings, *batch, batch=True)
    assert sorted(m["To"].addresses[0].addr_spec for _, m in sink.take()) == [
        "ana@example.org",
        "bob@example.org",
    ]
    assert messages_logged(settings) == {"ana": "sent", "gus": "failed", "bob": "sent"}
    assert outbox_types(settings) == ["message-sent", "message-sent"]

    with pytest.raises(Exception, match="mailbox unavailable"):
        handle(settings, *batch, batch=True)  # the consumer's retry
    assert sink.take() == []
    assert outbox_types(settings) == ["message-sent", "message-sent"]


# ---------------------------------------------------------------- suppression list


def test_a_suppressed_address_is_never_sent_anything(api):
    client, settings, sink = api
    handle(settings, contact("ana"), granted("ana"))
    assert reachability(client, settings)["reachable"] is True

    handle(settings, suppressed("ANA.MARTIN@example.org ", settings))
    view = reachability(client, settings)
    assert view["reachable"] is False and "suppression list" in view["reason"]
    r = send(client, settings)
    assert r.status_code == 409, r.text
    assert r.json()["rule"] == "suppressed"
    assert sink.take() == []
    handle(settings, suppressed("ana.martin@example.org", settings))  # idempotent
    assert send(client, settings).status_code == 409


# ---------------------------------------------------------------- tracking consent


def test_per_person_tracking_is_recorded_only_with_the_tracking_consent(api):
    client, settings, sink = api
    handle(settings, contact("ana"), granted("ana"))
    assert reachability(client, settings)["per_person_tracking"] is False
    first = send(client, settings).json()
    assert first["per_person_tracking"] is False

    handle(settings, granted("ana", purpose=settings.tracking_purpose))
    assert reachability(client, settings)["per_person_tracking"] is True
    second = send(client, settings).json()
    assert second["per_person_tracking"] is True
    listed = client.get(
        "/api/v1/messages", params={"contact_id": "ana"}, headers=headers(settings)
    ).json()["items"]
    assert [m["per_person_tracking"] for m in listed] == [True, False]  # newest first
    assert len(sink.take()) == 2

    r = client.post(
        "/api/v1/messages",
        json={
            "contact_id": "ana",
            "channel": "email",
            "purpose": settings.tracking_purpose,
            "subject": "x",
            "text": "y",
        },
        headers=headers(settings),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "purpose"


# ---------------------------------------------------------------- unsubscribe links


def test_the_unsubscribe_link_of_every_email_points_at_consent_and_consent_verifies_it(api):
    client, settings, sink = api
    assert settings.unsubscribe_base_url.endswith("/api/v1/public/consents/unsubscribe")
    handle(settings, contact("ana"), granted("ana"))
    assert send(client, settings).status_code == 201
    [(_, mail)] = sink.take()
    link = mail["List-Unsubscribe"].strip()[1:-1]
    assert urlsplit(link).path == "/api/v1/public/consents/unsubscribe"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = parse_qs(urlsplit(link).query)["token"][0]
    # consent holds the same secret (TRIBUNE_UNSUBSCRIBE_SECRET) and reads the link
    consent_settings = ConsentSettings()
    assert consent_settings.unsubscribe_secret == settings.unsubscribe_secret
    assert UnsubscribeTokens(consent_settings.unsubscribe_secret).verify(token) == ("ana", "news")
