"""What a receipt says, frozen at issue, and how it may change."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from memberships.people.domain import PersonIdentity
from memberships.receipts.domain import (
    add_years,
    cancellation,
    check_cancellable,
    check_reissuable,
    paid_day,
    receipt_doc,
    tax_reduction_cents,
)
from memberships.receipts.numbering import Series
from memberships.receipts.settings import ReceiptsSettings
from tribune_shared.errors import Refused

ISSUED = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def payment(**changes):
    doc = {
        "_id": "p1",
        "contact_id": "c1",
        "federation_id": "paris",
        "federation_path": "/root/paris/",
        "amount_cents": 15_000,
        "currency": "EUR",
        "method": "cheque",
        "purpose": "donation",
        "status": "accepted",
        "paid_at": datetime(2026, 3, 1, 10, tzinfo=UTC),
    }
    doc.update(changes)
    return doc


DONOR = PersonIdentity(
    contact_id="c1",
    given_name="Marianne",
    family_name="Dupont",
    address_lines=("12 rue de la Roquette",),
    postcode="75011",
    commune="Paris",
)


def issue(donor=DONOR, **changes):
    return receipt_doc(
        receipt_id="r1",
        issue_key="p1",
        series=Series(2026),
        seq=42,
        payment=payment(**changes),
        paid_on=date(2026, 3, 1),
        donor=donor,
        config=ReceiptsSettings(),
        issued_at=ISSUED,
    )


def test_a_receipt_carries_what_the_form_asks():
    doc = issue()
    assert doc["number"] == "2026-000042"
    assert doc["amount_cents"] == 15_000
    assert doc["amount_words"] == "cent cinquante euros"
    assert doc["paid_on"] == "2026-03-01"
    assert doc["method"] == "cheque" and doc["nature"] == "donation"
    assert doc["donor"]["family_name"] == "Dupont"
    assert doc["identity_complete"] is True
    assert doc["issuer"]["beneficiary_type"] == "financing_association"
    assert doc["tax_reduction_percent"] == 66
    assert doc["status"] == "issued"
    assert [h["action"] for h in doc["history"]] == ["issued"]


def test_a_receipt_without_a_full_address_says_so():
    partial = PersonIdentity(contact_id="c1", family_name="Dupont")
    assert issue(donor=partial)["identity_complete"] is False
    assert issue(donor=None)["identity_complete"] is False
    assert issue(donor=None)["donor"] is None


def test_the_donor_identity_is_kept_six_years_from_issue_by_default():
    assert issue()["retain_until"] == datetime(2032, 3, 14, 9, 30, tzinfo=UTC)
    assert add_years(datetime(2024, 2, 29, tzinfo=UTC), 6) == datetime(2030, 2, 28, tzinfo=UTC)


def test_a_cancelled_receipt_cannot_be_cancelled_or_reissued_again():
    doc = issue()
    fields, entry = cancellation(at=ISSUED, by="u1", reason="erreur", kind="cancelled")
    assert fields["status"] == "cancelled" and entry["reason"] == "erreur"
    doc.update(fields)
    with pytest.raises(Refused):
        check_cancellable(doc)
    with pytest.raises(Refused):
        check_reissuable(doc, payment())


def test_a_refunded_payment_gets_no_new_receipt():
    with pytest.raises(Refused):
        check_reissuable(issue(), payment(status="refunded"))
    check_reissuable(issue(), payment())  # accepted: fine


def test_a_reissue_cancellation_names_the_replacement():
    fields, entry = cancellation(
        at=ISSUED, by="u1", reason="adresse", kind="reissued", replaced_by="r2"
    )
    assert fields["replaced_by"] == "r2" and entry["replaced_by"] == "r2"


def test_the_day_of_a_payment_is_the_organisations_day():
    late = payment(paid_at=datetime(2025, 12, 31, 23, 30, tzinfo=UTC))
    assert paid_day(late, ZoneInfo("Europe/Paris")) == date(2026, 1, 1)


def test_the_reduction_mentioned_is_66_percent_rounded_down():
    assert tax_reduction_cents(15_000, 66) == 9_900
    assert tax_reduction_cents(1, 66) == 0
