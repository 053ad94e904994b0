"""Plans per federation through the gateway: a federation's treasurer defines a plan with
a student rate; a member of a section under it pays the student amount through the signed
payment webhook and nothing is flagged; a member who pays less is flagged, and the
treasurer finds that payment in their list of differences and the dues in the split
report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from support import NewFederation, create_federation, create_member, eventually
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

PLAN = {
    "label": "Adhésion annuelle",
    "kind": "calendar",
    "grace_days": 60,
    "amount_cents": 3000,
    "rates": {"students": 1000},
    "split": {"national": 50, "federation": 30, "section": 20},
}


Fed = NewFederation
federation = create_federation


def member(admin, fed: Fed) -> str:
    return create_member(admin, fed, given_name="Camille")


def pay(http, stack, contact_id: str, amount_cents: int, rate: str | None):
    body = json.dumps(
        {
            "provider": "helloasso",
            "provider_payment_id": f"pay-{uuid.uuid4().hex}",
            "contact_id": contact_id,
            "amount_cents": amount_cents,
            "currency": "EUR",
            "method": "card",
            "purpose": "dues",
            "paid_at": datetime.now(UTC).isoformat(),
            "plan": "annual",
            **({"rate": rate} if rate else {}),
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        **signature_headers(stack.env["MEMBERSHIPS_WEBHOOK_SECRET"], body),
    }
    # memberships learns the contact from contact-created: retried until it has
    return eventually(
        lambda: http.post("/api/v1/webhooks/payments", content=body, headers=headers),
        lambda r: r.status_code != 404,
        timeout=60,
    )


def test_a_section_member_pays_the_student_rate_of_the_federations_plan(
    stack, http, admin, new_user
):
    fed = federation(admin, "Fédération plans")
    section = federation(admin, "Section plans", fed.id)
    treasurer = new_user("treasurer", fed)
    viewer = new_user("viewer", section)

    # the federation's treasurer defines its plan (once memberships knows the federation)
    defined = eventually(
        lambda: treasurer(
            "PUT", "/api/v1/memberships/plans/annual", json={**PLAN, "federation_id": fed.id}
        ),
        lambda r: r.status_code != 404,
        timeout=60,
    )
    assert defined.status_code == 201, defined.text

    # the section inherits it: its viewer sees where it is defined
    listed = eventually(
        lambda: viewer("GET", "/api/v1/memberships/plans", params={"federation_id": section.id}),
        lambda r: r.status_code == 200,
        timeout=60,
    )
    annual = {p["code"]: p for p in listed.json()["items"]}["annual"]
    assert annual["defined_in"]["federation_id"] == fed.id
    assert annual["inherited"] is True
    assert annual["rates"] == {"students": 1000}

    student, short = member(admin, section), member(admin, section)
    exact = pay(http, stack, student, 1000, "students")
    assert exact.status_code == 201, exact.text
    assert exact.json()["membership_status"] == "active"

    def differences():
        r = treasurer(
            "GET",
            "/api/v1/memberships/plans/reports/differences",
            params={"federation_id": fed.id},
        )
        assert r.status_code == 200, r.text
        return r.json()["items"]

    assert differences() == []  # the student amount is what the plan expects

    less = pay(http, stack, short, 800, "students")
    assert less.status_code == 201, less.text  # recorded: a difference is flagged, not refused
    [flagged] = differences()
    assert flagged["payment_id"] == less.json()["payment_id"]
    assert flagged["contact_id"] == short
    assert (flagged["expected_cents"], flagged["amount_cents"]) == (1000, 800)
    assert flagged["difference_cents"] == -200

    # an unknown rate is refused with the field, before anything is recorded
    unknown = pay(http, stack, short, 800, "pensioners")
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["detail"][0]["field"] == "rate"

    # the split report: both payments, shared 50/30/20 between the levels
    report = treasurer(
        "GET",
        "/api/v1/memberships/plans/reports/split",
        params={"federation_id": fed.id, "year": datetime.now(UTC).year},
    )
    assert report.status_code == 200, report.text
    [row] = report.json()["rows"]
    assert (row["federation_id"], row["payments"], row["collected_cents"]) == (section.id, 2, 1800)
    assert (row["national_cents"], row["federation_cents"], row["section_cents"]) == (900, 540, 360)
    csv_report = treasurer(
        "GET", "/api/v1/memberships/plans/reports/split.csv", params={"federation_id": fed.id}
    )
    assert csv_report.status_code == 200
    assert csv_report.text.splitlines()[1].startswith(section.id)

    # a viewer reads plans but not the treasurer's reports
    refused = viewer(
        "GET", "/api/v1/memberships/plans/reports/differences", params={"federation_id": section.id}
    )
    assert refused.status_code == 403
