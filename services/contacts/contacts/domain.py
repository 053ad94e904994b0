"""Contact rules, free of I/O: normalisation of what people type, validation, search
terms and page cursors. Every problem is reported with the field it concerns."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import ContactState, DataOrigin


class InvalidFields(InvalidField):
    """422 listing every field that breaks a rule (not only the first one)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        first_field, first_reason = problems[0]
        super().__init__(first_reason, field=first_field)
        self.problems = problems

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "detail": [{"field": f, "reason": r} for f, r in self.problems],
        }


@dataclass(frozen=True)
class ContactRules:
    """The configurable part of the rules (see ContactsSettings)."""

    region: str = "FR"
    max_name_length: int = 100
    max_tags: int = 50
    max_tag_length: int = 40


@dataclass(frozen=True)
class ContactFields:
    """A person's data as typed (before) or as stored (after ``normalise_contact``)."""

    given_name: str = ""
    family_name: str = ""
    email: str | None = None
    phone: str | None = None
    postcode: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


class Contact(BaseModel):
    """A contact as stored and returned."""

    model_config = ConfigDict(frozen=True)

    id: str
    federation_id: str
    federation_path: str
    version: int
    given_name: str
    family_name: str
    email: str | None
    phone: str | None
    postcode: str | None
    tags: list[str]
    origin: DataOrigin
    created_at: datetime
    updated_at: datetime
    created_by: str

    def state(self) -> ContactState:
        """The personal data other services may project (event payload)."""
        return ContactState(
            given_name=self.given_name,
            family_name=self.family_name,
            email=self.email,
            phone=self.phone,
            postcode=self.postcode,
            tags=list(self.tags),
            origin=self.origin,
        )


def new_contact_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------- single values

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")


def clean_text(value: str) -> str:
    """Trimmed, inner runs of whitespace collapsed to one space, NFC-composed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip()


def normalise_name(value: str, max_length: int) -> str:
    if _CONTROL.search(value.replace("\t", " ").replace("\n", " ")):
        raise ValueError("must not contain control characters")
    value = clean_text(value)
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    return value


def normalise_email(value: str) -> str:
    """A valid address with its domain lowercased (and IDNA-normalised); the local part
    is kept as typed (it is case-sensitive by the standard)."""
    try:
        validated = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    local, _, domain = validated.normalized.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalise_phone(value: str, region: str) -> str:
    """E.164 (+33612345678). National numbers are read in ``region``; "00" and "+"
    international forms are understood."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(
            f"not a valid phone number (a number without country code is read as {region})"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: region -> (pattern of a postcode, reason when it does not match)
POSTCODE_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "FR": (re.compile(r"\d{5}"), "a French postcode is 5 digits"),
}
_ANY_POSTCODE = (re.compile(r"[A-Z0-9][A-Z0-9 -]{1,9}"), "must be 2 to 10 letters or digits")


def normalise_postcode(value: str, region: str) -> str:
    value = clean_text(value).upper()
    pattern, reason = POSTCODE_RULES.get(region, _ANY_POSTCODE)
    if not pattern.fullmatch(value):
        raise ValueError(reason)
    return value


def normalise_tag(value: str, max_length: int) -> str:
    """Tags compare without case or surrounding/double spaces."""
    if _CONTROL.search(value):
        raise ValueError("a tag must not contain control characters")
    value = clean_text(value).lower()
    if not value:
        raise ValueError("a tag must not be empty")
    if len(value) > max_length:
        raise ValueError(f"a tag must be at most {max_length} characters")
    return value


def normalise_tags(values: list[str] | tuple[str, ...], rules: ContactRules) -> tuple[str, ...]:
    """Normalised, deduplicated (first occurrence kept, in order), bounded in number."""
    seen: dict[str, None] = {}
    for raw in values:
        seen.setdefault(normalise_tag(raw, rules.max_tag_length), None)
    if len(seen) > rules.max_tags:
        raise ValueError(f"at most {rules.max_tags} distinct tags")
    return tuple(seen)


def _blank_to_none(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return value


# ---------------------------------------------------------------- a whole contact


def normalise_contact(raw: ContactFields, rules: ContactRules) -> ContactFields:
    """Validate and normalise a contact; raises InvalidFields listing every problem.
    Blank email/phone/postcode count as absent."""
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}

    def check(name: str, fn, *args: Any) -> None:
        try:
            values[name] = fn(*args)
        except ValueError as exc:
            problems.append((name, str(exc)))

    check("given_name", normalise_name, raw.given_name, rules.max_name_length)
    check("family_name", normalise_name, raw.family_name, rules.max_name_length)
    email, phone, postcode = (_blank_to_none(v) for v in (raw.email, raw.phone, raw.postcode))
    values["email"] = values["phone"] = values["postcode"] = None
    if email is not None:
        check("email", normalise_email, email)
    if phone is not None:
        check("phone", normalise_phone, phone, rules.region)
    if postcode is not None:
        check("postcode", normalise_postcode, postcode, rules.region)
    check("tags", normalise_tags, raw.tags, rules)
    if problems:
        raise InvalidFields(problems)
    result = ContactFields(**values)
    if not (result.email or result.phone or result.family_name):
        raise InvalidFields(
            [("contact", "at least one of email, phone or family_name is required")]
        )
    return result


def check_origin(origin: DataOrigin, today: date) -> None:
    """Where the data came from must be a real, past collection."""
    if origin.collected_on is not None and origin.collected_on > today:
        raise InvalidFields([("origin.collected_on", "must not be in the future")])


# ---------------------------------------------------------------- search


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for search ("Éloïse" -> "eloise")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@dataclass(frozen=True)
class SearchTerms:
    #: every word must start the given or the family name
    name_words: tuple[str, ...]
    #: the whole query starts the (folded) email
    email_prefix: str
    #: E.164 prefix when the query looks like the start of a phone number
    phone_prefix: str | None


def search_keys(fields: ContactFields | Contact) -> dict[str, str]:
    """What ``SearchTerms`` are matched against (stored beside the contact)."""
    return {
        "given": fold(fields.given_name),
        "family": fold(fields.family_name),
        "email": fold(fields.email or ""),
    }


_PHONE_QUERY = re.compile(r"\+?[0-9().\-\s]+")


def phone_prefix(query: str, region: str) -> str | None:
    """The E.164 prefix a partly typed phone number stands for ("06 12" -> "+33612",
    "0033 6" -> "+336", "+44 20" -> "+4420"), or None if it is not one."""
    query = query.strip()
    if not _PHONE_QUERY.fullmatch(query):
        return None
    digits = re.sub(r"\D", "", query)
    if len(digits) < 2:
        return None
    if query.startswith("+"):
        return "+" + digits
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    country_code = phonenumbers.country_code_for_region(region)
    international = metadata.preferred_international_prefix or metadata.international_prefix
    if international and international.isdigit() and digits.startswith(international):
        rest = digits[len(international) :]
        return "+" + rest if rest else None
    national = metadata.national_prefix
    if national and digits.startswith(national):
        return f"+{country_code}{digits[len(national) :]}"
    if not national:
        return f"+{country_code}{digits}"
    return None


def search_terms(query: str, region: str, max_words: int) -> SearchTerms:
    folded = fold(clean_text(query))
    words = tuple(folded.split())
    if not words:
        raise InvalidFields([("q", "must not be blank")])
    if len(words) > max_words:
        raise InvalidFields([("q", f"at most {max_words} words")])
    return SearchTerms(
        name_words=words,
        email_prefix=folded,
        phone_prefix=phone_prefix(query, region),
    )


# ---------------------------------------------------------------- page cursors

_CURSOR_PREFIX = "c1:"
_ID = re.compile(r"[0-9a-f]{32}")


def encode_cursor(last_id: str) -> str:
    """An opaque token for "the page after the contact ``last_id``"."""
    raw = (_CURSOR_PREFIX + last_id).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor points after; 422 (field "cursor") if it was not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    last_id = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not _ID.fullmatch(last_id):
        raise InvalidFields([("cursor", "not a cursor returned by this API")])
    return last_id
