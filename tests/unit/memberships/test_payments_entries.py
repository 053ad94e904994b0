"""What a treasurer's manual entry and a schedule accept, and the slip's PDF."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pytest
from memberships.payments.api import ManualEntryIn, PaymentNoticeIn, ScheduleIn
from memberships.payments.domain import SlipLine
from memberships.payments.slips import render_slip_pdf
from pydantic import ValidationError
from pypdf import PdfReader

CHEQUE = {
    "contact_id": "c1",
    "amount_cents": 3000,
    "method": "cheque",
    "purpose": "dues",
    "cheque": {"number": "1234567", "bank": "Crédit Mutuel", "drawer": "Ada Lovelace"},
}


def fields_of(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(map(str, e["loc"])) for e in exc.value.errors()}


def test_a_cheque_entry_keeps_its_number_bank_and_drawer():
    entry = ManualEntryIn.model_validate({**CHEQUE, "currency": "eur"}).entry()
    assert entry.currency == "EUR"
    assert entry.details == {
        "cheque_number": "1234567",
        "bank": "Crédit Mutuel",
        "drawer": "Ada Lovelace",
    }
    assert entry.paid_on is None and entry.donor is None


def test_a_transfer_keeps_its_reference_and_cash_needs_nothing():
    transfer = ManualEntryIn.model_validate(
        {**CHEQUE, "method": "transfer", "cheque": None, "transfer": {"reference": "VIR-42"}}
    ).entry()
    assert transfer.details == {"transfer_reference": "VIR-42"}
    cash = ManualEntryIn.model_validate(
        {**CHEQUE, "method": "cash", "cheque": None, "purpose": "donation"}
    ).entry()
    assert cash.details == {} and cash.method == "cash"


@pytest.mark.parametrize(
    "changes",
    [
        {"cheque": None},  # a cheque without its number and bank
        {"method": "transfer"},  # transfer without reference, and cheque details on it
        {"method": "card"},  # cards come from providers, not by hand
        {"amount_cents": 0},
        {"amount_cents": "3000"},  # strict: no numeric strings
        {"currency": "EURO"},
        {"cheque": {"number": "12;DROP", "bank": "B"}},
        {"contact_id": "../x"},
        {"unknown": 1},
    ],
)
def test_malformed_manual_entries_are_refused(changes):
    with pytest.raises(ValidationError):
        ManualEntryIn.model_validate({**CHEQUE, **changes})


def test_the_webhook_carries_a_schedule_id():
    notice = PaymentNoticeIn.model_validate(
        {
            "provider": "stripe",
            "provider_payment_id": "pi_1",
            "contact_id": "c1",
            "amount_cents": 1000,
            "currency": "EUR",
            "method": "debit",
            "purpose": "donation",
            "paid_at": datetime.now(UTC).isoformat(),
            "schedule_id": "s-1",
        }
    ).notice()
    assert notice.schedule_id == "s-1" and notice.captured


def test_a_schedule_names_plans_for_dues_only():
    base = {
        "contact_id": "c1",
        "amount_cents": 500,
        "purpose": "donation",
        "interval": "monthly",
        "next_due_on": "2030-01-05",
        "method": "debit",
    }
    assert ScheduleIn.model_validate(base).interval == "monthly"
    with pytest.raises(ValidationError):
        ScheduleIn.model_validate({**base, "plan": "annual"})
    with pytest.raises(ValidationError) as bad:
        ScheduleIn.model_validate({**base, "interval": "weekly"})
    assert "interval" in fields_of(bad)


def test_the_slip_pdf_shows_its_number_cheques_and_total():
    slip = {
        "federation_id": "paris",
        "number": 12,
        "bank": "Banque Populaire Rives de Paris",
        "remitted_on": "2025-03-04",
        "count": 2,
        "total_cents": 8000,
        "currency": "EUR",
    }
    lines = [
        SlipLine("a", "0001", "Crédit Agricole", "Ada Lovelace", date(2025, 3, 1), 3000),
        SlipLine("b", "0002", "LCL", "Émile Zoł", date(2025, 3, 2), 5000),
    ]
    text = "\n".join(
        page.extract_text() for page in PdfReader(io.BytesIO(render_slip_pdf(slip, lines))).pages
    )
    assert "Bordereau de remise de chèques" in text
    assert "paris-00012" in text
    assert "Ada Lovelace" in text and "0002" in text
    assert "80,00 EUR" in text
    assert "Émile Zo?" in text  # outside Latin-1: replaced, not an error
