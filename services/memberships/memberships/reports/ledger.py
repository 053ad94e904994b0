"""The treasurer's ledger: payments and refunds in time order with running totals (pure).

Money captured but refused by the law (``flagged_for_refund``) was received all the same:
the ledger shows it in its own total (money owed back), never in dues or donations; its
refund brings that total back down."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tribune_shared.spreadsheet import neutralise

Bucket = Literal["dues", "donations", "flagged"]

COLUMNS = (
    "at",
    "kind",
    "payment_id",
    "refund_id",
    "contact_id",
    "federation_id",
    "purpose",
    "method",
    "amount_cents",
    "currency",
    "receipt_number",
    "dues_total_cents",
    "donations_total_cents",
    "flagged_total_cents",
    "balance_cents",
)


@dataclass(frozen=True)
class Entry:
    """One movement of money: a payment in (amount > 0) or a refund out (amount < 0)."""

    at: datetime
    kind: Literal["payment", "refund", "chargeback"]
    payment_id: str
    amount_cents: int
    bucket: Bucket
    purpose: str
    method: str | None = None
    currency: str = "EUR"
    refund_id: str | None = None
    contact_id: str | None = None
    federation_id: str | None = None
    receipt_number: str | None = None
    order: str = ""  # ties at the same instant: a stable order


def bucket_of(purpose: str, flagged: bool) -> Bucket:
    if flagged:
        return "flagged"
    return "dues" if purpose == "dues" else "donations"


def payment_entry(doc: Mapping[str, Any]) -> Entry:
    flagged = doc.get("status") == "flagged_for_refund" or bool(doc.get("refusal"))
    return Entry(
        at=doc["paid_at"],
        kind="payment",
        payment_id=doc["_id"],
        amount_cents=int(doc["amount_cents"]),
        bucket=bucket_of(doc["purpose"], flagged),
        purpose=doc["purpose"],
        method=doc.get("method"),
        currency=doc.get("currency", "EUR"),
        contact_id=doc.get("contact_id"),
        federation_id=doc.get("federation_id"),
        receipt_number=doc.get("receipt_number"),
        order=f"0:{doc['_id']}",
    )


def refund_entry(doc: Mapping[str, Any]) -> Entry:
    return Entry(
        at=doc["refunded_at"],
        kind=doc["kind"],
        payment_id=doc["payment_id"],
        amount_cents=-int(doc["amount_cents"]),
        bucket=bucket_of(doc["purpose"], bool(doc.get("flagged"))),
        purpose=doc["purpose"],
        currency=doc.get("currency", "EUR"),
        refund_id=doc["_id"],
        federation_id=doc.get("federation_id"),
        order=f"1:{doc['_id']}",
    )


@dataclass
class Totals:
    dues_cents: int = 0
    donations_cents: int = 0
    flagged_cents: int = 0

    @property
    def balance_cents(self) -> int:
        return self.dues_cents + self.donations_cents + self.flagged_cents

    def add(self, entry: Entry) -> None:
        if entry.bucket == "dues":
            self.dues_cents += entry.amount_cents
        elif entry.bucket == "donations":
            self.donations_cents += entry.amount_cents
        else:
            self.flagged_cents += entry.amount_cents

    def as_dict(self) -> dict[str, int]:
        return {
            "dues_total_cents": self.dues_cents,
            "donations_total_cents": self.donations_cents,
            "flagged_total_cents": self.flagged_cents,
            "balance_cents": self.balance_cents,
        }


def running(entries: Iterable[Entry], totals: Totals | None = None) -> Iterator[dict[str, Any]]:
    """Rows with the totals after each entry; ``entries`` in time order."""
    totals = totals if totals is not None else Totals()
    for entry in entries:
        totals.add(entry)
        yield {
            "at": entry.at,
            "kind": entry.kind,
            "payment_id": entry.payment_id,
            "refund_id": entry.refund_id,
            "contact_id": entry.contact_id,
            "federation_id": entry.federation_id,
            "purpose": entry.purpose,
            "method": entry.method,
            "amount_cents": entry.amount_cents,
            "currency": entry.currency,
            "receipt_number": entry.receipt_number,
            **totals.as_dict(),
        }


def sort_key(entry: Entry) -> tuple[datetime, str]:
    return (entry.at, entry.order)


def csv_value(value: Any) -> str:
    """A cell of the ledger CSV: numbers as they are (a refund's -3000 stays a number),
    text made safe against formula injection."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float):
        return str(value)
    return neutralise(str(value))
