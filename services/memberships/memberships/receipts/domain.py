"""Tax receipts (reçus fiscaux): what one says and how it may change (pure rules).

A receipt is issued for every accepted payment (dues or gift), frozen at issue: the donor
identity and address it carries are those known that day. It is never edited: it can be
cancelled (the number is never reused) or reissued (a new number; the old receipt is
cancelled and points to the new one), each with who, when and why."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from tribune_shared.errors import Refused

from memberships.people.domain import PersonIdentity
from memberships.receipts.numbering import Series, format_number
from memberships.receipts.settings import ReceiptsSettings
from memberships.receipts.words import euros_in_words


class ReceiptStatus(StrEnum):
    issued = "issued"
    cancelled = "cancelled"


#: how the receipt names each payment method ("mode de versement")
METHOD_LABELS = {
    "cash": "Espèces",
    "cheque": "Chèque",
    "transfer": "Virement",
    "debit": "Prélèvement",
    "card": "Carte bancaire",
}
#: the receipt's "nature" line
NATURE_LABELS = {"dues": "Cotisation", "donation": "Don"}
BENEFICIARY_LABELS = {
    "political_party": "Parti ou groupement politique (CGI art. 200, 3)",
    "financing_association": "Association de financement d'un parti politique "
    "(loi n° 88-227 du 11 mars 1988, art. 11-1 ; CGI art. 200, 3)",
}
#: statuses of a payment that still carries a receipt
RECEIPTABLE_PAYMENT = "accepted"


def add_years(moment: datetime, years: int) -> datetime:
    """``moment`` plus whole years (February 29 becomes February 28)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def receipt_doc(
    *,
    receipt_id: str,
    issue_key: str,
    series: Series,
    seq: int,
    payment: dict[str, Any],
    paid_on: date,
    donor: PersonIdentity | None,
    config: ReceiptsSettings,
    issued_at: datetime,
    replaces: str | None = None,
    issued_by: str | None = None,
) -> dict[str, Any]:
    """The stored receipt: everything the form shows, frozen at issue."""
    amount = int(payment["amount_cents"])
    currency = payment.get("currency", "EUR")
    purpose = payment["purpose"]
    return {
        "_id": receipt_id,
        # one receipt per payment (its id), one reissue per receipt ("<id>:reissue")
        "issue_key": issue_key,
        "series": series.key,
        "seq": seq,
        "number": format_number(series, seq, config.number_digits),
        "status": ReceiptStatus.issued.value,
        "payment_id": payment["_id"],
        "contact_id": payment["contact_id"],
        "federation_id": payment["federation_id"],
        "federation_path": payment["federation_path"],
        "nature": purpose,
        "elected_official": bool(payment.get("elected_official")),
        "amount_cents": amount,
        "currency": currency,
        "amount_words": euros_in_words(amount, currency),
        "paid_on": paid_on.isoformat(),
        "method": payment["method"],
        "donor": donor.as_doc() if donor else None,
        # a receipt without a name and full address is not what the law asks: shown, so a
        # treasurer completes the contact and reissues it
        "identity_complete": bool(donor and donor.complete),
        "issuer": {
            "name": config.issuer_name,
            "address": config.issuer_address,
            "object": config.issuer_object,
            "beneficiary_type": config.beneficiary_type,
            "identifier": config.issuer_identifier,
            "signatory": config.signatory,
        },
        "tax_reduction_percent": config.tax_reduction_percent,
        "issued_at": issued_at,
        "issued_by": issued_by,
        "retain_until": add_years(issued_at, config.retention_years),
        "replaces": replaces,
        "replaced_by": None,
        "cancellation": None,
        "history": [_entry("issued", issued_at, issued_by, None, replaces=replaces)],
    }


def _entry(
    action: str, at: datetime, by: str | None, reason: str | None, **extra: Any
) -> dict[str, Any]:
    return {"action": action, "at": at, "by": by, "reason": reason, **extra}


def check_cancellable(receipt: dict[str, Any]) -> None:
    if receipt["status"] != ReceiptStatus.issued.value:
        raise Refused(
            f"receipt {receipt['number']} is already cancelled (its number is never reused)",
            field="receipt_id",
        )


def check_reissuable(receipt: dict[str, Any], payment: dict[str, Any] | None) -> None:
    check_cancellable(receipt)
    if payment is None or payment.get("status") != RECEIPTABLE_PAYMENT:
        status = payment.get("status") if payment else "unknown"
        raise Refused(
            f"the payment of receipt {receipt['number']} is {status}: no receipt can replace it",
            field="receipt_id",
        )


def cancellation(
    *, at: datetime, by: str | None, reason: str, kind: str, replaced_by: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``$set`` and the history entry of a cancellation. ``kind``: cancelled (by hand),
    reissued, refund, chargeback."""
    detail = {"at": at, "by": by, "reason": reason, "kind": kind}
    fields: dict[str, Any] = {"status": ReceiptStatus.cancelled.value, "cancellation": detail}
    if replaced_by:
        fields["replaced_by"] = replaced_by
    return fields, _entry("cancelled", at, by, reason, kind=kind, replaced_by=replaced_by)


def paid_day(payment: dict[str, Any], zone) -> date:
    paid_at: datetime = payment["paid_at"]
    if paid_at.tzinfo is None:  # stored in UTC; a naive read means UTC
        paid_at = paid_at.replace(tzinfo=UTC)
    return paid_at.astimezone(zone).date()


def tax_reduction_cents(amount_cents: int, percent: int) -> int:
    """The reduction the mention announces (rounded down to the cent)."""
    return amount_cents * percent // 100
