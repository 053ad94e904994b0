"""The yearly list of donors and members a party files with the CNCCFP (loi n° 88-227 du
11 mars 1988, art. 11-4; décret n° 90-606 du 9 juillet 1990, art. 11-1), as the
tab-separated file its platform takes (pure: payments in, lines out).

Columns: those the arrêté of 9 September 2014 lists for the mandataire's TSV file of
dues and gifts (see the README for the source); the arrêté of 14 August 2023 that
replaced it could not be read in full, so the columns and their order are configurable
(``MEMBERSHIPS_RECEIPTS.cnccfp_columns``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any

from memberships.receipts.domain import METHOD_LABELS
from memberships.receipts.settings import CnccfpColumn, ReceiptsSettings

HEADERS: dict[str, str] = {
    "record_id": "Identifiant de l'enregistrement comptable",
    "nature": "Nature du paiement",
    "payment_date": "Date du paiement",
    "donor_id": "Identifiant du donateur ou cotisant",
    "civility": "Civilité",
    "given_name": "Prénom",
    "family_name": "Nom",
    "elected_mandate": "Mandat électoral (élus)",
    "tax_address": "Adresse du domicile fiscal",
    "tax_commune": "Commune du domicile fiscal",
    "tax_postcode": "Code postal du domicile fiscal",
    "tax_country": "État du domicile fiscal",
    "currency": "Monnaie",
    "amount": "Montant",
    "bank_statement": "Référence du relevé bancaire",
    "remittance_slip": "Numéro du bordereau de remise",
    "payment_method": "Mode de paiement",
    "receipt_number": "Numéro du reçu",
}


def clean(value: Any) -> str:
    """One TSV field: no tab or line break inside (they would shift the columns)."""
    text = "" if value is None else str(value)
    return " ".join(text.replace("\t", " ").split())


def amount(cents: int) -> str:
    """150,00: French decimal comma, no thousands separator."""
    return f"{cents // 100},{cents % 100:02d}"


def nature(payment: Mapping[str, Any]) -> str:
    if payment["purpose"] == "donation":
        return "Don"
    return "Cotisation d'élu" if payment.get("elected_official") else "Cotisation"


def row(
    payment: Mapping[str, Any],
    paid_on: date,
    donor: Mapping[str, Any] | None,
    receipt_number: str | None,
    config: ReceiptsSettings,
) -> dict[str, str]:
    donor = donor or {}
    details = payment.get("details") or {}
    postcode = donor.get("postcode") or ""
    values: dict[str, Any] = {
        "record_id": payment["_id"],
        "nature": nature(payment),
        "payment_date": paid_on.strftime("%d/%m/%Y"),
        "donor_id": payment["contact_id"],
        "civility": donor.get("civility", ""),
        "given_name": donor.get("given_name", ""),
        "family_name": donor.get("family_name", ""),
        "elected_mandate": "élu" if payment.get("elected_official") else "",
        "tax_address": ", ".join(donor.get("address_lines") or []),
        "tax_commune": donor.get("commune", ""),
        "tax_postcode": postcode,
        "tax_country": config.default_country if postcode else "",
        "currency": payment.get("currency", "EUR"),
        "amount": amount(int(payment["amount_cents"])),
        "bank_statement": details.get("bank_statement", ""),
        "remittance_slip": payment.get("slip_number") or details.get("slip_number", ""),
        "payment_method": METHOD_LABELS.get(payment["method"], payment["method"]),
        "receipt_number": receipt_number or "",
    }
    return {k: clean(v) for k, v in values.items()}


def header_line(columns: Iterable[CnccfpColumn]) -> str:
    return "\t".join(HEADERS[c] for c in columns) + "\n"


def line(values: Mapping[str, str], columns: Iterable[CnccfpColumn]) -> str:
    return "\t".join(values[c] for c in columns) + "\n"


def lines(
    payments: Iterable[Mapping[str, Any]],
    *,
    day_of: Callable[[Mapping[str, Any]], date],
    donors: Mapping[str, Mapping[str, Any]],
    receipts: Mapping[str, str],
    config: ReceiptsSettings,
) -> list[str]:
    """The file's lines for a batch of payments (donors by contact id, receipt numbers by
    payment id)."""
    return [
        line(
            row(p, day_of(p), donors.get(p["contact_id"]), receipts.get(p["_id"]), config),
            config.cnccfp_columns,
        )
        for p in payments
    ]
