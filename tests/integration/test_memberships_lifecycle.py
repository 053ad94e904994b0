"""The membership lifecycle over the real store: several sweepers at once move each
membership to grace and to lapsed once, with one event per transition; renewal reminders
are requested once per period and offset, and messaging emails one only to a person who
consented to the membership purpose; cancel, the roll and the counts through the API."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memberships.lifecycle.service import LifecycleService
from memberships.main import create_app
from memberships.payments.notice import PaymentNotice
from memberships.people.handlers import people_handlers
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import MEMBERSHIPS
from messaging.handlers import consent_handlers, contact_handlers
from messaging.mailer import SmtpMailer
from messaging.renewals.handlers import renewal_handlers
from messaging.service import MessagingService
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from support import deliver, index_scan, run_with_store, seed_federations, signed_headers
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ConsentGrantedV1,
    ContactCreatedV1,
    ContactState,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
SWEEPERS = 4


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    # small batches: the sweepers interleave and conflict, as several workers would
    monkeypatch.setenv("MEMBERSHIPS_SWEEP_BATCH_SIZE", "3")
    s = MembershipsSettings()
    seed_federations(s, "/root/", PARIS, LYON)
    return s


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def seed_contacts(settings, ids: list[str], path: str = PARIS, family_name: str = "") -> None:
    """The contacts as memberships' worker projects them (directory and people)."""

    async def work(store: Store) -> None:
        fid = path.rstrip("/").rsplit("/", 1)[-1]
        handlers = (
            Subscriptions("memberships")
            .add(ContactDirectory(store).handlers())
            .add(people_handlers(store), also=True)
        )
        for cid in ids:
            state = ContactState(given_name="Ada", family_name=family_name or f"Name-{cid}")
            event = ContactCreatedV1(contact_id=cid, contact_version=1, contact=state)
            envelope = new_envelope(
                event, producer="contacts", federation_id=fid, federation_path=path
            )
            await deliver(store, handlers, envelope)

    run_with_store(settings, work)


def pay(settings, contact_id: str, paid_on: date, plan: str = "rolling-year") -> str:
    """Dues through the one recording path; the membership id."""

    async def work(store: Store) -> str:
        notice = PaymentNotice(
            provider="stripe",
            provider_payment_id=f"pi_{uuid.uuid4().hex}",
            contact_id=contact_id,
            amount_cents=3000,
            currency="EUR",
            method="card",
            purpose="dues",
            paid_at=min(datetime.combine(paid_on, time(12), tzinfo=UTC), datetime.now(UTC)),
            plan=plan,
        )
        outcome = await MembershipsService(settings, store).record_payment(notice)
        assert outcome.membership_id is not None
        return outcome.membership_id

    return run_with_store(settings, work)


def sweep_concurrently(settings, day: date, sweepers: int = SWEEPERS) -> None:
    async def run() -> None:
        stores = [Store(settings) for _ in range(sweepers)]
        try:
            await asyncio.gather(*(LifecycleService(settings, s).sweep(day) for s in stores))
        finally:
            for s in stores:
                await s.close()

    asyncio.run(run())


def outbox(settings, topic: str) -> list[dict[str, Any]]:
    async def work(store: Store) -> list[dict[str, Any]]:
        rows = await store[OUTBOX].find({"topic": topic}).sort("seq").to_list()
        return [r["envelope"] for r in rows]

    return run_with_store(settings, work)


def memberships(settings) -> dict[str, dict[str, Any]]:
    async def work(store: Store) -> dict[str, dict[str, Any]]:
        return {d["_id"]: d async for d in store[MEMBERSHIPS].find({})}

    return run_with_store(settings, work)


def per_membership(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["data"]["membership_id"] for e in events)


# ---------------------------------------------------------------- the sweep


def test_concurrent_sweepers_record_each_transition_and_event_once(settings):
    p0 = date(2024, 1, 15)  # rolling year: ends 2025-01-13, grace until 2025-02-12
    ids = [f"c{i}" for i in range(10)]
    seed_contacts(settings, ids)
    members = {cid: pay(settings, cid, p0) for cid in ids}
    renewed = pay(settings, "c9", date(2025, 1, 10))  # renewed before the end: stays active
    assert renewed == members["c9"]

    sweep_concurrently(settings, date(2025, 1, 20))
    docs = memberships(settings)
    assert Counter(d["status"] for d in docs.values()) == {"grace": 9, "active": 1}
    grace = outbox(settings, "membership-grace-started")
    assert per_membership(grace) == {members[c]: 1 for c in ids[:9]}
    assert grace[0]["data"]["grace_ends_on"] == "2025-02-12"
    assert outbox(settings, "membership-lapsed") == []

    sweep_concurrently(settings, date(2025, 1, 21))  # nothing new: nothing twice
    assert len(outbox(settings, "membership-grace-started")) == 9

    sweep_concurrently(settings, date(2025, 2, 13))
    docs = memberships(settings)
    assert Counter(d["status"] for d in docs.values()) == {"lapsed": 9, "active": 1}
    lapsed = outbox(settings, "membership-lapsed")
    assert per_membership(lapsed) == {members[c]: 1 for c in ids[:9]}
    assert {e["data"]["lapsed_on"] for e in lapsed} == {"2025-02-13"}
    for cid in ids[:9]:
        assert [h["status"] for h in docs[members[cid]]["history"]][-2:] == ["grace", "lapsed"]
    assert len(outbox(settings, "membership-grace-started")) == 9


def test_a_sweep_after_a_long_outage_records_grace_then_lapse(settings):
    seed_contacts(settings, ["late"])
    mid = pay(settings, "late", date(2024, 1, 15))
    sweep_concurrently(settings, date(2025, 6, 1))
    assert memberships(settings)[mid]["status"] == "lapsed"
    assert per_membership(outbox(settings, "membership-grace-started")) == {mid: 1}
    assert per_membership(outbox(settings, "membership-lapsed")) == {mid: 1}


def test_dues_after_the_sweep_lapsed_a_membership_start_a_new_one(settings):
    seed_contacts(settings, ["back"])
    old = pay(settings, "back", date(2024, 1, 15))
    sweep_concurrently(settings, date(2025, 6, 1))
    new = pay(settings, "back", date(2025, 6, 2))
    assert new != old
    # the payment path saw it lapsed already: no second membership-lapsed
    assert per_membership(outbox(settings, "membership-lapsed")) == {old: 1}


# ---------------------------------------------------------------- renewal reminders


def test_renewal_reminders_are_requested_once_per_offset(settings):
    seed_contacts(settings, ["r1", "r2", "fresh"])
    r1 = pay(settings, "r1", date(2024, 1, 15))  # ends 2025-01-13
    r2 = pay(settings, "r2", date(2024, 1, 30))  # ends 2025-01-28
    fresh = pay(settings, "fresh", date(2024, 12, 20), plan="annual")  # ends 2024-12-31

    sweep_concurrently(settings, date(2024, 12, 20))
    requested = outbox(settings, "membership-renewal-requested")
    # r1: 24 days left (30-day reminder); r2: 39 days left (none yet); fresh joined today
    # with 11 days left: not asked to renew at once
    assert per_membership(requested) == {r1: 1}
    assert requested[0]["data"]["days_left"] == 24

    sweep_concurrently(settings, date(2024, 12, 21))
    assert len(outbox(settings, "membership-renewal-requested")) == 1

    sweep_concurrently(settings, date(2024, 12, 29))  # fresh: 2 days left (7-day reminder)
    sweep_concurrently(settings, date(2025, 1, 7))  # r1: 6 days; r2: 21 days
    sweep_concurrently(settings, date(2025, 1, 8))
    requested = outbox(settings, "membership-renewal-requested")
    assert per_membership(requested) == {r1: 2, r2: 1, fresh: 1}
    assert sorted(e["data"]["days_left"] for e in requested if e["key"] == r1) == [6, 24]


def test_messaging_emails_a_reminder_only_with_the_membership_consent(
    settings, smtp_server, monkeypatch
):
    sink, port = smtp_server
    seed_contacts(settings, ["yes", "no"])
    yes = pay(settings, "yes", date(2024, 1, 15))
    pay(settings, "no", date(2024, 1, 15))
    sweep_concurrently(settings, date(2025, 1, 6))  # 7 days left for both
    requested = [
        Envelope.model_validate(e) for e in outbox(settings, "membership-renewal-requested")
    ]
    assert len(requested) == 2

    monkeypatch.setenv("MESSAGING_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MESSAGING_SMTP_PORT", str(port))
    messaging = MessagingSettings()
    sink.take()

    def people(cid: str) -> Envelope:
        state = ContactState(given_name="Ada", family_name=cid, email=f"{cid}@example.org")
        return new_envelope(
            ContactCreatedV1(contact_id=cid, contact_version=1, contact=state),
            producer="contacts",
            federation_id="paris",
            federation_path=PARIS,
        )

    granted = new_envelope(
        ConsentGrantedV1(
            contact_id="yes",
            channel=Channel.email,
            purpose=messaging.renewal_purpose,
            source="membership form",
            granted_at=datetime(2024, 1, 15, tzinfo=UTC),
        ),
        producer="consent",
        federation_id="paris",
        federation_path=PARIS,
    )
    # "no" consented to another purpose only
    other = new_envelope(
        ConsentGrantedV1(
            contact_id="no",
            channel=Channel.email,
            purpose="news",
            source="web form",
            granted_at=datetime(2024, 1, 15, tzinfo=UTC),
        ),
        producer="consent",
        federation_id="paris",
        federation_path=PARIS,
    )

    async def handle(*envelopes: Envelope) -> None:
        store = Store(messaging)
        messages = MessagingStore(store)
        service = MessagingService(messaging, store, SmtpMailer(messaging), messages=messages)
        subscriptions = (
            Subscriptions("messaging")
            .add(contact_handlers(messages))
            .add(consent_handlers(messages))
            .add(renewal_handlers(service))
        )
        try:
            await deliver(store, subscriptions, *envelopes)
        finally:
            await store.close()

    asyncio.run(handle(people("yes"), people("no"), granted, other, *requested))
    [(_, mail)] = sink.take()
    assert mail["To"].addresses[0].addr_spec == "yes@example.org"
    assert mail["Subject"] == "Your membership ends on 2025-01-13"
    assert "in 7 days" in mail.get_content()
    assert "List-Unsubscribe" in mail  # consent-based, not transactional

    asyncio.run(handle(*requested))  # redelivered: nothing twice
    assert sink.take() == []

    async def logged(store: Store) -> list[dict[str, Any]]:
        return await store["messages"].find({"membership_id": {"$exists": True}}).to_list()

    [message] = run_with_store(messaging, logged)
    assert message["membership_id"] == yes and message["status"] == "sent"


# ---------------------------------------------------------------- cancel


def test_cancel_through_the_api(settings, client):
    seed_contacts(settings, ["cx"])
    seed_contacts(settings, ["ly"], LYON)
    today = datetime.now(UTC).date()
    mid = pay(settings, "cx", today)
    lyon = pay(settings, "ly", today)
    secretary = signed_headers(settings, PARIS, Role.secretary)
    url = f"/api/v1/memberships/{mid}/cancel"

    assert (
        client.post(
            url, json={"reason": "x"}, headers=signed_headers(settings, PARIS, Role.viewer)
        ).status_code
        == 403
    )
    blank = client.post(url, json={"reason": "   "}, headers=secretary)
    assert blank.status_code == 422 and blank.json()["detail"][0]["field"] == "reason"
    elsewhere = client.post(
        f"/api/v1/memberships/{lyon}/cancel", json={"reason": "x"}, headers=secretary
    )
    assert elsewhere.status_code == 404
    assert (
        client.post(
            "/api/v1/memberships/nope/cancel", json={"reason": "x"}, headers=secretary
        ).status_code
        == 404
    )

    done = client.post(url, json={"reason": "member request"}, headers=secretary)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "cancelled" and done.json()["reason"] == "member request"
    again = client.post(url, json={"reason": "twice"}, headers=secretary)
    assert again.status_code == 409
    [event] = outbox(settings, "membership-cancelled")
    assert event["data"] == {
        "membership_id": mid,
        "contact_id": "cx",
        "cancelled_on": done.json()["cancelled_on"],
        "reason": "member request",
    }
    assert memberships(settings)[lyon]["status"] == "active"


def test_a_membership_lapsed_by_time_cannot_be_cancelled(settings, client):
    seed_contacts(settings, ["old"])
    mid = pay(settings, "old", date(2024, 1, 15))  # lapsed since 2025-02-13 (not swept)
    r = client.post(
        f"/api/v1/memberships/{mid}/cancel",
        json={"reason": "x"},
        headers=signed_headers(settings, PARIS, Role.treasurer),
    )
    assert r.status_code == 409
    assert memberships(settings)[mid]["status"] == "active"  # nothing written
    assert outbox(settings, "membership-cancelled") == []


# ---------------------------------------------------------------- roll and counts


def test_the_roll_and_the_counts_at_a_day(settings, client):
    ids = ["a1", "a2", "g1", "l1"]
    seed_contacts(settings, ids)
    seed_contacts(settings, ["a3"], family_name='=HYPERLINK("http://x")')
    seed_contacts(settings, ["ly"], LYON)
    d = date(2025, 3, 1)
    for cid in ("a1", "a2", "a3"):
        pay(settings, cid, date(2024, 6, 1))  # active on d
    pay(settings, "g1", date(2024, 2, 15))  # ends 2025-02-13: in grace on d
    lapsed = pay(settings, "l1", date(2023, 6, 1))  # lapsed long before d
    pay(settings, "ly", date(2024, 6, 1))  # Lyon: never on Paris's roll
    sweep_concurrently(settings, date(2025, 3, 1))
    assert memberships(settings)[lapsed]["status"] == "lapsed"
    secretary = signed_headers(settings, PARIS, Role.secretary)

    first = client.get(
        "/api/v1/memberships/roll",
        params={"on": d.isoformat(), "limit": 3},
        headers=secretary,
    )
    assert first.status_code == 200, first.text
    page = first.json()
    assert [i["contact_id"] for i in page["items"]] == ["a1", "a2", "a3"]
    assert page["items"][0]["family_name"] == "Name-a1"
    rest = client.get(
        "/api/v1/memberships/roll",
        params={"on": d.isoformat(), "limit": 3, "after": page["next_after"]},
        headers=secretary,
    ).json()
    assert [(i["contact_id"], i["state"]) for i in rest["items"]] == [("g1", "grace")]
    assert rest["next_after"] is None

    # a day in the past: the lapsed member was up to date then
    past = client.get(
        "/api/v1/memberships/roll", params={"on": "2024-01-10"}, headers=secretary
    ).json()
    assert [(i["contact_id"], i["state"]) for i in past["items"]] == [("l1", "active")]

    counts = client.get(
        "/api/v1/memberships/counts", params={"on": d.isoformat()}, headers=secretary
    ).json()
    assert {k: counts[k] for k in ("in_good_standing", "active", "grace", "lapsed")} == {
        "in_good_standing": 4,
        "active": 3,
        "grace": 1,
        "lapsed": 1,
    }
    national = client.get(
        "/api/v1/memberships/counts",
        params={"on": d.isoformat()},
        headers=signed_headers(settings, "/root/", Role.admin),
    ).json()
    assert national["active"] == 4  # Lyon's member too

    csv_response = client.get(
        "/api/v1/memberships/roll.csv", params={"on": d.isoformat()}, headers=secretary
    )
    assert csv_response.status_code == 200
    assert csv_response.headers["content-type"].startswith("text/csv")
    text = csv_response.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["contact_id"] for r in rows] == ["a1", "a2", "a3", "g1"]
    assert rows[0]["given_name"] == "Ada" and rows[0]["family_name"] == "Name-a1"
    assert rows[2]["family_name"] == '\'=HYPERLINK("http://x")'  # shown as text
    assert rows[3]["state"] == "grace" and rows[3]["ends_on"] == "2025-02-13"

    lyon_fed = client.get(
        "/api/v1/memberships/roll", params={"federation_id": "lyon"}, headers=secretary
    )
    assert lyon_fed.status_code == 404
    viewer = client.get(
        "/api/v1/memberships/roll", headers=signed_headers(settings, PARIS, Role.viewer)
    )
    assert viewer.status_code == 403
    too_many = client.get("/api/v1/memberships/roll", params={"limit": 100_000}, headers=secretary)
    assert too_many.status_code == 422


def test_the_sweeps_transition_queries_read_a_status_and_date_index(client, settings):
    """The sweep's transitions were one `$or`, which the local store answers by scanning
    every membership, once per batch and inside a transaction (every other transaction of
    the store waited for it). Each of its queries now reads a (status, date) index."""
    from memberships.lifecycle.store import transition_queries

    today = date(2026, 6, 1)

    async def plans(store: Store) -> list[dict[str, Any]]:
        await store[MEMBERSHIPS].insert_one(
            {"_id": "m", "status": "active", "ends_on": "2026-05-01", "grace_ends_on": "x"}
        )
        return [await store[MEMBERSHIPS].find(q).explain() for q in transition_queries(today)]

    found = run_with_store(settings, plans)
    assert len(found) == 2
    for explained in found:
        scan = index_scan(explained)
        assert next(iter(scan["keyPattern"])) == "status", scan
