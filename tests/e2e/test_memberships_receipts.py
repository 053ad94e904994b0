"""Tax receipts through the gateway on the real processes: a payment's receipt is issued
by the memberships worker (payment-received), its PDF downloads for the treasurer, and
the CNCCFP file exports with the donor and the receipt number."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader
from support import eventually
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e


def donor(user, tag: str) -> dict:
    r = user(
        "POST",
        "/api/v1/contacts",
        json={
            "given_name": "Louise",
            "family_name": f"Michel-{tag}",
            "email": f"louise.{tag}@example.fr",
            "origin": {"kind": "event", "detail": "fête"},
            "address": {"lines": ["8 rue des Cerisiers"], "postcode": "75011", "commune": "Paris"},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def give(stack, http, contact_id: str, cents: int) -> str:
    body = json.dumps(
        {
            "provider": "helloasso",
            "provider_payment_id": f"pay-{uuid.uuid4().hex}",
            "contact_id": contact_id,
            "amount_cents": cents,
            "currency": "EUR",
            "method": "card",
            "purpose": "donation",
            "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
        }
    ).encode()
    secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    r = eventually(  # memberships learns the contact from contact-created
        lambda: http.post(
            "/api/v1/webhooks/payments",
            content=body,
            headers={"Content-Type": "application/json", **signature_headers(secret, body)},
        ),
        lambda r: r.status_code == 201,
    )
    assert r.json()["status"] == "recorded", r.text
    return r.json()["payment_id"]


def test_after_a_gift_its_receipt_pdf_downloads_and_the_cnccfp_file_exports(
    stack, http, federations, new_user
):
    paris = federations["Paris"]
    treasurer = new_user("treasurer", paris)
    tag = uuid.uuid4().hex[:8]
    person = donor(paris.user, tag)
    payment_id = give(stack, http, person["id"], 12_000)

    listed = eventually(
        lambda: treasurer("GET", "/api/v1/receipts", params={"contact_id": person["id"]}),
        lambda r: r.status_code == 200 and r.json()["items"],
        timeout=60,
    )
    [receipt] = listed.json()["items"]
    assert receipt["payment_id"] == payment_id
    assert receipt["amount_cents"] == 12_000 and receipt["status"] == "issued"
    assert receipt["amount_words"] == "cent vingt euros"

    pdf = treasurer("GET", f"/api/v1/receipts/{receipt['receipt_id']}/pdf")
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert receipt["number"] in text
    assert "120,00 EUR" in text
    assert f"Louise Michel-{tag}" in text

    # the secretary reads no money documents; Lyon's treasurer does not see Paris's
    assert paris.user("GET", f"/api/v1/receipts/{receipt['receipt_id']}").status_code == 403
    lyon_treasurer = new_user("treasurer", federations["Lyon"])
    assert lyon_treasurer("GET", f"/api/v1/receipts/{receipt['receipt_id']}").status_code == 404

    year = datetime.now(UTC).year
    exported = treasurer("GET", "/api/v1/treasury/cnccfp", params={"year": year})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/tab-separated-values")
    [line] = [row for row in exported.text.splitlines() if payment_id in row]
    fields = line.split("\t")
    assert f"Michel-{tag}" in fields and "120,00" in fields and receipt["number"] in fields
