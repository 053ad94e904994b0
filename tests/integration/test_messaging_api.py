"""Messaging API over the real store and a real SMTP server: consent decides, the mail
arrives with its one-click unsubscribe, and the log and the event commit together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from messaging.composer import UnsubscribeTokens
from messaging.handlers import consent_handlers, contact_handlers
from messaging.main import create_app
from messaging.revocations import READ
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from support import deliver, eventually, identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.bus import EventPublisher
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactState,
    ContactUpdatedV1,
    EventContract,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
UNSUBSCRIBE_BASE = "https://tribune.example.org/api/v1/unsubscribe"
REJECTED_ADDRESS = "gone@example.org"  # refused by the test SMTP server (conftest.py)


# ---------------------------------------------------------------- seeding projections


def fed(path: str) -> str:
    return path.strip("/").rsplit("/", 1)[-1]


def envelope(event: EventContract, path: str, producer: str) -> Envelope:
    return new_envelope(event, producer=producer, federation_id=fed(path), federation_path=path)


def contact(
    contact_id: str,
    path: str = PARIS,
    *,
    email_address: str | None = "ana.martin@example.org",
    version: int = 1,
    given_name: str = "Ana",
) -> Envelope:
    state = ContactState(given_name=given_name, family_name="Martin", email=email_address)
    if version == 1:
        event: EventContract = ContactCreatedV1(
            contact_id=contact_id, contact_version=1, contact=state
        )
    else:
        event = ContactUpdatedV1(
            contact_id=contact_id, contact_version=version, contact=state, changed_fields=["email"]
        )
    return envelope(event, path, "contacts")


def grant(contact_id: str, at: datetime = T0, purpose: str = "news", path: str = PARIS):
    event = ConsentGrantedV1(
        contact_id=contact_id,
        channel=Channel.email,
        purpose=purpose,
        source="web_form",
        proof={"text_version": "v3"},
        granted_at=at,
    )
    return envelope(event, path, "consent")


def revoke(contact_id: str, at: datetime, purpose: str = "news", path: str = PARIS):
    event = ConsentRevokedV1(
        contact_id=contact_id,
        channel=Channel.email,
        purpose=purpose,
        source="unsubscribe_link",
        revoked_at=at,
    )
    return envelope(event, path, "consent")


def handle(settings: MessagingSettings, *envelopes: Envelope) -> None:
    """Run the worker's handlers over the real store, one transaction per event."""

    async def run():
        store = Store(settings)
        messages = MessagingStore(store)
        subscriptions = (
            Subscriptions("messaging")
            .add(contact_handlers(messages))
            .add(consent_handlers(messages))
        )
        try:
            await deliver(store, subscriptions, *envelopes)
        finally:
            await store.close()

    asyncio.run(run())


def outbox(settings: MessagingSettings) -> list[Envelope]:
    async def run():
        store = Store(settings)
        try:
            docs = await store[OUTBOX].find({}).sort("seq").to_list()
        finally:
            await store.close()
        return [Envelope.model_validate(d["envelope"]) for d in docs]

    return asyncio.run(run())


# ---------------------------------------------------------------- the API


@pytest.fixture
def api(isolated_env, smtp_server, monkeypatch):
    sink, port = smtp_server
    monkeypatch.setenv("MESSAGING_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MESSAGING_SMTP_PORT", str(port))
    monkeypatch.setenv("MESSAGING_SMTP_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("MESSAGING_MAIL_FROM", "Parti Exemple <news@parti.example.org>")
    monkeypatch.setenv("MESSAGING_UNSUBSCRIBE_BASE_URL", UNSUBSCRIBE_BASE)
    monkeypatch.setenv("MESSAGING_UNSUBSCRIBE_SECRET", "integration-unsubscribe-secret-42")
    settings = MessagingSettings()
    assert settings.smtp_port == port
    sink.take()  # nothing left over from another test
    with TestClient(create_app(settings)) as client:
        yield client, settings, sink


def headers(settings, path=PARIS, role=Role.campaign_manager):
    return identity_headers(make_identity(path, role), settings.identity_secret)


def message(contact_id: str = "ana", purpose: str = "news", **overrides) -> dict:
    body = {
        "contact_id": contact_id,
        "channel": "email",
        "purpose": purpose,
        "subject": "Réunion publique jeudi",
        "text": "Bonjour Ana,\nRendez-vous jeudi à 19h, salle des fêtes.",
    }
    return body | overrides


def history(client, settings, contact_id: str, path: str = PARIS):
    return client.get(
        "/api/v1/messages", params={"contact_id": contact_id}, headers=headers(settings, path)
    )


# ---------------------------------------------------------------- happy path


def test_consented_email_is_delivered_with_one_click_unsubscribe_and_announced(api):
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana"))

    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))

    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["status"] == "sent"
    assert sent["contact_id"] == "ana"
    assert sent["channel"] == "email"
    assert sent["purpose"] == "news"
    assert sent["sent_at"] is not None

    [(rcpt_tos, mail)] = sink.take()
    assert rcpt_tos == ["ana.martin@example.org"]
    assert mail["To"].addresses[0].addr_spec == "ana.martin@example.org"
    assert mail["From"].addresses[0].addr_spec == "news@parti.example.org"
    assert mail["Subject"] == "Réunion publique jeudi"
    assert mail["X-Tribune-Message-Id"] == sent["message_id"]
    assert mail["Message-ID"] == f"<{sent['message_id']}@parti.example.org>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = mail["List-Unsubscribe"].strip()
    assert link.startswith(f"<{UNSUBSCRIBE_BASE}?token=") and link.endswith(">")
    token = parse_qs(urlsplit(link[1:-1]).query)["token"][0]
    assert UnsubscribeTokens(settings.unsubscribe_secret).verify(token) == ("ana", "news")
    body = mail.get_content()
    assert "Rendez-vous jeudi à 19h" in body
    assert link[1:-1] in body  # the footer carries the same link

    [event] = outbox(settings)
    assert event.type == "message-sent"
    assert event.data["message_id"] == sent["message_id"]
    assert event.data["contact_id"] == "ana"
    assert event.federation_path == PARIS

    listed = history(client, settings, "ana")
    assert listed.status_code == 200, listed.text
    assert [(m["message_id"], m["status"]) for m in listed.json()["items"]] == [
        (sent["message_id"], "sent")
    ]


def test_a_parent_federation_may_message_its_subtree(api):
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana"))
    r = client.post("/api/v1/messages", json=message(), headers=headers(settings, "/root/"))
    assert r.status_code == 201, r.text
    assert len(sink.take()) == 1


# ---------------------------------------------------------------- refusals


def assert_nothing_happened(client, settings, sink, contact_id: str) -> None:
    assert sink.take() == []
    assert outbox(settings) == []
    assert history(client, settings, contact_id).json() == {"items": []}


def test_without_consent_nothing_is_sent(api):
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana", purpose="fundraising"))

    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))

    assert r.status_code == 409, r.text
    assert r.json()["error"] == "refused"
    assert r.json()["detail"] == "no email consent for purpose 'news'"
    assert_nothing_happened(client, settings, sink, "ana")


def test_consent_revoked_after_grant_stops_messages(api):
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana"))
    assert client.post("/api/v1/messages", json=message(), headers=headers(settings)).is_success
    sink.take()

    handle(settings, revoke("ana", T0 + timedelta(days=1)))
    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))

    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "email consent for purpose 'news' was revoked"
    assert sink.take() == []
    assert [e.type for e in outbox(settings)] == ["message-sent"]  # only the first one


def test_a_late_grant_does_not_undo_a_newer_revocation(api):
    client, settings, sink = api
    # The revocation is delivered first although the grant happened before it.
    handle(settings, revoke("ana", T0 + timedelta(hours=1)), contact("ana"), grant("ana", T0))

    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "email consent for purpose 'news' was revoked"

    handle(settings, grant("ana", T0 + timedelta(days=1)))  # a genuinely newer grant
    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))
    assert r.status_code == 201, r.text
    assert len(sink.take()) == 1


def publish(settings: MessagingSettings, producer: str, *envelopes: Envelope) -> None:
    """Publish signed events on Kafka as ``producer`` (no worker applies them here)."""

    async def run():
        publisher = EventPublisher(settings, producer=producer)
        await publisher.start()
        try:
            await publisher.publish_many(list(envelopes))
        finally:
            await publisher.stop()

    asyncio.run(run())


def reachable(client, settings, contact_id: str) -> bool:
    r = client.get(
        f"/api/v1/messages/reachability/{contact_id}",
        params={"purpose": "news"},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text
    return bool(r.json()["reachable"])


def test_a_revocation_read_from_kafka_stops_messages_before_the_view_applies_it(api):
    """The API's revocation feed (messaging.revocations): a consent-revoked on Kafka is
    honoured while messaging's own view still says granted; a forged one is not; a grant
    the view records after it wins again."""
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana"), contact("bob"), grant("bob"))
    feed = client.app.state.messaging_service.revocations  # type: ignore[attr-defined]
    eventually(feed.ready.is_set, timeout=30)
    assert reachable(client, settings, "ana") and reachable(client, settings, "bob")

    # consent-revoked is consent's to publish: from contacts it is refused
    refused = READ.labels("refused")._value.get()
    publish(settings, "contacts", revoke("bob", T0 + timedelta(hours=1)))
    publish(settings, "consent", revoke("ana", T0 + timedelta(hours=1)))
    eventually(lambda: reachable(client, settings, "ana"), lambda yes: not yes, timeout=10)
    eventually(lambda: READ.labels("refused")._value.get(), lambda n: n > refused)
    assert reachable(client, settings, "bob")
    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "email consent for purpose 'news' was revoked"
    assert sink.take() == []

    async def view() -> dict:
        store = Store(settings)
        try:
            state = await MessagingStore(store).consent("ana", Channel.email, "news")
        finally:
            await store.close()
        assert state is not None
        return {"status": state.status.value}

    assert asyncio.run(view()) == {"status": "granted"}  # the feed said it first

    handle(settings, grant("ana", T0 + timedelta(days=1)))  # granted again, later
    assert reachable(client, settings, "ana")


def test_a_late_contact_version_does_not_overwrite_a_newer_address(api):
    client, settings, sink = api
    handle(
        settings,
        contact("ana", email_address="ana.new@example.org", version=2),
        contact("ana", email_address="ana.old@example.org", version=1),  # late, must not win
        grant("ana"),
    )

    r = client.post("/api/v1/messages", json=message(), headers=headers(settings))

    assert r.status_code == 201, r.text
    [(rcpt_tos, _)] = sink.take()
    assert rcpt_tos == ["ana.new@example.org"]


def test_contact_without_email_is_refused(api):
    client, settings, sink = api
    handle(settings, contact("bob", email_address=None), grant("bob"))

    r = client.post("/api/v1/messages", json=message("bob"), headers=headers(settings))

    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "contact has no email address"
    assert_nothing_happened(client, settings, sink, "bob")


def test_contact_of_another_federation_is_not_found(api):
    client, settings, sink = api
    handle(settings, contact("leo", LYON), grant("leo", path=LYON))

    r = client.post("/api/v1/messages", json=message("leo"), headers=headers(settings, PARIS))
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"
    unknown = client.post("/api/v1/messages", json=message("nobody"), headers=headers(settings))
    assert unknown.status_code == 404
    assert unknown.json() == r.json()  # same answer: nothing leaks about other federations

    assert history(client, settings, "leo", PARIS).status_code == 404
    assert history(client, settings, "leo", LYON).json() == {"items": []}
    assert sink.take() == []
    assert outbox(settings) == []


def test_smtp_refusal_is_logged_as_failed_and_answered_502(api):
    client, settings, sink = api
    handle(settings, contact("gus", email_address=REJECTED_ADDRESS), grant("gus"))

    r = client.post("/api/v1/messages", json=message("gus"), headers=headers(settings))

    assert r.status_code == 502, r.text
    failure = r.json()
    assert failure["error"] == "delivery_failed"
    assert "550" in failure["detail"] and "mailbox unavailable" in failure["detail"]
    assert sink.take() == []
    [event] = outbox(settings)
    assert event.type == "message-failed"
    assert event.data["message_id"] == failure["message_id"]
    [logged] = history(client, settings, "gus").json()["items"]
    assert logged["status"] == "failed"
    assert logged["message_id"] == failure["message_id"]
    assert "mailbox unavailable" in logged["failure_reason"]


def test_roles_and_identity_are_checked(api):
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana"))
    viewer = headers(settings, role=Role.viewer)
    assert client.post("/api/v1/messages", json=message(), headers=viewer).status_code == 403
    assert client.post("/api/v1/messages", json=message()).status_code == 401
    assert sink.take() == []


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"channel": "sms"}, "channel", "not supported yet"),
        ({"channel": "fax"}, "channel", "Input should be"),
        ({"subject": ""}, "subject", "at least 1 character"),
        ({"subject": "x" * 201}, "subject", "at most 200 characters"),
        ({"subject": "Hi\r\nBcc: all@example.org"}, "subject", "must be a single line"),
        # line breaks beyond CR/LF: the email header refused them with a 500
        ({"subject": "Hi\u2028Bcc: all@example.org"}, "subject", "must be a single line"),
        ({"subject": "Hi\x85Bcc: all@example.org"}, "subject", "must be a single line"),
        ({"text": ""}, "text", "at least 1 character"),
        ({"text": "x" * 100_001}, "text", "at most 100000 characters"),
        ({"purpose": "news:all"}, "purpose", "should match pattern"),
        ({"contact_id": "../etc"}, "contact_id", "should match pattern"),
        ({"contact_id": None}, "contact_id", "valid string"),
        ({"unexpected": 1}, "unexpected", "Extra inputs are not permitted"),
    ],
)
def test_malformed_message_is_422_with_field_and_reason(api, change, field, reason):
    client, settings, sink = api
    handle(settings, contact("ana"), grant("ana"))

    r = client.post("/api/v1/messages", json=message() | change, headers=headers(settings))

    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_error"
    assert any(d["field"] == field and reason in d["reason"] for d in body["detail"]), body
    assert sink.take() == []
    assert outbox(settings) == []


def test_missing_fields_are_each_named(api):
    client, settings, _ = api
    r = client.post("/api/v1/messages", json={"channel": "email"}, headers=headers(settings))
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["detail"]}
    assert fields == {"contact_id", "purpose", "subject", "text"}


@pytest.mark.parametrize(
    ("params", "field"),
    [({}, "contact_id"), ({"contact_id": "ana", "limit": 0}, "limit")],
)
def test_malformed_history_query_is_422(api, params, field):
    client, settings, _ = api
    r = client.get("/api/v1/messages", params=params, headers=headers(settings))
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["detail"]] == [field]


def test_history_limit_above_the_page_size_is_422(api):
    client, settings, _ = api
    handle(settings, contact("ana"))
    too_many = settings.max_page_size + 1
    r = client.get(
        "/api/v1/messages",
        params={"contact_id": "ana", "limit": too_many},
        headers=headers(settings),
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {"field": "limit", "reason": f"must be at most {settings.max_page_size}"}
    ]


# ---------------------------------------------------------------- a contact moves or merges


def test_a_moved_contacts_messages_follow_them_into_the_new_federation(api):
    client, settings, _ = api
    handle(settings, contact("ana"), grant("ana"))
    sent = client.post("/api/v1/messages", json=message(), headers=headers(settings))
    assert sent.status_code == 201, sent.text
    state = ContactState(given_name="Ana", family_name="Martin", email="ana.martin@example.org")
    move = ContactUpdatedV1(
        contact_id="ana", contact_version=2, contact=state, changed_fields=["federation_id"]
    )
    handle(settings, envelope(move, LYON, "contacts"))

    listed = history(client, settings, "ana", LYON)
    assert listed.status_code == 200, listed.text
    assert [m["message_id"] for m in listed.json()["items"]] == [sent.json()["message_id"]]
    lyon_dpo = identity_headers(make_identity(LYON, Role.dpo), settings.identity_secret)
    export = client.get("/api/v1/messages/privacy/ana", headers=lyon_dpo)
    assert export.status_code == 200, export.text
    assert {m["federation_path"] for m in export.json()["messages"]} == {LYON}
    assert {c["federation_path"] for c in export.json()["consents"]} == {LYON}


def test_a_merge_seen_after_the_survivors_erasure_erases_the_merged_contact_too(api):
    from messaging.privacy import erasure_handlers
    from messaging.store import CONSENTS, CONTACTS, MESSAGES
    from tribune_shared.events import utcnow
    from tribune_shared.events.contracts import ContactMergedV1, ErasureRequestedV1

    client, settings, _ = api
    handle(settings, contact("ana"), contact("ana-dup", email_address="dup@example.org"))
    handle(settings, grant("ana-dup"))
    sent = client.post("/api/v1/messages", json=message("ana-dup"), headers=headers(settings))
    assert sent.status_code == 201, sent.text
    erasure = ErasureRequestedV1(request_id="r1", contact_id="ana", requested_at=utcnow())
    merge = ContactMergedV1(
        merged_contact_id="ana-dup", surviving_contact_id="ana", contact_version=2, merged_by="u"
    )

    async def run():
        store = Store(settings)
        subscriptions = (
            Subscriptions("messaging")
            .add(contact_handlers(MessagingStore(store)))
            .add(erasure_handlers(store))
        )
        try:
            await deliver(
                store,
                subscriptions,
                envelope(erasure, PARIS, "consent"),
                envelope(merge, PARIS, "contacts"),
            )
            ids = {"$in": ["ana", "ana-dup"]}
            return (
                await store[MESSAGES].count_documents({"contact_id": ids}),
                await store[CONSENTS].count_documents({"contact_id": ids}),
                await store[CONTACTS].find({"_id": ids}).sort("_id").to_list(),
            )
        finally:
            await store.close()

    messages, consents, contacts = asyncio.run(run())
    assert (messages, consents) == (0, 0)
    assert [(c["_id"], c.get("erased")) for c in contacts] == [("ana", True), ("ana-dup", True)]
    assert not any("email" in c for c in contacts)


# ---------------------------------------------------------------- totals


def test_message_totals_count_the_subtree_by_channel_and_outcome(api):
    client, settings, _sink = api
    handle(
        settings,
        contact("ana"),
        grant("ana"),
        contact("gone", email_address=REJECTED_ADDRESS),
        grant("gone"),
        contact("lea", LYON, email_address="lea@example.org"),
        grant("lea", path=LYON),
    )
    assert client.post("/api/v1/messages", json=message(), headers=headers(settings)).is_success
    client.post("/api/v1/messages", json=message("gone"), headers=headers(settings))  # fails
    r = client.post("/api/v1/messages", json=message("lea"), headers=headers(settings, LYON))
    assert r.is_success, r.text
    ana = history(client, settings, "ana").json()["items"][0]["message_id"]

    async def delivered() -> None:  # what a delivery receipt records (messaging.feedback)
        store = Store(settings)
        await store["messages"].update_one({"_id": ana}, {"$set": {"delivered_at": T0}})
        await store.close()

    asyncio.run(delivered())

    r = client.get("/api/v1/messages/totals", headers=headers(settings, PARIS, Role.viewer))

    assert r.status_code == 200, r.text
    [email] = r.json()["channels"]
    assert email["channel"] == "email"
    assert email["by_status"] == {"sent": 1, "failed": 1}  # Lyon's message is not Paris's
    assert (email["sent"], email["delivered"], email["bounced"]) == (1, 1, 0)
    assert "ana" not in r.text
    everyone = client.get("/api/v1/messages/totals", headers=headers(settings, "/root/"))
    assert everyone.json()["channels"][0]["sent"] == 2
    later = client.get(
        "/api/v1/messages/totals",
        params={"since": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
        headers=headers(settings),
    )
    assert later.json()["channels"] == []
    outside = client.get(
        "/api/v1/messages/totals", params={"federation_id": "lyon"}, headers=headers(settings)
    )
    assert outside.status_code == 404
    treasurer = client.get(
        "/api/v1/messages/totals", headers=headers(settings, PARIS, Role.treasurer)
    )
    assert treasurer.status_code == 403
