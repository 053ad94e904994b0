"""Payments through the gateway: a federation's treasurer enters a member's cheque and the
member is up to date; the cheque goes on a remittance slip (CSV and PDF); a refund takes
the standing back; another federation's treasurer sees none of it."""

from __future__ import annotations

import io
import uuid

import pytest
from pypdf import PdfReader
from support import NewFederation, create_federation, create_member, eventually

pytestmark = pytest.mark.e2e

DONOR = {"natural_person": True, "nationality": "FR", "resides_in_france": True}


Fed = NewFederation
federation = create_federation


def member(admin, fed: Fed) -> str:
    return create_member(admin, fed, given_name="Jeanne")


def standing(user, contact_id: str) -> list[bool]:
    r = user("GET", "/api/v1/memberships", params={"contact_id": contact_id})
    assert r.status_code == 200, r.text
    return [m["in_good_standing"] for m in r.json()["items"]]


def test_a_cheque_makes_a_member_up_to_date_goes_on_a_slip_and_a_refund_takes_it_back(
    admin, new_user
):
    fed = federation(admin, "Gironde")
    other = federation(admin, "Var")
    treasurer = new_user("treasurer", fed)
    stranger = new_user("treasurer", other)
    contact = member(admin, fed)

    entry = {
        "contact_id": contact,
        "amount_cents": 3000,
        "method": "cheque",
        "purpose": "dues",
        "donor": DONOR,
        "cheque": {"number": "7654321", "bank": "Caisse d'Épargne", "drawer": "Jeanne A."},
    }
    key = {"Idempotency-Key": uuid.uuid4().hex}
    # memberships learns the new contact from its event: until then 404; the key makes the
    # retries one payment
    r = eventually(
        lambda: treasurer("POST", "/api/v1/payments/manual", json=entry, headers=key),
        lambda r: r.status_code != 404,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    paid = r.json()
    assert paid["status"] == "recorded" and paid["membership_status"] == "active"
    assert standing(treasurer, contact) == [True]
    again = treasurer("POST", "/api/v1/payments/manual", json=entry, headers=key)
    assert again.status_code == 200 and again.json()["payment_id"] == paid["payment_id"]

    waiting = treasurer("GET", "/api/v1/payments", params={"unremitted": "true"})
    assert [p["payment_id"] for p in waiting.json()["items"]] == [paid["payment_id"]]
    assert stranger("GET", f"/api/v1/payments/{paid['payment_id']}").status_code == 404

    r = treasurer("POST", "/api/v1/payments/slips", json={"bank": "Crédit Coopératif"})
    assert r.status_code == 201, r.text
    slip = r.json()
    assert (slip["number"], slip["count"], slip["total_cents"]) == (1, 1, 3000)
    assert [c["payment_id"] for c in slip["cheques"]] == [paid["payment_id"]]
    csv = treasurer("GET", f"/api/v1/payments/slips/{slip['slip_id']}/csv")
    assert csv.status_code == 200 and "7654321" in csv.text and "Jeanne A." in csv.text
    pdf = treasurer("GET", f"/api/v1/payments/slips/{slip['slip_id']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "7654321" in text and "30,00 EUR" in text
    assert treasurer("GET", "/api/v1/payments", params={"unremitted": "true"}).json()["items"] == []
    assert stranger("GET", f"/api/v1/payments/slips/{slip['slip_id']}").status_code == 404

    # the cheque bounced: a chargeback takes the standing back
    r = treasurer(
        "POST",
        f"/api/v1/payments/{paid['payment_id']}/refund",
        json={"kind": "chargeback", "reason": "chèque impayé", "reference": "CI-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "charged_back"
    assert r.json()["membership_status"] == "cancelled"
    assert standing(treasurer, contact) == [False]
    read = treasurer("GET", f"/api/v1/payments/{paid['payment_id']}").json()
    assert read["status"] == "charged_back" and read["reversal"]["reason"] == "chèque impayé"
    twice = treasurer(
        "POST",
        f"/api/v1/payments/{paid['payment_id']}/refund",
        json={"kind": "refund", "reason": "again"},
    )
    assert twice.status_code == 409, twice.text
