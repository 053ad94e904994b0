"""The receipt PDF, read back as a donor's software would."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

from memberships.people.domain import PersonIdentity
from memberships.receipts.domain import cancellation, receipt_doc
from memberships.receipts.numbering import Series
from memberships.receipts.pdf import latin1, render_receipt
from memberships.receipts.settings import ReceiptsSettings
from pypdf import PdfReader


def _doc(**changes):
    payment = {
        "_id": "p1",
        "contact_id": "c1",
        "federation_id": "paris",
        "federation_path": "/root/paris/",
        "amount_cents": 750_000,
        "currency": "EUR",
        "method": "transfer",
        "purpose": "donation",
        **changes,
    }
    donor = PersonIdentity(
        contact_id="c1",
        given_name="Éloïse",
        family_name="Lefèvre",
        address_lines=("3 allée des Œillets",),
        postcode="69003",
        commune="Lyon",
    )
    return receipt_doc(
        receipt_id="r1",
        issue_key="p1",
        series=Series(2026),
        seq=7,
        payment=payment,
        paid_on=date(2026, 5, 2),
        donor=donor,
        config=ReceiptsSettings(issuer_name="Association de financement du Parti"),
        issued_at=datetime(2026, 5, 3, tzinfo=UTC),
    )


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_pdf_shows_number_amount_words_and_donor():
    pdf = render_receipt(_doc())
    assert pdf.startswith(b"%PDF")
    text = text_of(pdf)
    assert "2026-000007" in text
    assert "7\u00a0500,00 EUR" in text or "7 500,00 EUR" in text
    assert "sept mille cinq cents euros" in text
    assert "Éloïse Lefèvre" in text
    assert "69003 Lyon" in text
    assert "02/05/2026" in text
    assert "Virement" in text
    assert "66 %" in text
    assert "Association de financement du Parti" in text


def test_a_cancelled_receipt_says_so_on_the_pdf():
    doc = _doc()
    fields, _ = cancellation(
        at=datetime(2026, 6, 1, tzinfo=UTC), by="u", reason="remboursé", kind="refund"
    )
    doc.update(fields)
    assert "ANNULÉ" in text_of(render_receipt(doc))


def test_characters_outside_latin1_are_transliterated_never_dropped():
    assert latin1("Łukasz Œuvre 5 €") == "Lukasz OEuvre 5 EUR"
    assert latin1("李") == "?"
