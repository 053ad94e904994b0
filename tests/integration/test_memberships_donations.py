"""Donations within the law over the real store: the yearly ceiling holds under concurrent
payments, refused money a provider captured is flagged for refund with the reason, the
totals follow refunds, flags and merges, the pre-capture check answers with every reason,
and elections carry their campaign accounts' rules."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memberships.donations.service import GiftRefused
from memberships.donations.store import ELECTIONS, GUARDS
from memberships.handlers import contact_merge_handlers
from memberships.main import create_app
from memberships.payments.notice import DonorDeclaration, PaymentNotice
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES, PAYMENTS
from support import deliver, identity_headers, make_identity, run_with_store, seed_federations
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactMergedV1, ContactState
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

SECRET = "whsec-donations-0123456789abcdef"
PARIS = "/root/paris/"
LYON = "/root/lyon/"
FRENCH = {"natural_person": True, "nationality": "FR", "resides_in_france": True}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", SECRET)
    return MembershipsSettings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        seed_federations(settings, "/root/", PARIS, LYON)
        yield c


def seed_contact(settings, contact_id: str, path: str = PARIS) -> None:
    async def project(store: Store) -> None:
        envelope = new_envelope(
            ContactCreatedV1(
                contact_id=contact_id, contact_version=1, contact=ContactState(given_name="Ada")
            ),
            producer="contacts",
            federation_id=path.rstrip("/").rsplit("/", 1)[-1],
            federation_path=path,
        )
        await deliver(store, ContactDirectory(store).handlers(), envelope)

    run_with_store(settings, project)


def find(settings, collection: str, query: dict[str, Any] | None = None) -> list[dict]:
    async def go(store: Store) -> list[dict]:
        return await store[collection].find(query or {}).sort("_id", 1).to_list()

    return run_with_store(settings, go)


def auth(settings, path: str = PARIS, role: Role = Role.treasurer) -> dict[str, str]:
    return identity_headers(make_identity(path, role), settings.identity_secret)


def moment(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1) + timedelta(**delta)


def gift_body(contact_id: str, cents: int, **changes: Any) -> dict[str, Any]:
    body = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{contact_id}-{cents}-{len(changes)}",
        "contact_id": contact_id,
        "amount_cents": cents,
        "currency": "EUR",
        "method": "card",
        "purpose": "donation",
        "paid_at": moment().isoformat(),
        "donor": FRENCH,
    }
    body.update(changes)
    return body


def post_signed(client, body: dict) -> Any:
    raw = json.dumps(body).encode()
    return client.post(
        "/api/v1/webhooks/payments",
        content=raw,
        headers={"Content-Type": "application/json", **signature_headers(SECRET, raw)},
    )


def notice(contact_id: str, cents: int, n: int | str, **changes: Any) -> PaymentNotice:
    fields: dict[str, Any] = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{contact_id}-{n}",
        "contact_id": contact_id,
        "amount_cents": cents,
        "currency": "EUR",
        "method": "card",
        "purpose": "donation",
        "paid_at": moment(),
        "donor": DonorDeclaration(natural_person=True, nationality="FR"),
    }
    fields.update(changes)
    return PaymentNotice(**fields)


def record(settings, *notices: PaymentNotice, concurrently: bool = False) -> list[Any]:
    """Record payments through the one recording use case; a GiftRefused is returned."""

    async def go(store: Store) -> list[Any]:
        await store.ensure_indexes(INDEXES)
        svc = MembershipsService(settings, store)

        async def one(n: PaymentNotice) -> Any:
            try:
                return await svc.record_payment(n)
            except GiftRefused as refusal:
                return refusal

        if concurrently:
            return list(await asyncio.gather(*(one(n) for n in notices)))
        return [await one(n) for n in notices]

    return run_with_store(settings, go)


def accepted_total(settings, contact_id: str) -> int:
    return sum(
        p["amount_cents"]
        for p in find(settings, PAYMENTS, {"contact_id": contact_id, "status": "accepted"})
    )


def check(client, settings, contact_id: str, cents: int, **changes: Any) -> Any:
    body = {"contact_id": contact_id, "amount_cents": cents, "method": "card", "donor": FRENCH}
    body.update(changes)
    return client.post("/api/v1/donations/check", json=body, headers=auth(settings))


# ---------------------------------------------------------------- the ceiling under concurrency


@pytest.mark.parametrize("captured", [False, True], ids=["treasurer-entries", "provider"])
def test_concurrent_gifts_at_the_cap_exactly_one_passes(settings, captured):
    seed_contact(settings, "c-cap")
    [first] = record(settings, notice("c-cap", 250_000, "first"))
    assert first.status == "recorded"

    # Six gifts of 5,000 EUR at once: each fits alone, any two break the ceiling.
    outcomes = record(
        settings,
        *(notice("c-cap", 500_000, i, captured=captured) for i in range(6)),
        concurrently=True,
    )

    recorded = [o for o in outcomes if not isinstance(o, GiftRefused) and o.status == "recorded"]
    assert len(recorded) == 1
    if captured:  # the provider took the money: kept on record, to refund
        flagged = [o for o in outcomes if o.status == "flagged_for_refund"]
        assert len(flagged) == 5
        assert all("Yearly ceiling" in o.refusal for o in flagged)
    else:  # a treasurer's entries: refused, nothing written
        refused = [o for o in outcomes if isinstance(o, GiftRefused)]
        assert len(refused) == 5
        assert {r.extra["rule"] for r in refused} == {"yearly_ceiling"}
    assert accepted_total(settings, "c-cap") == 750_000
    [guard] = find(settings, GUARDS)
    assert guard["_id"].startswith("c-cap:year:")


# ---------------------------------------------------------------- what the totals count


def test_a_refunded_payment_frees_room(settings):
    seed_contact(settings, "c-ref")
    record(settings, notice("c-ref", 500_000, 1), notice("c-ref", 250_000, 2))
    [refused] = record(settings, notice("c-ref", 100, 3, captured=False))
    assert isinstance(refused, GiftRefused)

    # The refund of the 2,500 EUR gift (what the refund use case does to the payment).
    async def refund(store: Store) -> None:
        await store[PAYMENTS].update_one(
            {"provider_payment_id": "pay-c-ref-2"}, {"$set": {"status": "refunded"}}
        )

    run_with_store(settings, refund)
    [again] = record(settings, notice("c-ref", 250_000, 4, captured=False))
    assert again.status == "recorded"
    [over] = record(settings, notice("c-ref", 1, 5, captured=False))
    assert isinstance(over, GiftRefused)


def test_a_flagged_payment_counts_in_no_total(settings):
    seed_contact(settings, "c-flag")
    outcomes = record(
        settings,
        notice("c-flag", 500_000, 1),
        notice("c-flag", 500_000, 2),  # captured, over the ceiling: flagged
        notice("c-flag", 250_000, 3),  # fits: the flagged one took no room
    )
    assert [o.status for o in outcomes] == ["recorded", "flagged_for_refund", "recorded"]
    assert accepted_total(settings, "c-flag") == 750_000


def test_an_elected_officials_dues_are_outside_the_ceiling(settings):
    seed_contact(settings, "c-elu")
    outcomes = record(
        settings,
        notice("c-elu", 750_000, 1),
        notice("c-elu", 300_000, 2, purpose="dues", elected_official=True, donor=None),
        notice("c-elu", 3_000, 3, purpose="dues", donor=None, captured=False),
    )
    assert [getattr(o, "status", None) for o in outcomes[:2]] == ["recorded", "recorded"]
    assert isinstance(outcomes[2], GiftRefused)  # ordinary dues still count
    assert outcomes[2].extra["rule"] == "yearly_ceiling"


def test_merged_contacts_add_up(settings):
    seed_contact(settings, "c-one")
    seed_contact(settings, "c-twin")
    record(settings, notice("c-one", 500_000, 1), notice("c-twin", 250_000, 1))

    async def merge(store: Store) -> None:
        envelope = new_envelope(
            ContactMergedV1(
                merged_contact_id="c-twin",
                surviving_contact_id="c-one",
                contact_version=2,
                merged_by="u1",
            ),
            producer="contacts",
            federation_id="paris",
            federation_path=PARIS,
        )
        await deliver(store, contact_merge_handlers(store), envelope)

    run_with_store(settings, merge)
    [refused] = record(settings, notice("c-one", 1, 2, captured=False))
    assert isinstance(refused, GiftRefused)
    assert "7,500.00 EUR already given" in refused.message


def test_a_merge_guards_the_survivors_years_so_a_concurrent_gift_conflicts_with_it(settings):
    seed_contact(settings, "c-heir")
    seed_contact(settings, "c-giver")
    record(settings, notice("c-giver", 250_000, 1))
    assert not any(d["_id"].startswith("c-heir:") for d in find(settings, GUARDS))

    async def merge(store: Store) -> None:
        envelope = new_envelope(
            ContactMergedV1(
                merged_contact_id="c-giver",
                surviving_contact_id="c-heir",
                contact_version=2,
                merged_by="u1",
            ),
            producer="contacts",
            federation_id="paris",
            federation_path=PARIS,
        )
        await deliver(store, contact_merge_handlers(store), envelope)

    run_with_store(settings, merge)
    # the merge wrote the guard of the year the moved gift counts in (a gift for the heir
    # recorded at that moment conflicts with the merge and, run again, sees the gift)
    [paid] = find(settings, PAYMENTS, {"contact_id": "c-heir"})
    heir_guards = {d["_id"] for d in find(settings, GUARDS) if d["_id"].startswith("c-heir:")}
    assert f"c-heir:year:{paid['paid_at'].year}" in heir_guards


# ---------------------------------------------------------------- the webhook: flagged


def test_a_captured_gift_over_the_ceiling_is_flagged_for_refund_with_the_reason(settings, client):
    seed_contact(settings, "c-web")
    first = post_signed(client, gift_body("c-web", 500_000))
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "recorded"
    second = post_signed(client, gift_body("c-web", 500_000, provider_payment_id="pay-2"))

    assert second.status_code == 201, second.text  # the provider must not retry it
    answer = second.json()
    assert answer["status"] == "flagged_for_refund"
    assert "Yearly ceiling" in answer["refusal"]
    assert "2,500.00 EUR remain" in answer["refusal"]
    flagged = find(settings, PAYMENTS, {"_id": answer["payment_id"]})[0]
    assert flagged["status"] == "flagged_for_refund"
    assert flagged["refusal"]["rule"] == "yearly_ceiling"
    assert [r["rule"] for r in flagged["refusal"]["refusals"]] == ["yearly_ceiling"]
    # only the accepted gift announced itself
    types = sorted(d["envelope"]["type"] for d in find(settings, OUTBOX))  # no order read
    assert types == ["donation-received", "payment-received"]


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"method": "cash", "amount_cents": 15_001}, "cash_limit"),
        ({"purpose": "dues", "method": "cash", "amount_cents": 15_001}, "cash_limit"),
        ({"donor": None}, "donor_declaration"),
        ({"donor": {**FRENCH, "natural_person": False}}, "natural_person"),
        ({"donor": {"natural_person": True, "nationality": "US"}}, "nationality_or_residence"),
    ],
)
def test_a_captured_payment_a_rule_refuses_is_flagged_with_that_rule(
    settings, client, changes, rule
):
    seed_contact(settings, "c-rule")
    response = post_signed(client, gift_body("c-rule", 10_000, **changes))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "flagged_for_refund"
    [payment] = find(settings, PAYMENTS)
    assert payment["refusal"]["rule"] == rule
    assert find(settings, OUTBOX) == []


def test_cash_of_150_eur_and_dues_without_declaration_are_accepted(settings, client):
    seed_contact(settings, "c-ok")
    cash = post_signed(client, gift_body("c-ok", 15_000, method="cash"))
    dues = post_signed(
        client,
        gift_body("c-ok", 3_000, purpose="dues", donor=None, provider_payment_id="pay-dues"),
    )
    assert [cash.json()["status"], dues.json()["status"]] == ["recorded", "recorded"]


def test_a_treasurers_entry_the_law_refuses_writes_nothing(settings):
    seed_contact(settings, "c-desk")
    [refused] = record(
        settings, notice("c-desk", 20_000, 1, method="cash", captured=False, entered_by="u-t")
    )
    assert isinstance(refused, GiftRefused)
    assert refused.status_code == 409
    assert refused.body()["rule"] == "cash_limit"
    assert refused.body()["detail"][0]["field"] == "method"
    assert find(settings, PAYMENTS) == [] and find(settings, OUTBOX) == []


# ---------------------------------------------------------------- the pre-capture check


def test_the_check_gives_the_room_then_every_reason_and_writes_nothing(settings, client):
    seed_contact(settings, "c-chk")
    before = check(client, settings, "c-chk", 500_000)
    assert before.status_code == 200, before.text
    assert before.json()["accepted"] is True
    assert before.json()["party"] == {
        "ceiling_cents": 750_000,
        "given_cents": 0,
        "remaining_cents": 750_000,
    }
    assert post_signed(client, gift_body("c-chk", 500_000)).json()["status"] == "recorded"

    after = check(
        client,
        settings,
        "c-chk",
        500_000,
        method="cash",
        donor={"natural_person": False, "nationality": "FR"},
    ).json()
    assert after["accepted"] is False
    assert [r["rule"] for r in after["refusals"]] == [
        "natural_person",
        "cash_limit",
        "yearly_ceiling",
    ]
    assert all(r["reason"] for r in after["refusals"])
    assert after["party"]["remaining_cents"] == 250_000
    assert len(find(settings, PAYMENTS)) == 1  # asking changed nothing
    assert check(client, settings, "c-chk", 250_000).json()["accepted"] is True


def test_the_check_is_for_treasurers_in_their_subtree(settings, client):
    seed_contact(settings, "c-lyon", LYON)
    body = {"contact_id": "c-lyon", "amount_cents": 100, "method": "card"}
    url = "/api/v1/donations/check"
    assert client.post(url, json=body, headers=auth(settings, PARIS)).status_code == 404
    assert client.post(url, json=body, headers=auth(settings, LYON)).status_code == 200
    secretary = auth(settings, LYON, Role.secretary)
    assert client.post(url, json=body, headers=secretary).status_code == 403
    assert client.post(url, json=body).status_code == 401


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount_cents": 0}, "amount_cents"),
        ({"amount_cents": 750_001}, "amount_cents"),
        ({"method": "bitcoin"}, "method"),
        ({"donor": {"natural_person": True, "nationality": "France"}}, "donor.nationality"),
        ({"paid_at": "2026-01-01T10:00:00"}, "paid_at"),
        ({"purpose": "dues", "election_id": "e-1"}, "election_id"),
    ],
)
def test_the_check_validates_its_input(settings, client, changes, field):
    seed_contact(settings, "c-val")
    response = check(client, settings, "c-val", 100, **changes)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["detail"]] == [field]


# ---------------------------------------------------------------- elections and campaign accounts


def election_body(**changes: Any) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    body = {
        "name": "Municipales, Paris 11e",
        "starts_on": (today - timedelta(days=60)).isoformat(),
        "ends_on": (today + timedelta(days=60)).isoformat(),
        "candidate": {"name": "Camille Martin"},
        "financial_agent": {"kind": "individual", "name": "Jean Dupont", "declared_on": None},
    }
    body.update(changes)
    return body


def new_election(client, settings, path: str = PARIS, **changes: Any) -> dict[str, Any]:
    r = client.post(
        "/api/v1/donations/elections", json=election_body(**changes), headers=auth(settings, path)
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_elections_are_managed_by_treasurers_in_their_subtree(settings, client):
    election = new_election(client, settings)
    assert election["federation_id"] == "paris"
    assert election["financial_agent"]["name"] == "Jean Dupont"
    eid = election["election_id"]
    url = f"/api/v1/donations/elections/{eid}"

    assert client.get(url, headers=auth(settings)).json()["name"] == "Municipales, Paris 11e"
    national = auth(settings, "/root/", Role.admin)
    assert [
        e["election_id"]
        for e in client.get("/api/v1/donations/elections", headers=national).json()["items"]
    ] == [eid]
    lyon = auth(settings, LYON)
    assert client.get(url, headers=lyon).status_code == 404
    assert client.get("/api/v1/donations/elections", headers=lyon).json()["items"] == []
    assert client.patch(url, json={"name": "x"}, headers=lyon).status_code == 404
    assert client.delete(url, headers=lyon).status_code == 404
    assert client.get(url, headers=auth(settings, PARIS, Role.secretary)).status_code == 403

    agent = {"kind": "association", "name": "AFE Martin", "declared_on": "2026-01-05"}
    patched = client.patch(url, json={"financial_agent": agent}, headers=auth(settings))
    assert patched.status_code == 200, patched.text
    assert patched.json()["financial_agent"] == agent
    assert patched.json()["starts_on"] == election["starts_on"]

    bad = client.patch(url, json={"ends_on": "2000-01-01"}, headers=auth(settings))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "ends_on"
    assert client.delete(url, headers=auth(settings)).status_code == 204
    assert client.get(url, headers=auth(settings)).status_code == 404
    assert find(settings, ELECTIONS) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"starts_on": "2026-05-01", "ends_on": "2026-04-30"}, "ends_on"),
        ({"name": ""}, "name"),
        ({"financial_agent": {"kind": "company", "name": "X"}}, "financial_agent.kind"),
        ({"candidate": None}, "candidate"),
        ({"federation_id": "lyon"}, "federation_id"),  # 404: outside the subtree
    ],
)
def test_an_invalid_election_is_refused_and_nothing_is_stored(settings, client, changes, field):
    r = client.post(
        "/api/v1/donations/elections", json=election_body(**changes), headers=auth(settings)
    )
    assert r.status_code in (404, 422), r.text
    assert r.json()["detail"][0]["field"] == field
    assert find(settings, ELECTIONS) == []


def test_a_campaign_account_takes_4600_eur_per_donor_outside_the_partys_ceiling(settings, client):
    seed_contact(settings, "c-camp")
    eid = new_election(client, settings)["election_id"]
    # the party's ceiling is reached: the campaign account is another law's
    assert post_signed(client, gift_body("c-camp", 750_000)).json()["status"] == "recorded"
    campaign = gift_body("c-camp", 460_000, election_id=eid, provider_payment_id="pay-c1")
    assert post_signed(client, campaign).json()["status"] == "recorded"

    over = post_signed(
        client, gift_body("c-camp", 1, election_id=eid, provider_payment_id="pay-c2")
    ).json()
    assert over["status"] == "flagged_for_refund"
    assert "Campaign ceiling" in over["refusal"] and "4,600.00 EUR" in over["refusal"]

    answer = check(client, settings, "c-camp", 100, election_id=eid).json()
    assert answer["party"] is None
    assert answer["campaign"] == {
        "ceiling_cents": 460_000,
        "given_cents": 460_000,
        "remaining_cents": 0,
    }
    # an election with gifts is kept with its account
    deleted = client.delete(f"/api/v1/donations/elections/{eid}", headers=auth(settings))
    assert deleted.status_code == 409


def test_a_campaign_gift_outside_the_period_is_refused(settings, client):
    seed_contact(settings, "c-late")
    today = datetime.now(UTC).date()
    ended = new_election(
        client,
        settings,
        starts_on=(today - timedelta(days=200)).isoformat(),
        ends_on=(today - timedelta(days=2)).isoformat(),
    )["election_id"]
    response = post_signed(client, gift_body("c-late", 10_000, election_id=ended)).json()
    assert response["status"] == "flagged_for_refund"
    assert "Campaign period" in response["refusal"]
    answer = check(client, settings, "c-late", 10_000, election_id=ended).json()
    assert [r["rule"] for r in answer["refusals"]] == ["campaign_period"]


def test_an_unknown_election_is_404_and_nothing_is_recorded(settings, client):
    seed_contact(settings, "c-nowhere")
    response = post_signed(client, gift_body("c-nowhere", 10_000, election_id="e-ghost"))
    assert response.status_code == 404
    assert response.json()["detail"][0]["field"] == "election_id"
    assert find(settings, PAYMENTS) == []
    assert check(client, settings, "c-nowhere", 100, election_id="e-ghost").status_code == 404
