"""Delivery feedback on the real store: signed SMS receipts, an ESP's email events and DSNs
reach the message log, the campaign's counters and the outbox once, whatever the retries;
and consent acts on the events (a hard bounce suppresses that address, a complaint revokes
the purpose). No Kafka: events are handed to the handlers as the consumer would."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from consent.handlers import contact_handlers, feedback_handlers
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import SUPPRESSION, ConsentStore
from fastapi.testclient import TestClient
from messaging.campaigns.store import CAMPAIGNS, CampaignStore
from messaging.feedback.domain import Feedback, FeedbackKind
from messaging.feedback.service import FeedbackService
from messaging.feedback.store import EARLY_RECEIPTS, provider_ids_query
from messaging.feedback.store import INDEXES as FEEDBACK_INDEXES
from messaging.main import create_app
from messaging.settings import MessagingSettings
from messaging.store import MESSAGES
from support import deliver, run_with_store
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ContactCreatedV1,
    ContactState,
    MessageBouncedV1,
    MessageComplainedV1,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.settings import ServiceSettings
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.suppression import email_hash, phone_hash
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
EMAIL_SECRET = "email-events-secret-0123456789abcdef0123"
SMS_SECRET = "sms-receipt-secret-0123456789abcdef01234"
EVENTS = "/api/v1/webhooks/email-events"
DSN = "/api/v1/webhooks/email-dsn"
SENT_AT = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


@pytest.fixture
def api(isolated_env, monkeypatch):
    monkeypatch.setenv("MESSAGING_EMAIL_EVENTS_SECRET", EMAIL_SECRET)
    monkeypatch.setenv("MESSAGING_SMS_OVH_RECEIPT_SECRET", SMS_SECRET)
    monkeypatch.setenv("MESSAGING_MAIL_FROM", "Parti Exemple <news@parti.example.org>")
    settings = MessagingSettings()
    with TestClient(create_app(settings)) as client:
        seed(settings)
        yield client, settings


def message(mid: str, channel: str = "email", **fields: Any) -> dict[str, Any]:
    """A campaign message as the dispatcher leaves it once handed over."""
    return {
        "_id": mid,
        "campaign_id": "c1",
        "contact_id": f"contact-{mid}",
        "channel": channel,
        "purpose": "news",
        "federation_id": "paris",
        "federation_path": PARIS,
        "status": "sent",
        "sent_at": SENT_AT,
        "transactional": False,
        **fields,
    }


def seed(settings: MessagingSettings) -> None:
    salt = settings.suppression_salt

    async def work(store):
        await store[CAMPAIGNS].insert_one(
            {
                "_id": "c1",
                "federation_id": "paris",
                "federation_path": PARIS,
                "status": "sending",
                "stats": {"sent": 4},
            }
        )
        await store[MESSAGES].insert_many(
            [
                message("m1", address_hash=email_hash("ana@example.org", salt)),
                message("m2", address_hash=email_hash("bob@example.org", salt)),
                message("m3", "sms", provider="ovh", provider_message_id="123456789"),
                message("m4", status="queued", sent_at=None),  # never handed over
            ]
        )

    run_with_store(settings, work)


def post(client, path: str, body: bytes, secret: str = EMAIL_SECRET, **headers: str):
    return client.post(path, content=body, headers={**signature_headers(secret, body), **headers})


def docs(settings: ServiceSettings, collection: str) -> dict[str, dict[str, Any]]:
    async def work(store):
        return {d["_id"]: d async for d in store[collection].find({})}

    return run_with_store(settings, work)


def outbox(settings: ServiceSettings) -> list[Envelope]:
    async def work(store):
        rows = await store[OUTBOX].find({}).sort("seq").to_list()
        return [Envelope.model_validate(r["envelope"]) for r in rows]

    return run_with_store(settings, work)


def stats(settings: MessagingSettings) -> dict[str, Any]:
    """Campaign c1's statistics as messaging reads them (its shards added to the 4 sent
    the campaign document itself counted, as campaigns did before the shards)."""

    async def work(store):
        return (await CampaignStore(store).by_ids(["c1"]))["c1"]["stats"]

    return run_with_store(settings, work)


# ---------------------------------------------------------------- email events


def test_email_events_reach_the_log_the_counters_and_the_outbox_once(api):
    client, settings = api
    body = json.dumps(
        [
            {"type": "delivered", "message_id": "m1", "at": "2026-03-14T09:01:00Z"},
            {
                "type": "bounced",
                "message_id": "<m2@parti.example.org>",
                "bounce_type": "hard",
                "reason": "550 5.1.1 user unknown",
                "at": "2026-03-14T09:02:00Z",
            },
            {"type": "complained", "message_id": "m1", "at": "2026-03-14T10:00:00Z"},
            {"type": "delivered", "message_id": "not-ours", "at": "2026-03-14T09:01:00Z"},
            {"type": "delivered", "message_id": "m4", "at": "2026-03-14T09:01:00Z"},
        ]
    ).encode()

    r = post(client, EVENTS, body)

    assert r.status_code == 200, r.text
    assert r.json() == {
        "received": 5,
        "applied": 3,
        "duplicates": 0,
        "unknown": 2,
        "early": 0,
        "ignored": 0,
    }
    messages = docs(settings, MESSAGES)
    assert messages["m1"]["delivered_at"] == datetime(2026, 3, 14, 9, 1, tzinfo=UTC)
    assert messages["m1"]["complained_at"] == datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
    assert messages["m2"]["bounce_type"] == "hard"
    assert messages["m2"]["bounce_reason"] == "550 5.1.1 user unknown"
    assert messages["m1"]["status"] == messages["m2"]["status"] == "sent"  # caps count them
    assert "delivered_at" not in messages["m4"]
    assert stats(settings) == {
        "sent": 4,
        "delivered": 1,
        "bounced": 1,
        "bounced_by": {"hard": 1},
        "complained": 1,
    }
    events = outbox(settings)
    assert [(e.type, e.key) for e in events] == [
        ("message-delivered", "m1"),
        ("message-bounced", "m2"),
        ("message-complained", "m1"),
    ]
    bounced, complained = events[1].data, events[2].data
    assert bounced["address_hash"] == email_hash("bob@example.org", settings.suppression_salt)
    assert (bounced["bounce_type"], bounced["campaign_id"]) == ("hard", "c1")
    assert (complained["purpose"], complained["contact_id"]) == ("news", "contact-m1")
    assert {e.federation_path for e in events} == {PARIS}

    # the provider retries (a new signature, the same events): nothing changes
    again = post(client, EVENTS, body)

    assert again.status_code == 200
    assert (again.json()["applied"], again.json()["duplicates"]) == (0, 3)
    assert stats(settings)["delivered"] == 1 and stats(settings)["complained"] == 1
    assert len(outbox(settings)) == 3


def test_a_soft_bounce_is_counted_and_a_later_hard_one_makes_it_final(api):
    client, settings = api

    def bounce(kind: str) -> bytes:
        event = {"type": "bounced", "message_id": "m1", "bounce_type": kind, "at": "2026-03-14"}
        return json.dumps([{**event, "at": SENT_AT.isoformat()}]).encode()

    assert post(client, EVENTS, bounce("soft")).json()["applied"] == 1
    assert post(client, EVENTS, bounce("hard")).json()["applied"] == 1
    assert post(client, EVENTS, bounce("soft")).json()["duplicates"] == 1

    assert stats(settings)["bounced"] == 1
    assert stats(settings)["bounced_by"] == {"soft": 0, "hard": 1}
    kinds = [(e.type, e.data["bounce_type"], e.data["address_hash"]) for e in outbox(settings)]
    hashed = email_hash("ana@example.org", settings.suppression_salt)
    assert kinds == [("message-bounced", "soft", None), ("message-bounced", "hard", hashed)]


def test_one_call_with_several_events_of_one_message_applies_them_in_order(api):
    """A soft then a hard bounce of m1 and a delivery of m2 in one call: m1 ends hard
    bounced (the second change's guard needs the first one's result), m2 delivered."""
    client, settings = api
    at = SENT_AT.isoformat()
    body = json.dumps(
        [
            {"type": "bounced", "message_id": "m1", "bounce_type": "soft", "at": at},
            {"type": "delivered", "message_id": "m2", "at": at},
            {"type": "bounced", "message_id": "m1", "bounce_type": "hard", "at": at},
        ]
    ).encode()
    assert post(client, EVENTS, body).json()["applied"] == 3
    stored = docs(settings, MESSAGES)
    assert stored["m1"]["bounce_type"] == "hard"
    assert stored["m2"]["delivered_at"] is not None
    counted = stats(settings)
    assert counted["bounced"] == 1 and counted["delivered"] == 1
    assert counted["bounced_by"].get("soft", 0) == 0 and counted["bounced_by"]["hard"] == 1


def test_unsigned_forged_or_malformed_events_are_refused_and_change_nothing(api):
    client, settings = api
    body = json.dumps(
        [{"type": "delivered", "message_id": "m1", "at": "2026-03-14T09:01:00Z"}]
    ).encode()

    assert client.post(EVENTS, content=body).status_code == 401
    assert post(client, EVENTS, body, secret="x" * 40).status_code == 401
    bad = json.dumps(
        [
            {"type": "delivered", "message_id": "m1", "at": "2026-03-14T09:01:00Z"},
            {"type": "bounced", "message_id": "m2", "at": "2026-03-14T09:01:00Z"},
        ]
    ).encode()
    r = post(client, EVENTS, bad)
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {"field": "body[1].bounce_type", "reason": "required for a bounce: hard or soft"}
    ]

    assert "delivered_at" not in docs(settings, MESSAGES)["m1"]  # the valid one neither
    assert outbox(settings) == []
    assert stats(settings) == {"sent": 4}


# ---------------------------------------------------------------- DSN


def dsn(message_id: str, status: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@parti.example.org\r\n"
        "Subject: Undelivered Mail\r\nDate: Sat, 14 Mar 2026 10:31:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} mailbox unavailable\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{message_id}@parti.example.org>\r\nX-Tribune-Message-Id: {message_id}\r\n"
        "--b--\r\n"
    ).encode()


def test_a_dsn_posted_as_a_mail_records_a_hard_bounce_once(api):
    client, settings = api
    raw = dsn("m2", "5.1.1")
    content = {"Content-Type": "message/rfc822"}

    first = post(client, DSN, raw, **content)
    second = post(client, DSN, raw, **content)

    assert first.status_code == 200, first.text
    assert (first.json()["applied"], second.json()["duplicates"]) == (1, 1)
    assert docs(settings, MESSAGES)["m2"]["bounce_type"] == "hard"
    assert [e.type for e in outbox(settings)] == ["message-bounced"]
    refused = post(client, DSN, b"Subject: not a report\r\n\r\nhello", **content)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "body"


# ---------------------------------------------------------------- SMS receipts


def receipt(provider_id: str, dlr: int = 1) -> bytes:
    return json.dumps(
        {"id": provider_id, "receiver": "+33612345678", "dlr": dlr, "date": "2026-03-14T09:00:05Z"}
    ).encode()


def test_a_signed_sms_receipt_finds_its_message_by_the_provider_id(api):
    client, settings = api
    url = "/api/v1/webhooks/sms-receipts/ovh"

    first = post(client, url, receipt("123456789"), SMS_SECRET)
    again = post(client, url, receipt("123456789"), SMS_SECRET)
    pending = post(client, url, receipt("123456789", dlr=4), SMS_SECRET)

    assert (first.json()["applied"], again.json()["duplicates"]) == (1, 1)
    assert pending.json()["ignored"] == 1  # still on its way: nothing to record
    assert docs(settings, MESSAGES)["m3"]["delivered_at"] == datetime(
        2026, 3, 14, 9, 0, 5, tzinfo=UTC
    )
    assert stats(settings)["delivered"] == 1
    [event] = outbox(settings)
    assert (event.type, event.data["channel"]) == ("message-delivered", "sms")
    assert post(client, url, receipt("123456789"), "y" * 40).status_code == 401


def test_the_receipts_lookup_by_provider_id_reads_an_index_not_every_message(api):
    """Each SMS receipt looks its message up by the provider's id: a scan of every message
    per receipt held a 10,000-recipient campaign to 3 sends per second."""
    _client, settings = api

    async def plan(store):
        explained = await store[MESSAGES].find(provider_ids_query(["123456789"])).explain()
        return explained["queryPlanner"]["winningPlan"]

    winning = run_with_store(settings, plan)
    assert winning["stage"] != "COLLSCAN", winning
    assert winning["inputStage"]["stage"] == "IXSCAN"
    assert winning["inputStage"]["keyPattern"] == {"provider_message_id": 1}


def test_a_retired_index_left_by_an_earlier_version_is_dropped(api):
    _client, settings = api
    old = next(spec for spec in FEEDBACK_INDEXES if spec.retired)

    async def indexes(store, create_old):
        if create_old:
            await store[old.collection].create_index(list(old.keys), **old.options)
        before = {i["name"] async for i in await store[old.collection].list_indexes()}
        await store.ensure_indexes(FEEDBACK_INDEXES)
        after = {i["name"] async for i in await store[old.collection].list_indexes()}
        return before, after

    before, after = run_with_store(settings, lambda store: indexes(store, True))
    assert old.name in before and old.name not in after
    assert "provider_message_id_1" in after
    # and again, with nothing left to drop
    assert run_with_store(settings, lambda store: indexes(store, False))[1] == after


def test_concurrent_receipts_share_transactions_and_each_call_gets_its_own_answer(api):
    """A provider calls back once per SMS: 30 calls at once (one of them a retry of
    another, one naming no message of ours) are recorded in a few transactions, and each
    call answers what became of its own receipt."""
    _client, settings = api
    ids = [f"9000{i:02d}" for i in range(28)]

    async def work(store):
        await store[MESSAGES].insert_many(
            [
                message(f"s{i}", "sms", provider="ovh", provider_message_id=pid)
                for i, pid in enumerate(ids)
            ]
        )
        service = FeedbackService(settings, store)
        transactions = 0
        run_transaction = store.run_transaction

        async def counted(work, **kwargs):
            nonlocal transactions
            transactions += 1
            return await run_transaction(work, **kwargs)

        store.run_transaction = counted
        at = datetime(2026, 3, 14, 9, 0, 5, tzinfo=UTC)

        def delivered(pid: str) -> Feedback:
            return Feedback(FeedbackKind.delivered, at, provider="ovh", provider_message_id=pid)

        calls = [*ids, ids[0], "unknown-to-us"]
        results = await asyncio.gather(*(service.record([delivered(p)]) for p in calls))
        await service.close()
        return results, transactions

    results, transactions = run_with_store(settings, work)
    answers = [(r.received, r.applied, r.duplicates, r.early) for r in results]
    assert answers[:28] == [(1, 1, 0, 0)] * 28
    assert answers[28] == (1, 0, 1, 0)  # the retry: already recorded in the same batch
    assert answers[29] == (1, 0, 0, 1)  # not known yet: waits as an early receipt
    assert transactions < 10  # not one per call
    delivered_at = {d["_id"]: d.get("delivered_at") for d in docs(settings, MESSAGES).values()}
    assert all(delivered_at[f"s{i}"] is not None for i in range(28))
    assert stats(settings)["delivered"] == 28
    assert len([e for e in outbox(settings) if e.type == "message-delivered"]) == 28


def test_a_receipt_that_comes_before_its_message_s_outcome_waits_for_it(api):
    client, settings = api
    url = "/api/v1/webhooks/sms-receipts/ovh"

    early = post(client, url, receipt("555", dlr=2), SMS_SECRET)
    twice = post(client, url, receipt("555", dlr=2), SMS_SECRET)

    assert (early.json()["early"], twice.json()["early"]) == (1, 1)
    assert len(docs(settings, EARLY_RECEIPTS)) == 1  # a retry is the same entry
    assert outbox(settings) == []

    async def outcome_recorded_then_matched(store):
        # the dispatcher records the hand-off's outcome with the provider's id
        await store[MESSAGES].insert_one(
            message("m5", "sms", provider="ovh", provider_message_id="555")
        )
        return await FeedbackService(settings, store).match_early_receipts()

    assert run_with_store(settings, outcome_recorded_then_matched) == 1
    assert docs(settings, MESSAGES)["m5"]["bounce_type"] == "soft"  # undelivered SMS
    assert docs(settings, EARLY_RECEIPTS) == {}
    assert [(e.type, e.data["bounce_type"]) for e in outbox(settings)] == [
        ("message-bounced", "soft")
    ]
    assert stats(settings)["bounced"] == 1


# ---------------------------------------------------------------- consent's side


EMAIL = "ana.martin@example.org"
PHONE = "+33612345678"


def consent_world(settings: ConsentSettings, *envelopes: Envelope) -> None:
    async def work(store):
        subscriptions = (
            Subscriptions("consent")
            .add(
                contact_handlers(
                    ConsentStore(store), ContactDirectory(store), settings.suppression_salt
                )
            )
            .add(feedback_handlers(ConsentService(settings, store)))
        )
        await deliver(store, subscriptions, *envelopes)

    run_with_store(settings, work)


def from_messaging(event) -> Envelope:
    return new_envelope(event, producer="messaging", federation_id="paris", federation_path=PARIS)


def test_consent_suppresses_the_hard_bounced_address_only_and_a_complaint_revokes(isolated_env):
    settings = ConsentSettings()
    salt = settings.suppression_salt
    created = new_envelope(
        ContactCreatedV1(
            contact_id="ana",
            contact_version=1,
            contact=ContactState(given_name="Ana", email=EMAIL, phone=PHONE),
        ),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )
    common = {"contact_id": "ana", "channel": Channel.email, "campaign_id": "c1"}
    hard = from_messaging(
        MessageBouncedV1(
            message_id="m1",
            **common,
            bounce_type="hard",
            reason="550 5.1.1",
            bounced_at=SENT_AT,
            address_hash=email_hash(EMAIL, salt),
        )
    )
    soft = from_messaging(
        MessageBouncedV1(message_id="m2", **common, bounce_type="soft", bounced_at=SENT_AT)
    )
    complaint = from_messaging(
        MessageComplainedV1(message_id="m3", **common, purpose="news", complained_at=SENT_AT)
    )

    consent_world(settings, created, soft)
    assert docs(settings, SUPPRESSION) == {}  # a soft bounce suppresses nothing

    consent_world(settings, hard, hard)  # redelivered: still one entry, one event
    suppressed = docs(settings, SUPPRESSION)
    assert list(suppressed) == [email_hash(EMAIL, salt)]  # not the phone: it still works
    assert suppressed[email_hash(EMAIL, salt)]["reason"] == "bounce"
    assert phone_hash(PHONE, salt) not in suppressed
    [added] = outbox(settings)
    assert (added.type, added.data["reason"], added.data["kind"]) == (
        "suppression-added",
        "bounce",
        "email",
    )

    consent_world(settings, complaint, complaint)
    revoked = [e for e in outbox(settings) if e.type == "consent-revoked"]
    assert len(revoked) == 1
    assert (revoked[0].data["channel"], revoked[0].data["purpose"]) == ("email", "news")
    assert (revoked[0].data["source"], revoked[0].data["actor_kind"]) == ("complaint", "person")
    assert len(docs(settings, SUPPRESSION)) == 1  # an objection to one purpose suppresses nothing
