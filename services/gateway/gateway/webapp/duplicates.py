"""Pure rules of the back office's duplicates review: how a likely pair is described, how
two contacts are shown field by field, and how the review form becomes the body of
POST /api/v1/contacts/{survivor}/merge. No I/O here (gateway.webapp.duplicates_service
calls the API)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: contacts.merge.MERGE_FIELDS: field -> the choices it takes, the first the API's default
#: (a unit test holds the two equal)
MERGE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "given_name": ("auto", "survivor", "merged"),
    "family_name": ("auto", "survivor", "merged"),
    "emails": ("union", "survivor", "merged"),
    "phones": ("union", "survivor", "merged"),
    "address": ("auto", "survivor", "merged"),
    "constituency": ("auto", "survivor", "merged"),
    "polling_station": ("auto", "survivor", "merged"),
    "birth_year": ("auto", "survivor", "merged"),
    "tags": ("union", "survivor", "merged"),
    "custom_fields": ("union", "survivor", "merged"),
}
#: the API's duplicates cursor is opaque url-safe base64, at most this long
MAX_CURSOR_CHARS = 500
_CURSOR = re.compile(r"^[A-Za-z0-9_-]+$")
#: the version fields a stale read is refused on (contacts.merge_service: 409)
VERSION_FIELDS = ("survivor_version", "merged_version")


def valid_cursor(value: str | None) -> str | None:
    """The duplicates cursor from the query when it could be one the API gave."""
    if value and len(value) <= MAX_CURSOR_CHARS and _CURSOR.match(value):
        return value
    return None


def display_name(contact: Mapping[str, Any]) -> str:
    return f"{contact.get('given_name') or ''} {contact.get('family_name') or ''}".strip()


def emails_of(contact: Mapping[str, Any]) -> list[str]:
    found = [str(e.get("address")) for e in contact.get("emails") or [] if isinstance(e, dict)]
    if not found and contact.get("email"):
        found = [str(contact["email"])]
    return found


def field_text(name: str, contact: Mapping[str, Any]) -> str:
    """One merge field of a contact as a line of text ("" when it has none)."""
    value = contact.get(name)
    if name == "emails":
        return ", ".join(emails_of(contact))
    if name == "phones":
        numbers = [str(p.get("number")) for p in value or [] if isinstance(p, dict)]
        return ", ".join(numbers or ([str(contact["phone"])] if contact.get("phone") else []))
    if name == "address":
        if not isinstance(value, dict):
            return str(contact.get("postcode") or "")
        parts = [*(value.get("lines") or []), value.get("postcode"), value.get("commune")]
        return ", ".join(str(p) for p in parts if p)
    if name == "tags":
        return ", ".join(str(t) for t in value or [])
    if name == "custom_fields":
        return ", ".join(f"{k}: {v}" for k, v in sorted((value or {}).items()))
    return "" if value is None else str(value)


@dataclass(frozen=True)
class FieldRow:
    """One line of the review: the field, both values, the choices and the one picked."""

    name: str
    survivor: str
    merged: str
    choices: tuple[str, ...]
    chosen: str

    @property
    def same(self) -> bool:
        return self.survivor == self.merged


def field_rows(
    survivor: Mapping[str, Any],
    merged: Mapping[str, Any],
    chosen: Mapping[str, str] | None = None,
) -> list[FieldRow]:
    """Every merge field side by side, with the choice the form had (a 409 or 422 shows
    the page again with the user's choices) or the API's default."""
    chosen = chosen or {}
    rows = []
    for name, choices in MERGE_FIELDS.items():
        pick = chosen.get(name)
        rows.append(
            FieldRow(
                name=name,
                survivor=field_text(name, survivor),
                merged=field_text(name, merged),
                choices=choices,
                chosen=pick if pick in choices else choices[0],
            )
        )
    return rows


@dataclass(frozen=True)
class MergeForm:
    """The review form as posted: the pair, the versions read, a choice per field."""

    survivor_id: str
    merged_id: str
    survivor_version: int | None
    merged_version: int | None
    choices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, values: Mapping[str, str | None]) -> MergeForm:
        """From the form's fields (``field.<name>`` per merge field); what is not a known
        field or a choice it takes is left out (the API's default then applies)."""
        choices = {}
        for name, allowed in MERGE_FIELDS.items():
            value = values.get(f"field.{name}")
            if value in allowed:
                choices[name] = value
        return cls(
            survivor_id=values.get("survivor_id") or "",
            merged_id=values.get("merged_id") or "",
            survivor_version=_version(values.get("survivor_version")),
            merged_version=_version(values.get("merged_version")),
            choices=choices,
        )

    def body(self) -> dict[str, Any]:
        """The POST /api/v1/contacts/{survivor_id}/merge body."""
        body: dict[str, Any] = {"merged_id": self.merged_id, "fields": dict(self.choices)}
        if self.survivor_version is not None:
            body["survivor_version"] = self.survivor_version
        if self.merged_version is not None:
            body["merged_version"] = self.merged_version
        return body


def _version(value: str | None) -> int | None:
    """The version read, when it is one (a page always sends it; without it the API merges
    without the check, as it would for any API client)."""
    if not (value and value.isdigit() and len(value) <= 18) or int(value) < 1:
        return None
    return int(value)


def stale(status: int, errors: list[tuple[str, str]]) -> bool:
    """A 409 saying one of the contacts changed since it was read (the page then shows the
    fresh values), as opposed to another refusal (two federations: said as the API says)."""
    if status != 409:
        return False
    return any(f in VERSION_FIELDS or "changed" in r for f, r in errors)


#: names a merge log's ``changed_fields`` may hold besides the merge fields (mirrors of
#: the primary email, the first phone, the address's postcode) -> the merge field shown
_MIRRORS = {"email": "emails", "phone": "phones", "postcode": "address"}


def changed_labels(changed: list[str]) -> list[tuple[str, str]]:
    """A merge's changed fields as (text key, name), once each: the key of the merge
    field's label ("" for a name the screens have no text for: shown as it is)."""
    out: dict[str, tuple[str, str]] = {}
    for name in changed:
        base = _MIRRORS.get(name, name.split(".", 1)[0])
        if base in MERGE_FIELDS:
            out.setdefault(base, (f"merge.field.{base}", base))
        else:
            out.setdefault(name, ("", name))
    return list(out.values())
