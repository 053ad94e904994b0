"""Memberships over the real store: the signed payment webhook records a payment once,
activates the membership and puts its events in the outbox; reads are scoped to the
caller's federation subtree."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from memberships.handlers import contact_merge_handlers, contact_move_handlers
from memberships.main import create_app
from memberships.privacy import erasure_handlers
from memberships.service import MembershipsService, PaymentNotice
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES, MEMBERSHIPS, PAYMENTS
from support import deliver, identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import (
    ContactCreatedV1,
    ContactMergedV1,
    ContactState,
    ContactUpdatedV1,
    ErasureRequestedV1,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_headers

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-0123456789abcdef"
PARIS = "/root/paris/"
LYON = "/root/lyon/"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", SECRET)
    return MembershipsSettings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


async def _project(settings, event, federation_path: str) -> None:
    store = Store(settings)
    try:
        envelope = new_envelope(
            event,
            producer="contacts",
            federation_id=federation_path.rstrip("/").rsplit("/", 1)[-1],
            federation_path=federation_path,
        )
        await deliver(store, ContactDirectory(store).handlers(), envelope)
    finally:
        await store.close()


def seed_contact(settings, contact_id: str, federation_path: str = PARIS, version: int = 1):
    event = ContactCreatedV1(
        contact_id=contact_id, contact_version=version, contact=ContactState(given_name="Ada")
    )
    asyncio.run(_project(settings, event, federation_path))


async def _find(settings, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    store = Store(settings)
    try:
        return await store[collection].find(query).sort("_id", 1).to_list()
    finally:
        await store.close()


def find(settings, collection: str, query: dict[str, Any] | None = None) -> list[dict]:
    return asyncio.run(_find(settings, collection, query or {}))


def outbox_events(settings) -> list[dict[str, Any]]:
    docs = find(settings, OUTBOX)
    return [d["envelope"] for d in sorted(docs, key=lambda d: d["seq"])]


def notice(contact_id: str, /, **changes: Any) -> dict[str, Any]:
    body = {
        "provider": "stripe",
        "provider_payment_id": f"pi_{contact_id}",
        "contact_id": contact_id,
        "amount_cents": 3000,
        "currency": "EUR",
        "method": "card",
        "purpose": "dues",
        "paid_at": datetime.now(UTC).isoformat(),
    }
    body.update(changes)
    return body


def post_signed(client, body: dict | bytes, *, secret=SECRET, timestamp=None, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = signature_headers(secret, raw, timestamp=timestamp)
    return client.post(
        "/api/v1/webhooks/payments",
        content=raw,
        headers={"Content-Type": "application/json", **signed, **(headers or {})},
    )


def auth(settings, path: str = "/root/", role: Role = Role.admin) -> dict[str, str]:
    return identity_headers(make_identity(path, role), settings.identity_secret)


def nothing_recorded(settings) -> bool:
    return (
        not find(settings, PAYMENTS)
        and not find(settings, OUTBOX)
        and not find(settings, MEMBERSHIPS)
    )


def paris_day(moment: str) -> date:
    return datetime.fromisoformat(moment).astimezone(ZoneInfo("Europe/Paris")).date()


# ---------------------------------------------------------------- happy path


def test_signed_dues_webhook_records_the_payment_and_activates_the_membership(settings, client):
    seed_contact(settings, "c-ada")
    body = notice("c-ada")
    response = post_signed(client, body)

    assert response.status_code == 201, response.text
    result = response.json()
    day = paris_day(body["paid_at"])
    assert result["status"] == "recorded"
    assert result["membership_status"] == "active"
    assert result["starts_on"] == day.isoformat()
    assert result["ends_on"] == date(day.year, 12, 31).isoformat()  # calendar-year plan

    [payment] = find(settings, PAYMENTS)
    assert payment["_id"] == result["payment_id"]
    assert (payment["federation_id"], payment["federation_path"]) == ("paris", PARIS)
    assert payment["membership_id"] == result["membership_id"]

    received, activated = outbox_events(settings)
    assert received["type"] == "payment-received"
    assert received["key"] == result["payment_id"]
    assert received["data"]["amount_cents"] == 3000
    assert received["data"]["purpose"] == "dues"
    assert activated["type"] == "membership-activated"
    assert activated["data"]["membership_id"] == result["membership_id"]
    assert activated["data"]["plan"] == "annual"
    assert activated["data"]["ends_on"] == result["ends_on"]
    assert activated["causation_id"] == received["event_id"]
    assert {e["federation_path"] for e in (received, activated)} == {PARIS}

    listing = client.get(
        "/api/v1/memberships", params={"contact_id": "c-ada"}, headers=auth(settings)
    )
    assert listing.status_code == 200, listing.text
    [membership] = listing.json()["items"]
    assert membership["membership_id"] == result["membership_id"]
    assert membership["status"] == "active"
    assert membership["plan"] == "annual"
    assert membership["in_good_standing"] is True

    payments = client.get(
        "/api/v1/payments", params={"contact_id": "c-ada"}, headers=auth(settings, PARIS)
    )
    assert payments.status_code == 200, payments.text
    assert [p["payment_id"] for p in payments.json()["items"]] == [result["payment_id"]]


def test_standing_is_computed_at_the_requested_day(settings, client):
    seed_contact(settings, "c-bob")
    paid_at = datetime(2025, 3, 15, 12, tzinfo=UTC)
    # Recorded as it happened then (a provider may report old payments late).
    asyncio.run(_record_at(settings, notice("c-bob", paid_at=paid_at.isoformat()), paid_at))

    def standing(day: str) -> tuple[str, bool]:
        [item] = client.get(
            "/api/v1/memberships",
            params={"contact_id": "c-bob", "on": day},
            headers=auth(settings),
        ).json()["items"]
        return item["status"], item["in_good_standing"]

    assert standing("2025-12-31") == ("active", True)
    assert standing("2026-02-01") == ("grace", True)  # 90 grace days for "annual"
    assert standing("2026-04-01") == ("lapsed", False)


async def _record_at(settings, body: dict, moment: datetime):
    store = Store(settings)
    try:
        svc = MembershipsService(settings, store, clock=lambda: moment.timestamp())
        fields = {**body, "paid_at": datetime.fromisoformat(body["paid_at"])}
        return await svc.record_payment(PaymentNotice(**fields))
    finally:
        await store.close()


def test_dues_paid_again_renew_the_same_membership(settings, client):
    seed_contact(settings, "c-cyd")
    first = post_signed(client, notice("c-cyd", provider_payment_id="pi_1")).json()
    second = post_signed(client, notice("c-cyd", provider_payment_id="pi_2"))
    assert second.status_code == 201, second.text
    renewed = second.json()
    assert renewed["membership_id"] == first["membership_id"]
    assert renewed["starts_on"] == first["starts_on"]
    ends = date.fromisoformat(first["ends_on"])
    assert renewed["ends_on"] == date(ends.year + 1, 12, 31).isoformat()
    assert len(find(settings, MEMBERSHIPS)) == 1
    assert len(find(settings, PAYMENTS)) == 2
    types = [e["type"] for e in outbox_events(settings)]
    assert types == ["payment-received", "membership-activated"] * 2


def test_a_donation_is_recorded_without_membership(settings, client):
    seed_contact(settings, "c-dan")
    donor = {"natural_person": True, "nationality": "FR"}  # a gift needs the declaration
    response = post_signed(
        client, notice("c-dan", purpose="donation", amount_cents=10_000, donor=donor)
    )
    assert response.status_code == 201, response.text
    assert response.json()["membership_id"] is None
    assert [e["type"] for e in outbox_events(settings)] == ["payment-received", "donation-received"]
    listing = client.get(
        "/api/v1/memberships", params={"contact_id": "c-dan"}, headers=auth(settings)
    )
    assert listing.json()["items"] == []


# ---------------------------------------------------------------- once, whatever the retries


def test_the_same_webhook_three_times_records_one_payment_and_one_set_of_events(settings, client):
    seed_contact(settings, "c-eve")
    body = notice("c-eve")
    raw = json.dumps(body).encode()
    first = post_signed(client, raw)
    again = post_signed(client, raw)
    # Providers re-sign retries with a new timestamp: still the same payment.
    third = post_signed(client, raw, timestamp=int(time.time()) + 1)

    assert first.status_code == 201, first.text
    for retry in (again, third):
        assert retry.status_code == 200, retry.text
        assert retry.json()["status"] == "duplicate"
        assert retry.json()["payment_id"] == first.json()["payment_id"]
        assert retry.json()["membership_id"] == first.json()["membership_id"]
    assert len(find(settings, PAYMENTS)) == 1
    assert [e["type"] for e in outbox_events(settings)] == [
        "payment-received",
        "membership-activated",
    ]
    [membership] = find(settings, MEMBERSHIPS)
    assert membership["ends_on"] == first.json()["ends_on"]  # not renewed by the retries


def test_concurrent_deliveries_of_one_payment_record_it_once(settings):
    seed_contact(settings, "c-fay")
    body = notice("c-fay")

    async def deliver_concurrently():
        store = Store(settings)
        await store.ensure_indexes(INDEXES)
        try:
            svc = MembershipsService(settings, store)
            fields = {**body, "paid_at": datetime.fromisoformat(body["paid_at"])}
            return await asyncio.gather(
                *(svc.record_payment(PaymentNotice(**fields)) for _ in range(5))
            )
        finally:
            await store.close()

    outcomes = asyncio.run(deliver_concurrently())
    assert sorted(o.status for o in outcomes) == ["duplicate"] * 4 + ["recorded"]
    assert len({o.payment_id for o in outcomes}) == 1
    assert len(find(settings, PAYMENTS)) == 1
    assert len(find(settings, MEMBERSHIPS)) == 1
    assert len(outbox_events(settings)) == 2


# ---------------------------------------------------------------- refusals: nothing recorded


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", "does not match"),
        ("secret", "does not match"),
        ("stale", "tolerance"),
        ("future", "tolerance"),
        ("unsigned", "missing"),
        ("garbled", "sha256="),
    ],
)
def test_a_bad_signature_is_refused_and_nothing_is_recorded(settings, client, tamper, reason):
    seed_contact(settings, "c-gus")
    raw = json.dumps(notice("c-gus")).encode()
    now = int(time.time())
    headers = signature_headers(SECRET, raw, timestamp=now)
    if tamper == "body":
        raw = raw.replace(b"3000", b"9000")
    elif tamper == "secret":
        headers = signature_headers("not-the-secret-0123456789", raw, timestamp=now)
    elif tamper == "stale":
        headers = signature_headers(SECRET, raw, timestamp=now - 301)
    elif tamper == "future":
        headers = signature_headers(SECRET, raw, timestamp=now + 3600)
    elif tamper == "unsigned":
        headers = {}
    elif tamper == "garbled":
        headers[SIGNATURE_HEADER] = "v1=abc"
    response = client.post(
        "/api/v1/webhooks/payments",
        content=raw,
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert reason in response.json()["detail"]
    assert nothing_recorded(settings)


def test_the_signature_is_checked_before_the_body_is_parsed(settings, client):
    response = client.post(
        "/api/v1/webhooks/payments",
        content=b"{not json",
        headers={TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: "sha256=" + "0" * 64},
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"amount_cents": -100}, "amount_cents", "greater than 0"),
        ({"amount_cents": "30"}, "amount_cents", "valid integer"),
        ({"amount_cents": 750_001}, "amount_cents", "maximum"),
        ({"currency": "EURO"}, "currency", "ISO 4217"),
        ({"method": "bitcoin"}, "method", "'card'"),
        ({"purpose": "gift"}, "purpose", "'dues'"),
        ({"paid_at": "2025-01-01T10:00:00"}, "paid_at", "timezone"),
        ({"paid_at": "2999-01-01T10:00:00Z"}, "paid_at", "future"),
        ({"plan": "lifetime"}, "plan", "unknown plan"),
        # cash above 150 EUR is a legal refusal, not a malformed body: captured money is
        # flagged for refund (tests/integration/test_memberships_donations.py)
        ({"contact_id": None}, "contact_id", "valid string"),
    ],
)
def test_a_malformed_body_is_422_with_field_and_reason(settings, client, changes, field, reason):
    seed_contact(settings, "c-hal")
    response = post_signed(client, notice("c-hal", **changes))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [d["field"] for d in detail] == [field]
    assert reason in detail[0]["reason"]
    assert nothing_recorded(settings)


def test_invalid_json_is_422_on_the_body(settings, client):
    response = post_signed(client, b'{"provider": "stripe",')
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"
    assert nothing_recorded(settings)


def test_cash_up_to_the_limit_is_recorded(settings, client):
    seed_contact(settings, "c-ian")
    response = post_signed(client, notice("c-ian", method="cash", amount_cents=15_000))
    assert response.status_code == 201, response.text


def test_an_unknown_contact_is_404_and_nothing_is_recorded(settings, client):
    response = post_signed(client, notice("c-nobody"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert nothing_recorded(settings)


def test_an_oversized_body_is_refused(settings, client):
    raw = json.dumps(notice("c-big", padding="x" * 20_000)).encode()
    assert post_signed(client, raw).status_code == 413
    assert nothing_recorded(settings)


# ---------------------------------------------------------------- reads: tenancy and input


def test_another_federations_contact_is_not_visible(settings, client):
    seed_contact(settings, "c-lyon", LYON)
    assert post_signed(client, notice("c-lyon")).status_code == 201
    paris = auth(settings, PARIS)
    for path in ("/api/v1/memberships", "/api/v1/payments"):
        response = client.get(path, params={"contact_id": "c-lyon"}, headers=paris)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"
        # the national level sees it
        national = client.get(path, params={"contact_id": "c-lyon"}, headers=auth(settings))
        assert national.status_code == 200
        assert len(national.json()["items"]) == 1


def test_unknown_contact_in_reads_is_404(settings, client):
    response = client.get(
        "/api/v1/memberships", params={"contact_id": "c-ghost"}, headers=auth(settings)
    )
    assert response.status_code == 404


def test_reads_need_an_identity(settings, client):
    assert client.get("/api/v1/memberships", params={"contact_id": "c-x"}).status_code == 401
    assert client.get("/api/v1/payments", params={"contact_id": "c-x"}).status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/memberships", {}, "contact_id"),
        ("/api/v1/memberships", {"contact_id": "a b"}, "contact_id"),
        # without contact_id, /payments is the treasurer's list of the subtree
        ("/api/v1/payments", {"contact_id": "a b"}, "contact_id"),
    ],
)
def test_reads_validate_the_query(settings, client, path, params, field):
    response = client.get(path, params=params, headers=auth(settings))
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["field"] == field
    assert detail["reason"]


def test_bad_day_for_standing_is_422(settings, client):
    response = client.get(
        "/api/v1/memberships",
        params={"contact_id": "c-x", "on": "31/12/2025"},
        headers=auth(settings),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "on"


def test_payments_are_for_finance_roles(settings, client):
    seed_contact(settings, "c-jo")
    params = {"contact_id": "c-jo"}
    viewer = client.get(
        "/api/v1/payments", params=params, headers=auth(settings, PARIS, Role.viewer)
    )
    assert viewer.status_code == 403
    treasurer = auth(settings, PARIS, Role.treasurer)
    assert client.get("/api/v1/payments", params=params, headers=treasurer).status_code == 200
    # standing is visible to every role of the federation
    standing = auth(settings, PARIS, Role.campaign_manager)
    assert client.get("/api/v1/memberships", params=params, headers=standing).status_code == 200


# ---------------------------------------------------------------- contact projection


def test_the_projection_keeps_the_newest_contact_version(settings):
    # contact-updated v2 (moved to Lyon) arrives before contact-created v1 (Paris).
    updated = ContactUpdatedV1(contact_id="c-kim", contact_version=2, contact=ContactState())
    asyncio.run(_project(settings, updated, LYON))
    seed_contact(settings, "c-kim", PARIS, version=1)
    [contact] = find(settings, "contacts", {"_id": "c-kim"})
    assert (contact["federation_path"], contact["version"]) == (LYON, 2)


def test_payment_placed_in_the_contacts_federation(settings, client):
    seed_contact(settings, "c-lea", LYON)
    assert (
        post_signed(
            client, notice("c-lea", paid_at=(datetime.now(UTC) - timedelta(days=1)).isoformat())
        ).status_code
        == 201
    )
    [payment] = find(settings, PAYMENTS)
    [membership] = find(settings, MEMBERSHIPS)
    assert payment["federation_path"] == membership["federation_path"] == LYON


# ---------------------------------------------------------------- a contact moves or merges


def contact_events(settings, *events: tuple[Any, str]) -> None:
    """Contact events through the worker's handlers (directory, then history moves,
    merges), each ``(event, federation path)``."""

    async def run() -> None:
        store = Store(settings)
        subscriptions = (
            Subscriptions("memberships")
            .add(ContactDirectory(store).handlers())
            .add(contact_move_handlers(store), also=True)
            .add(contact_merge_handlers(store))
            .add(erasure_handlers(store))
        )
        try:
            for event, path in events:
                envelope = new_envelope(
                    event,
                    producer="consent" if isinstance(event, ErasureRequestedV1) else "contacts",
                    federation_id=path.rstrip("/").rsplit("/", 1)[-1],
                    federation_path=path,
                )
                await deliver(store, subscriptions, envelope)
        finally:
            await store.close()

    asyncio.run(run())


def moved(contact_id: str, version: int, changed: list[str] | None = None) -> ContactUpdatedV1:
    return ContactUpdatedV1(
        contact_id=contact_id,
        contact_version=version,
        contact=ContactState(given_name="Ada"),
        changed_fields=["federation_id"] if changed is None else changed,
    )


def test_a_moved_contacts_payments_follow_them_into_the_new_federations_dpo_export(
    settings, client
):
    seed_contact(settings, "c-max", PARIS)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert post_signed(client, notice("c-max", paid_at=yesterday)).status_code == 201
    gift = notice(
        "c-max",
        provider_payment_id="pi_gift",
        purpose="donation",
        amount_cents=5000,
        donor={"natural_person": True, "nationality": "FR"},
    )
    assert post_signed(client, gift).status_code == 201
    lyon_dpo = auth(settings, LYON, Role.dpo)

    contact_events(settings, (moved("c-max", 2), LYON))

    export = client.get("/api/v1/memberships/privacy/c-max", headers=lyon_dpo)
    assert export.status_code == 200, export.text
    data = export.json()
    assert [p["amount_cents"] for p in data["payments"]] == [3000]
    assert [p["amount_cents"] for p in data["donations"]] == [5000]
    assert len(data["memberships"]) == 1
    payments = client.get(
        "/api/v1/payments", params={"contact_id": "c-max"}, headers=auth(settings, LYON)
    )
    assert payments.status_code == 200 and len(payments.json()["items"]) == 2
    assert {d["federation_path"] for d in find(settings, PAYMENTS)} == {LYON}
    assert {d["federation_path"] for d in find(settings, MEMBERSHIPS)} == {LYON}

    # An older event arriving late (or replayed) moves nothing back; a later edit that is
    # not a move keeps the history where the person is.
    contact_events(settings, (moved("c-max", 1), PARIS), (moved("c-max", 3, ["tags"]), LYON))
    assert {d["federation_path"] for d in find(settings, PAYMENTS)} == {LYON}
    paris_dpo = auth(settings, PARIS, Role.dpo)
    assert client.get("/api/v1/memberships/privacy/c-max", headers=paris_dpo).status_code == 404


def test_a_merge_seen_after_the_survivors_erasure_erases_the_merged_records_too(settings, client):
    from tribune_shared.events.contracts import ErasureRequestedV1

    seed_contact(settings, "c-zoe", PARIS)
    seed_contact(settings, "c-zoe-dup", PARIS)
    assert post_signed(client, notice("c-zoe-dup")).status_code == 201
    erasure = ErasureRequestedV1(request_id="r1", contact_id="c-zoe", requested_at=utcnow())
    merge = ContactMergedV1(
        merged_contact_id="c-zoe-dup",
        surviving_contact_id="c-zoe",
        contact_version=2,
        merged_by="u1",
    )
    contact_events(settings, (erasure, PARIS), (merge, PARIS))

    [payment] = find(settings, PAYMENTS)
    assert payment["contact_id"].startswith("pseudonym-")  # kept by law, linked to no one
    assert find(settings, MEMBERSHIPS, {"contact_id": {"$in": ["c-zoe", "c-zoe-dup"]}}) == []
