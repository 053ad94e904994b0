"""Payments over the real store: a treasurer's manual entries, remittance slips of cheques,
refunds and chargebacks (concurrent ones: one wins; the standing they take back), and
recurring schedules whose missed dues start the grace period."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memberships.main import create_app
from memberships.payments.domain import AlreadyReversed
from memberships.payments.refunds import RefundService
from memberships.payments.schedules import Schedules
from memberships.payments.store import INDEXES as PAYMENT_INDEXES
from memberships.payments.store import REFUNDS, SLIPS
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES, MEMBERSHIPS, PAYMENTS, SCHEDULES, membership_from_doc
from pypdf import PdfReader
from support import deliver, identity_headers, make_identity, run_with_store, seed_federations
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
DONOR = {"natural_person": True, "nationality": "FR", "resides_in_france": True}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(isolated_env) -> MembershipsSettings:
    return MembershipsSettings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        seed_federations(settings, "/root/", PARIS, LYON)
        yield c


def seed_contact(settings, contact_id: str, federation_path: str = PARIS) -> None:
    async def work(store: Store) -> None:
        event = ContactCreatedV1(
            contact_id=contact_id, contact_version=1, contact=ContactState(given_name="Ada")
        )
        envelope = new_envelope(
            event,
            producer="contacts",
            federation_id=federation_path.rstrip("/").rsplit("/", 1)[-1],
            federation_path=federation_path,
        )
        await deliver(store, ContactDirectory(store).handlers(), envelope)

    run_with_store(settings, work)


def find(settings, collection: str, query: dict[str, Any] | None = None) -> list[dict]:
    async def work(store: Store) -> list[dict]:
        return await store[collection].find(query or {}).sort("_id", 1).to_list()

    return run_with_store(settings, work)


def events(settings, *types: str) -> list[dict[str, Any]]:
    docs = sorted(find(settings, OUTBOX), key=lambda d: d["seq"])
    return [d["envelope"] for d in docs if not types or d["envelope"]["type"] in types]


def as_(settings, role: Role = Role.treasurer, path: str = PARIS, user: str = "t-1") -> dict:
    return identity_headers(make_identity(path, role, user_id=user), settings.identity_secret)


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def cheque(contact_id: str, number: str, **changes: Any) -> dict[str, Any]:
    body = {
        "contact_id": contact_id,
        "amount_cents": 3000,
        "method": "cheque",
        "purpose": "dues",
        "plan": "rolling-year",
        "donor": DONOR,
        "cheque": {"number": number, "bank": "Crédit Mutuel", "drawer": "Ada Lovelace"},
    }
    body.update(changes)
    return body


def enter(client, settings, body: dict, headers: dict | None = None, **who: Any):
    return client.post(
        "/api/v1/payments/manual",
        json=body,
        headers={**as_(settings, **who), **(headers if headers is not None else key())},
    )


def membership(settings, contact_id: str) -> dict[str, Any]:
    [doc] = find(settings, MEMBERSHIPS, {"contact_id": contact_id})
    return doc


# ---------------------------------------------------------------- manual entries


def test_a_treasurer_enters_a_cheque_and_the_person_is_up_to_date(settings, client):
    seed_contact(settings, "c-ada")
    response = enter(client, settings, cheque("c-ada", "0000001"))
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["status"] == "recorded" and result["membership_status"] == "active"

    [payment] = find(settings, PAYMENTS)
    assert payment["provider"] == "manual" and payment["entered_by"] == "t-1"
    assert payment["details"] == {
        "cheque_number": "0000001",
        "bank": "Crédit Mutuel",
        "drawer": "Ada Lovelace",
    }
    assert payment["status"] == "accepted"
    assert [e["type"] for e in events(settings, "payment-received", "membership-activated")] == [
        "payment-received",
        "membership-activated",
    ]
    standing = client.get(
        "/api/v1/memberships", params={"contact_id": "c-ada"}, headers=as_(settings)
    ).json()["items"]
    assert [m["in_good_standing"] for m in standing] == [True]


def test_a_double_click_records_one_payment(settings, client):
    seed_contact(settings, "c-bob")
    same = key()
    first = enter(client, settings, cheque("c-bob", "0000002"), same)
    again = enter(client, settings, cheque("c-bob", "0000002"), same)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["payment_id"] == first.json()["payment_id"]
    assert len(find(settings, PAYMENTS)) == 1
    # the same key for another payment is a client bug, not a second payment
    other = enter(client, settings, cheque("c-bob", "0000003", amount_cents=4000), same)
    assert other.status_code == 409, other.text
    # another user's identical key is another entry
    theirs = enter(client, settings, cheque("c-bob", "0000004"), same, user="t-2")
    assert theirs.status_code == 201, theirs.text


def test_concurrent_double_clicks_record_one_payment(settings, client):
    seed_contact(settings, "c-cat")
    same = key()

    async def clicks():
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/api/v1/payments/manual",
                        json=cheque("c-cat", "0000005"),
                        headers={**as_(settings), **same},
                    )
                    for _ in range(4)
                )
            )

    answers = client.portal.call(clicks)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["payment_id"] for a in answers}) == 1
    assert len(find(settings, PAYMENTS)) == 1


def test_entries_that_break_a_rule_write_nothing(settings, client):
    seed_contact(settings, "c-dan")
    seed_contact(settings, "c-lyon", LYON)
    cases = [
        # cash above 150 EUR (a legal rule: 409 or 422 on method, with the reason)
        (cheque("c-dan", "x", method="cash", cheque=None, amount_cents=15_001), {409, 422}),
        (cheque("c-dan", "0000006", paid_on=(date.today() + timedelta(days=2)).isoformat()), {422}),
        (cheque("c-dan", "0000006", plan="no-such-plan"), {422}),
        (cheque("c-dan", "0000006", schedule_id="nope"), {422}),
        (cheque("c-lyon", "0000006"), {404}),  # another federation's contact
        (cheque("c-nobody", "0000006"), {404}),
    ]
    for body, expected in cases:
        answer = enter(client, settings, body)
        assert answer.status_code in expected, (body, answer.text)
        assert answer.json()["detail"], answer.text
    assert find(settings, PAYMENTS) == [] and find(settings, MEMBERSHIPS) == []
    assert events(settings) == []
    secretary = enter(client, settings, cheque("c-dan", "0000006"), role=Role.secretary)
    assert secretary.status_code == 403


def test_the_same_cheque_cannot_be_entered_twice(settings, client):
    seed_contact(settings, "c-eve")
    assert enter(client, settings, cheque("c-eve", "0000007")).status_code == 201
    again = enter(client, settings, cheque("c-eve", "0000007"))
    assert again.status_code == 409, again.text
    assert len(find(settings, PAYMENTS)) == 1


# ---------------------------------------------------------------- lists


def test_the_treasurer_lists_and_filters_the_payments_of_their_subtree(settings, client):
    for c in ("c-l1", "c-l2"):
        seed_contact(settings, c)
    seed_contact(settings, "c-l3", LYON)
    enter(client, settings, cheque("c-l1", "0000010"))
    enter(client, settings, cheque("c-l2", "0000011"))
    enter(
        client,
        settings,
        cheque("c-l2", "x", method="transfer", cheque=None, transfer={"reference": "VIR-1"}),
    )
    enter(client, settings, cheque("c-l3", "0000012"), path=LYON)

    def listing(**params: Any) -> dict:
        answer = client.get("/api/v1/payments", params=params, headers=as_(settings))
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert len(listing()["items"]) == 3  # Lyon's is not in Paris's subtree
    assert {p["method"] for p in listing(method="transfer")["items"]} == {"transfer"}
    assert len(listing(unremitted=True)["items"]) == 2
    assert [p["contact_id"] for p in listing(contact_id="c-l1")["items"]] == ["c-l1"]
    first = listing(limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = listing(limit=2, cursor=first["next_cursor"])
    seen = [p["payment_id"] for p in first["items"] + rest["items"]]
    assert len(seen) == len(set(seen)) == 3 and rest["next_cursor"] is None
    outside = client.get("/api/v1/payments", params={"contact_id": "c-l3"}, headers=as_(settings))
    assert outside.status_code == 404


# ---------------------------------------------------------------- remittance slips


def test_cheques_go_on_one_numbered_slip_only(settings, client):
    seed_contact(settings, "c-s1")
    seed_contact(settings, "c-s2")
    enter(client, settings, cheque("c-s1", "0000020", amount_cents=3000))
    enter(client, settings, cheque("c-s2", "0000021", amount_cents=4500))
    enter(
        client,
        settings,
        cheque("c-s2", "x", method="transfer", cheque=None, transfer={"reference": "VIR-2"}),
    )
    made = client.post(
        "/api/v1/payments/slips", json={"bank": "Banque Postale"}, headers=as_(settings)
    )
    assert made.status_code == 201, made.text
    slip = made.json()
    assert (slip["number"], slip["count"], slip["total_cents"]) == (1, 2, 7500)
    assert slip["reference"] == "paris-00001"
    assert [c["cheque_number"] for c in slip["cheques"]] == ["0000020", "0000021"]

    # nothing left to remit: a second slip is refused, the cheques stay on the first
    again = client.post("/api/v1/payments/slips", json={"bank": "B"}, headers=as_(settings))
    assert again.status_code == 409, again.text
    assert {p["slip_id"] for p in find(settings, PAYMENTS, {"method": "cheque"})} == {
        slip["slip_id"]
    }

    enter(client, settings, cheque("c-s1", "0000022", amount_cents=1000))
    second = client.post("/api/v1/payments/slips", json={"bank": "B"}, headers=as_(settings))
    assert second.json()["number"] == 2

    listed = client.get("/api/v1/payments/slips", headers=as_(settings)).json()["items"]
    assert [s["number"] for s in listed] == [2, 1]
    csv_answer = client.get(f"/api/v1/payments/slips/{slip['slip_id']}/csv", headers=as_(settings))
    assert csv_answer.status_code == 200
    assert csv_answer.headers["content-type"].startswith("text/csv")
    assert "0000021" in csv_answer.text and "Ada Lovelace" in csv_answer.text
    pdf = client.get(f"/api/v1/payments/slips/{slip['slip_id']}/pdf", headers=as_(settings))
    assert pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "paris-00001" in text and "75,00 EUR" in text
    lyon = as_(settings, path=LYON)
    assert client.get(f"/api/v1/payments/slips/{slip['slip_id']}", headers=lyon).status_code == 404


def test_concurrent_slips_share_no_cheque_and_no_number(settings, client):
    for i in range(6):
        seed_contact(settings, f"c-cs{i}")
        enter(client, settings, cheque(f"c-cs{i}", f"00001{i:02d}"))

    async def slips():
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(
                *(
                    http.post("/api/v1/payments/slips", json={"bank": "B"}, headers=as_(settings))
                    for _ in range(3)
                )
            )

    answers = client.portal.call(slips)
    made = [a.json() for a in answers if a.status_code == 201]
    assert all(a.status_code in (201, 409) for a in answers)
    assert sorted(s["number"] for s in made) == list(range(1, len(made) + 1))
    cheques = [c["payment_id"] for s in made for c in s["cheques"]]
    assert len(cheques) == len(set(cheques)) == 6
    assert len(find(settings, SLIPS)) == len(made)


# ---------------------------------------------------------------- refunds and chargebacks


def test_a_refund_takes_back_the_period_and_twice_is_refused(settings, client):
    seed_contact(settings, "c-r1")
    first = enter(client, settings, cheque("c-r1", "0000030")).json()
    second = enter(client, settings, cheque("c-r1", "0000031")).json()
    assert date.fromisoformat(second["ends_on"]) > date.fromisoformat(first["ends_on"])

    refund = client.post(
        f"/api/v1/payments/{second['payment_id']}/refund",
        json={"kind": "refund", "reason": "paid twice"},
        headers=as_(settings),
    )
    assert refund.status_code == 200, refund.text
    assert refund.json()["payment_status"] == "refunded"
    assert refund.json()["ends_on"] == first["ends_on"]  # back to before that payment
    assert membership(settings, "c-r1")["ends_on"] == first["ends_on"]

    read = client.get(f"/api/v1/payments/{second['payment_id']}", headers=as_(settings)).json()
    assert read["status"] == "refunded"
    assert read["reversal"]["reason"] == "paid twice" and read["reversal"]["by"] == "t-1"
    [refunded] = events(settings, "payment-refunded")
    assert refunded["data"]["payment_id"] == second["payment_id"]
    assert refunded["data"]["kind"] == "refund" and refunded["data"]["amount_cents"] == 3000

    twice = client.post(
        f"/api/v1/payments/{second['payment_id']}/refund",
        json={"kind": "chargeback", "reason": "again"},
        headers=as_(settings),
    )
    assert twice.status_code == 409, twice.text
    assert len(find(settings, REFUNDS)) == 1

    # the last paid period goes too: nothing paid is left, the membership is cancelled
    last = client.post(
        f"/api/v1/payments/{first['payment_id']}/refund",
        json={"kind": "chargeback", "reason": "cheque bounced"},
        headers=as_(settings),
    )
    assert last.json()["membership_status"] == "cancelled"
    assert membership(settings, "c-r1")["status"] == "cancelled"
    assert [e["data"]["membership_id"] for e in events(settings, "membership-cancelled")] == [
        first["membership_id"]
    ]
    lyon = as_(settings, path=LYON)
    elsewhere = client.post(
        f"/api/v1/payments/{first['payment_id']}/refund",
        json={"kind": "refund", "reason": "x"},
        headers=lyon,
    )
    assert elsewhere.status_code == 404


def test_concurrent_reversals_of_one_payment_one_wins(settings, client):
    seed_contact(settings, "c-r2")
    body = cheque("c-r2", "0000032")
    paid = enter(client, settings, body).json()
    [payment] = find(settings, PAYMENTS)

    async def race() -> list[Any]:
        store = Store(settings)
        await store.ensure_indexes([*INDEXES, *PAYMENT_INDEXES])
        try:
            refunds = RefundService(settings, store)
            at = datetime.now(UTC)

            def reverse(reference: str, kind: str):
                return refunds.reverse(
                    provider="manual",
                    provider_payment_id=payment["provider_payment_id"],
                    kind=kind,  # type: ignore[arg-type]
                    amount_cents=3000,
                    reason="race",
                    at=at,
                    reference=reference,
                )

            return await asyncio.gather(
                *(reverse(f"re_{i}", "refund" if i % 2 else "chargeback") for i in range(4)),
                reverse("re_same", "refund"),
                reverse("re_same", "refund"),
                return_exceptions=True,
            )
        finally:
            await store.close()

    outcomes = asyncio.run(race())
    reversed_ = [o for o in outcomes if not isinstance(o, BaseException) and o.status == "reversed"]
    refused = [o for o in outcomes if isinstance(o, AlreadyReversed)]
    others = [o for o in outcomes if o not in reversed_ and o not in refused]
    assert len(reversed_) == 1, outcomes
    assert all(getattr(o, "status", None) == "duplicate" for o in others), outcomes
    assert len(find(settings, REFUNDS)) == 1
    assert len(events(settings, "payment-refunded")) == 1
    assert len(events(settings, "membership-cancelled")) == 1
    assert membership(settings, "c-r2")["status"] == "cancelled"
    assert paid["membership_id"] == membership(settings, "c-r2")["_id"]


def test_a_provider_reversal_is_applied_once_per_reference(settings, client):
    seed_contact(settings, "c-r3")
    enter(client, settings, cheque("c-r3", "0000033"))
    [payment] = find(settings, PAYMENTS)

    async def twice():
        store = Store(settings)
        try:
            refunds = RefundService(settings, store)
            call = dict(
                provider="manual",
                provider_payment_id=payment["provider_payment_id"],
                kind="chargeback",
                amount_cents=3000,
                reason="dispute lost",
                at=datetime.now(UTC),
                reference="dp_1",
            )
            return [await refunds.reverse(**call), await refunds.reverse(**call)]  # type: ignore[arg-type]
        finally:
            await store.close()

    first, again = asyncio.run(twice())
    assert (first.status, again.status) == ("reversed", "duplicate")
    assert again.refund_id == first.refund_id and first.payment_status == "charged_back"
    assert find(settings, PAYMENTS)[0]["status"] == "charged_back"
    assert len(events(settings, "payment-refunded")) == 1


# ---------------------------------------------------------------- recurring schedules


def test_payments_advance_a_schedule_and_a_missed_one_starts_grace(settings, client):
    seed_contact(settings, "c-sc")
    today = datetime.now(settings.zone).date()
    made = client.post(
        "/api/v1/payments/schedules",
        json={
            "contact_id": "c-sc",
            "amount_cents": 3000,
            "purpose": "dues",
            "plan": "rolling-year",
            "interval": "monthly",
            "next_due_on": today.isoformat(),
            "method": "cheque",
        },
        headers=as_(settings),
    )
    assert made.status_code == 201, made.text
    schedule = made.json()
    duplicate = client.post(
        "/api/v1/payments/schedules",
        json={
            "contact_id": "c-sc",
            "amount_cents": 1000,
            "purpose": "dues",
            "interval": "yearly",
            "next_due_on": today.isoformat(),
            "method": "cash",
        },
        headers=as_(settings),
    )
    assert duplicate.status_code == 409, duplicate.text

    paid = enter(client, settings, cheque("c-sc", "0000040", schedule_id=schedule["schedule_id"]))
    assert paid.status_code == 201, paid.text
    advanced = client.get(
        f"/api/v1/payments/schedules/{schedule['schedule_id']}", headers=as_(settings)
    ).json()
    next_due = date.fromisoformat(advanced["next_due_on"])
    assert next_due > today and advanced["payments"] == 1
    ends_before = date.fromisoformat(membership(settings, "c-sc")["ends_on"])
    assert ends_before > next_due  # a rolling year covers the next monthly due

    # The next due date passes, and the tolerance after it, without payment.
    later = datetime.combine(
        next_due + timedelta(days=settings.schedule_tolerance_days + 1),
        datetime.min.time(),
        settings.zone,
    ).timestamp()

    async def check() -> int:
        store = Store(settings)
        try:
            schedules = Schedules(settings, store, clock=lambda: later)
            # several workers at once: each due date is missed once
            counts = await asyncio.gather(*(schedules.check_missed() for _ in range(3)))
            return sum(counts)
        finally:
            await store.close()

    assert asyncio.run(check()) == 1
    [doc] = find(settings, SCHEDULES)
    assert [m["due_on"] for m in doc["missed"]] == [next_due.isoformat()]
    moved = membership(settings, "c-sc")
    assert moved["status"] == "grace"
    assert moved["ends_on"] == (next_due - timedelta(days=1)).isoformat()
    m = membership_from_doc(moved)
    day = next_due + timedelta(days=settings.schedule_tolerance_days + 1)
    assert m.status_on(day).value == "grace" and m.in_good_standing(day)
    [grace] = events(settings, "membership-grace-started")
    assert grace["data"]["ends_on"] == moved["ends_on"]
    assert grace["data"]["membership_id"] == moved["_id"]

    # cancel: no more checks; 409 to cancel again
    cancel = client.post(
        f"/api/v1/payments/schedules/{schedule['schedule_id']}/cancel",
        json={"reason": "moved away"},
        headers=as_(settings),
    )
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    again = client.post(
        f"/api/v1/payments/schedules/{schedule['schedule_id']}/cancel", headers=as_(settings)
    )
    assert again.status_code == 409


def test_a_paused_schedule_misses_nothing_and_resumes_from_today(settings, client):
    seed_contact(settings, "c-sp")
    today = datetime.now(settings.zone).date()
    schedule = client.post(
        "/api/v1/payments/schedules",
        json={
            "contact_id": "c-sp",
            "amount_cents": 500,
            "purpose": "donation",
            "interval": "monthly",
            "next_due_on": today.isoformat(),
            "method": "debit",
            "provider": "stripe",
        },
        headers=as_(settings),
    ).json()
    sid = schedule["schedule_id"]
    paused = client.post(f"/api/v1/payments/schedules/{sid}/pause", headers=as_(settings))
    assert paused.json()["status"] == "paused"
    later = (datetime.now(UTC) + timedelta(days=70)).timestamp()

    async def check() -> int:
        store = Store(settings)
        try:
            return await Schedules(settings, store, clock=lambda: later).check_missed()
        finally:
            await store.close()

    assert asyncio.run(check()) == 0
    resumed = client.post(f"/api/v1/payments/schedules/{sid}/resume", headers=as_(settings))
    assert resumed.json()["status"] == "active"
    assert date.fromisoformat(resumed.json()["next_due_on"]) >= today
    assert (
        client.post(f"/api/v1/payments/schedules/{sid}/resume", headers=as_(settings)).status_code
        == 409
    )


# ---------------------------------------------------------------- erasure


def test_erasure_drops_the_drawer_name_and_the_schedules_and_keeps_the_payment(settings, client):
    from memberships.privacy import MembershipsPrivacyStore

    seed_contact(settings, "c-er")
    enter(client, settings, cheque("c-er", "0000050", purpose="donation", plan=None))
    made = client.post(
        "/api/v1/payments/schedules",
        json={
            "contact_id": "c-er",
            "amount_cents": 500,
            "purpose": "donation",
            "interval": "monthly",
            "next_due_on": "2099-01-01",
            "method": "debit",
        },
        headers=as_(settings),
    )
    assert made.status_code == 201, made.text

    async def erase(store: Store) -> None:
        async with store.transaction() as session:
            await MembershipsPrivacyStore(store).erase("c-er", "pseudonym-x", session)

    run_with_store(settings, erase)
    [payment] = find(settings, PAYMENTS)
    assert payment["contact_id"] == "pseudonym-x"
    assert payment["details"] == {"cheque_number": "0000050", "bank": "Crédit Mutuel"}
    assert find(settings, SCHEDULES) == []
