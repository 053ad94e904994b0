"""Plans per federation over the real store and API: a treasurer defines, overrides,
changes and withdraws plans; members pay through the signed webhook against the plan in
force in their federation (rate included); differences are flagged and listed; the split
report sums a year's dues per level, as JSON and CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memberships.main import create_app
from memberships.plans.store import PLAN_VERSIONS, PLANS
from memberships.settings import MembershipsSettings
from memberships.store import PAYMENTS
from support import deliver, identity_headers, make_identity, seed_federations
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.store import Store
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

SECRET = "whsec-plans-integration-0123456789abcdef"
ROOT, PARIS, P11, LYON = "/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/"
PLAN = {
    "label": "Adhésion annuelle",
    "kind": "calendar",
    "grace_days": 60,
    "amount_cents": 4000,
    "rates": {"students": 1500},
    "split": {"national": 50, "federation": 30, "section": 20},
}


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", SECRET)
    return MembershipsSettings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        seed_federations(settings, ROOT, PARIS, P11, LYON)
        yield c


def as_(settings, path: str, role: Role = Role.treasurer) -> dict[str, str]:
    return identity_headers(make_identity(path, role), settings.identity_secret)


def seed_contact(settings, contact_id: str, federation_path: str) -> None:
    async def run() -> None:
        store = Store(settings)
        try:
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
        finally:
            await store.close()

    asyncio.run(run())


def find(settings, collection: str, query: dict[str, Any] | None = None) -> list[dict]:
    async def run() -> list[dict]:
        store = Store(settings)
        try:
            return await store[collection].find(query or {}).sort("_id", 1).to_list()
        finally:
            await store.close()

    return asyncio.run(run())


def pay(client, contact_id: str, amount: int, *, ref: str, **changes: Any):
    body = {
        "provider": "stripe",
        "provider_payment_id": ref,
        "contact_id": contact_id,
        "amount_cents": amount,
        "currency": "EUR",
        "method": "card",
        "purpose": "dues",
        "paid_at": datetime.now(UTC).isoformat(),
        **changes,
    }
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **signature_headers(SECRET, raw)}
    return client.post("/api/v1/webhooks/payments", content=raw, headers=headers)


def define(client, settings, code: str = "annual", path: str = PARIS, **changes: Any):
    fid = path.rstrip("/").rsplit("/", 1)[-1]
    body = {**PLAN, "federation_id": fid, **changes}
    return client.put(f"/api/v1/memberships/plans/{code}", json=body, headers=as_(settings, PARIS))


def plans_of(client, settings, federation_id: str, path: str = P11, role=Role.viewer):
    r = client.get(
        "/api/v1/memberships/plans",
        params={"federation_id": federation_id},
        headers=as_(settings, path, role),
    )
    assert r.status_code == 200, r.text
    return {p["code"]: p for p in r.json()["items"]}


def payment(settings, payment_id: str) -> dict[str, Any]:
    [doc] = find(settings, PAYMENTS, {"_id": payment_id})
    return doc


# ---------------------------------------------------------------- defining and inheriting


def test_a_plan_defined_by_a_federation_is_inherited_by_its_sections_only(settings, client):
    created = define(client, settings)
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["version"], view["inherited"], view["amount_cents"]) == (1, False, 4000)
    assert view["defined_in"] == {"federation_id": "paris", "federation_path": PARIS}

    section = plans_of(client, settings, "p11")
    assert section["annual"]["defined_in"]["federation_id"] == "paris"
    assert section["annual"]["inherited"] is True
    assert section["annual"]["rates"] == {"students": 1500}
    assert section["annual"]["split"] == {"national": 50, "federation": 30, "section": 20}
    # the platform's other default is still there, defined nowhere
    assert section["rolling-year"]["defined_in"] is None

    lyon = plans_of(client, settings, "lyon", path=LYON)
    assert lyon["annual"]["defined_in"] is None  # Lyon keeps the platform's default
    assert lyon["annual"]["amount_cents"] is None


def test_a_section_overrides_and_a_new_version_replaces_the_old(settings, client):
    assert define(client, settings).status_code == 201
    override = define(client, settings, path=P11, amount_cents=3500, rates={})
    assert override.status_code == 201, override.text
    assert plans_of(client, settings, "p11")["annual"]["amount_cents"] == 3500
    assert plans_of(client, settings, "paris", path=PARIS)["annual"]["amount_cents"] == 4000

    changed = define(client, settings, amount_cents=4200, expected_version=1)
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    stale = define(client, settings, amount_cents=9900, expected_version=1)
    assert stale.status_code == 409
    assert stale.json()["error"] == "plan_version_conflict"
    assert plans_of(client, settings, "paris", path=PARIS)["annual"]["amount_cents"] == 4200

    history = client.get(
        "/api/v1/memberships/plans/annual/versions",
        params={"federation_id": "paris"},
        headers=as_(settings, PARIS, Role.viewer),
    )
    assert history.status_code == 200, history.text
    assert [(v["version"], v["terms"]["amount_cents"]) for v in history.json()["items"]] == [
        (2, 4200),
        (1, 4000),
    ]
    assert len(find(settings, PLAN_VERSIONS)) == 3


def test_a_withdrawn_plan_is_gone_from_the_subtree_and_dues_naming_it_are_refused(settings, client):
    seed_contact(settings, "c-withdrawn", P11)
    assert define(client, settings).status_code == 201
    body = {"federation_id": "p11"}
    first = client.post(
        "/api/v1/memberships/plans/annual/withdraw", json=body, headers=as_(settings, PARIS)
    )
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.json()["withdrawn"] is True
    again = client.post(
        "/api/v1/memberships/plans/annual/withdraw", json=body, headers=as_(settings, PARIS)
    )
    assert again.json()["version"] == 1  # nothing changed
    assert "annual" not in plans_of(client, settings, "p11")
    assert "annual" in plans_of(client, settings, "paris", path=PARIS)

    refused = pay(client, "c-withdrawn", 4000, ref="pi_withdrawn")
    assert refused.status_code == 422
    [detail] = refused.json()["detail"]
    assert detail["field"] == "plan" and "withdrawn" in detail["reason"]
    assert find(settings, PAYMENTS) == []

    unknown = client.post(
        "/api/v1/memberships/plans/lifetime/withdraw", json={}, headers=as_(settings, PARIS)
    )
    assert unknown.status_code == 404


# ---------------------------------------------------------------- payments against the plan


def test_dues_at_the_student_rate_pass_and_less_is_flagged_and_listed(settings, client):
    seed_contact(settings, "c-student", P11)
    seed_contact(settings, "c-short", P11)
    assert define(client, settings).status_code == 201

    exact = pay(client, "c-student", 1500, ref="pi_exact", rate="students")
    assert exact.status_code == 201, exact.text
    doc = payment(settings, exact.json()["payment_id"])
    assert doc["amount_check"] == {
        "expected_cents": 1500,
        "paid_cents": 1500,
        "difference_cents": 0,
        "flagged": False,
    }
    levels = doc["split"]["levels"]
    assert {lvl: (v["path"], v["cents"]) for lvl, v in levels.items()} == {
        "national": (ROOT, 750),
        "federation": (PARIS, 450),
        "section": (P11, 300),
    }
    assert (doc["split"]["plan_version"], doc["split"]["defined_in"]) == (1, "paris")

    short = pay(client, "c-short", 1000, ref="pi_short", rate="students")
    assert short.status_code == 201, short.text  # recorded, never refused
    flagged = payment(settings, short.json()["payment_id"])["amount_check"]
    assert (flagged["flagged"], flagged["difference_cents"]) == (True, -500)

    listed = client.get(
        "/api/v1/memberships/plans/reports/differences",
        params={"federation_id": "paris"},
        headers=as_(settings, PARIS),
    )
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["payment_id"], item["rate"], item["expected_cents"]) == (
        short.json()["payment_id"],
        "students",
        1500,
    )
    assert item["difference_cents"] == -500
    # Lyon's treasurer neither sees them nor learns that Paris exists
    lyon = client.get(
        "/api/v1/memberships/plans/reports/differences",
        params={"federation_id": "paris"},
        headers=as_(settings, LYON),
    )
    assert lyon.status_code == 404
    own = client.get("/api/v1/memberships/plans/reports/differences", headers=as_(settings, LYON))
    assert own.json()["items"] == []


def test_unknown_plan_or_rate_is_422_and_records_nothing(settings, client):
    seed_contact(settings, "c-rate", P11)
    assert define(client, settings).status_code == 201
    for changes, field in (({"rate": "unemployed"}, "rate"), ({"plan": "lifetime"}, "plan")):
        r = pay(client, "c-rate", 1500, ref=f"pi_{field}", **changes)
        assert r.status_code == 422, r.text
        assert [d["field"] for d in r.json()["detail"]] == [field]
    assert find(settings, PAYMENTS) == []


def test_a_new_amount_applies_to_later_payments_and_earlier_ones_keep_theirs(settings, client):
    seed_contact(settings, "c-before", P11)
    seed_contact(settings, "c-after", P11)
    assert define(client, settings).status_code == 201
    before = pay(client, "c-before", 4000, ref="pi_before")
    assert define(client, settings, amount_cents=4500).status_code == 200
    after = pay(client, "c-after", 4000, ref="pi_after")

    kept = payment(settings, before.json()["payment_id"])
    assert kept["amount_check"]["flagged"] is False
    assert kept["split"]["plan_version"] == 1
    changed = payment(settings, after.json()["payment_id"])
    assert changed["amount_check"]["expected_cents"] == 4500
    assert changed["amount_check"]["flagged"] is True
    assert changed["split"]["plan_version"] == 2


def test_platform_defaults_without_amount_flag_nothing(settings, client):
    seed_contact(settings, "c-default", LYON)
    r = pay(client, "c-default", 1234, ref="pi_default")
    assert r.status_code == 201, r.text
    doc = payment(settings, r.json()["payment_id"])
    assert doc["amount_check"]["flagged"] is False
    assert doc["split"]["levels"]["national"]["cents"] == 1234  # default split: national


# ---------------------------------------------------------------- the split report


def test_the_split_report_sums_a_years_dues_per_federation_and_level(settings, client):
    seed_contact(settings, "c-s1", P11)
    seed_contact(settings, "c-s2", P11)
    seed_contact(settings, "c-f1", PARIS)
    seed_contact(settings, "c-old", P11)
    seed_contact(settings, "c-lyon", LYON)
    assert define(client, settings).status_code == 201
    year = datetime.now(UTC).year
    assert pay(client, "c-s1", 4000, ref="pi_s1").status_code == 201
    assert pay(client, "c-s2", 1500, ref="pi_s2", rate="students").status_code == 201
    assert pay(client, "c-f1", 4000, ref="pi_f1").status_code == 201
    assert pay(client, "c-lyon", 4000, ref="pi_lyon").status_code == 201
    old = pay(client, "c-old", 4000, ref="pi_old", paid_at=f"{year - 1}-06-01T10:00:00+00:00")
    assert old.status_code == 201, old.text
    donation = pay(client, "c-f1", 5000, ref="pi_gift", purpose="donation")
    assert donation.status_code == 201, donation.text

    r = client.get(
        "/api/v1/memberships/plans/reports/split",
        params={"federation_id": "paris", "year": year},
        headers=as_(settings, PARIS),
    )
    assert r.status_code == 200, r.text
    report = r.json()
    rows = {row["federation_id"]: row for row in report["rows"]}
    assert set(rows) == {"paris", "p11"}  # Lyon's, last year's and the gift are not in it
    p11 = rows["p11"]
    assert (p11["payments"], p11["collected_cents"]) == (2, 5500)
    assert (p11["national_cents"], p11["federation_cents"], p11["section_cents"]) == (
        2750,
        1650,
        1100,
    )
    paris = rows["paris"]  # no section: its share goes to the federation
    assert (paris["national_cents"], paris["federation_cents"], paris["section_cents"]) == (
        2000,
        2000,
        0,
    )
    [total] = report["totals"]
    assert (total["currency"], total["payments"], total["collected_cents"]) == ("EUR", 3, 9500)
    assert total["national_cents"] + total["federation_cents"] + total["section_cents"] == 9500

    previous = client.get(
        "/api/v1/memberships/plans/reports/split",
        params={"federation_id": "paris", "year": year - 1},
        headers=as_(settings, PARIS),
    ).json()
    assert [(r["federation_id"], r["collected_cents"]) for r in previous["rows"]] == [("p11", 4000)]

    exported = client.get(
        "/api/v1/memberships/plans/reports/split.csv",
        params={"federation_id": "paris", "year": year},
        headers=as_(settings, PARIS),
    )
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(t["federation_path"], t["collected_cents"]) for t in table] == [
        (PARIS, "4000"),
        (P11, "5500"),
    ]


# ---------------------------------------------------------------- who may do what


def test_reads_reach_the_lineage_and_writes_the_subtree(settings, client):
    assert define(client, settings).status_code == 201
    # a section's viewer reads its federation's plans (inherited), not a sibling's
    assert "annual" in plans_of(client, settings, "paris", path=P11)
    sibling = client.get(
        "/api/v1/memberships/plans",
        params={"federation_id": "lyon"},
        headers=as_(settings, P11, Role.viewer),
    )
    assert sibling.status_code == 404
    # only treasurers and admins write, and only in their subtree
    viewer = client.put(
        "/api/v1/memberships/plans/annual",
        json={**PLAN, "federation_id": "paris"},
        headers=as_(settings, PARIS, Role.secretary),
    )
    assert viewer.status_code == 403
    upward = client.put(
        "/api/v1/memberships/plans/annual",
        json={**PLAN, "federation_id": "paris"},
        headers=as_(settings, P11),
    )
    assert upward.status_code == 404
    assert (
        client.get(
            "/api/v1/memberships/plans/reports/split", headers=as_(settings, PARIS, Role.viewer)
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"split": {"national": 50, "federation": 30}}, "split"),
        ({"rates": {"pensioners": 100}}, "rates.pensioners"),
        ({"rates": {"students": 5000}}, "rates.students"),
        ({"kind": "rolling"}, "days"),
        ({"amount_cents": 0}, "amount_cents"),
        ({"federation_id": "no such one"}, "federation_id"),
    ],
)
def test_bad_terms_are_422_with_the_field_and_change_nothing(settings, client, changes, field):
    r = define(client, settings, **changes)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]]
    assert find(settings, PLANS) == []


def test_concurrent_changes_of_one_plan_get_successive_versions(settings, client):
    from memberships.domain import PlanKind
    from memberships.plans.service import PlanCatalog

    async def run() -> list[int]:
        store = Store(settings)
        catalog = PlanCatalog(settings, store)
        treasurer = make_identity(PARIS, Role.treasurer)

        async def change(amount: int) -> int:
            definition, _ = await catalog.define(
                treasurer,
                "annual",
                None,
                label=None,
                kind=PlanKind.calendar,
                days=None,
                grace_days=30,
                amount_cents=amount,
                rates={},
                split=None,
                expected_version=None,
            )
            return definition.version

        try:
            return await asyncio.gather(*(change(1000 + i) for i in range(4)))
        finally:
            await store.close()

    versions = asyncio.run(run())
    assert sorted(versions) == [1, 2, 3, 4]  # none lost, none twice
    [current] = find(settings, PLANS)
    assert current["version"] == 4
    assert sorted(v["version"] for v in find(settings, PLAN_VERSIONS)) == [1, 2, 3, 4]
