"""CSV export of contacts, free of I/O: the columns, one row per contact, and cells made
safe for spreadsheets (CSV injection: a cell starting with = + - @ or a tab/CR would be
read as a formula by Excel, LibreOffice or Google Sheets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# the kernel's spreadsheet-safe CSV (memberships' exports write theirs the same way)
from tribune_shared.spreadsheet import BOM, FORMULA_STARTS, encode_rows, neutralise

from contacts.domain import Contact

__all__ = ["BOM", "FORMULA_STARTS", "encode_rows", "header", "neutralise", "row"]

#: several values in one cell (emails, phones, tags, address lines)
JOIN = " | "

BASE_COLUMNS = (
    "id",
    "federation_id",
    "given_name",
    "family_name",
    "email",
    "other_emails",
    "phone",
    "other_phones",
    "address_lines",
    "postcode",
    "commune",
    "commune_insee",
    "department",
    "constituency",
    "polling_station",
    "birth_year",
    "tags",
)
TAIL_COLUMNS = (
    "origin_kind",
    "origin_detail",
    "origin_collected_on",
    "created_at",
    "updated_at",
)


def header(custom_names: Sequence[str]) -> list[str]:
    return [*BASE_COLUMNS, *(f"custom.{n}" for n in custom_names), *TAIL_COLUMNS]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def row(contact: Contact, custom_names: Sequence[str]) -> list[str]:
    address = contact.address
    values: list[Any] = [
        contact.id,
        contact.federation_id,
        contact.given_name,
        contact.family_name,
        contact.email,
        JOIN.join(e.address for e in contact.emails if e.address != contact.email),
        contact.phone,
        JOIN.join(p.number for p in contact.phones[1:]),
        JOIN.join(address.lines) if address else "",
        address.postcode if address else None,
        address.commune if address else None,
        address.commune_insee if address else None,
        address.department if address else None,
        contact.constituency,
        contact.polling_station,
        contact.birth_year,
        JOIN.join(contact.tags),
        *(contact.custom_fields.get(n) for n in custom_names),
        contact.origin.kind.value,
        contact.origin.detail,
        contact.origin.collected_on.isoformat() if contact.origin.collected_on else None,
        contact.created_at.isoformat(),
        contact.updated_at.isoformat(),
    ]
    return [neutralise(_text(v)) for v in values]
