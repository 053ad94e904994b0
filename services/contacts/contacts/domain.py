"""Contact rules, free of I/O: normalisation of what people type, validation, search
terms and page cursors. Every problem is reported with the field it concerns."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, model_validator
from tribune_shared.errors import InvalidFields
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    ContactAddress,
    ContactCreatedV1,
    ContactEmail,
    ContactPhone,
    ContactState,
    ContactUpdatedV1,
    DataOrigin,
)

from contacts.filter_language import clean_text, normalise_code
from contacts.geography import (
    department_of_insee,
    department_of_postcode,
    normalise_department,
    normalise_insee,
)

PhoneKind = Literal["mobile", "landline", "other"]


@dataclass(frozen=True)
class ContactRules:
    """The configurable part of the rules (see ContactsSettings)."""

    region: str = "FR"
    max_name_length: int = 100
    max_tags: int = 50
    max_tag_length: int = 40
    max_emails: int = 10
    max_phones: int = 10
    max_address_lines: int = 4
    max_address_line_length: int = 200
    max_code_length: int = 32
    min_birth_year: int = 1900


@dataclass(frozen=True)
class ContactFields:
    """A person's data as typed (before) or as stored (after ``normalise_contact``).

    ``email``, ``phone`` and ``postcode`` are the single values of the first API (still
    accepted: they become the only email, phone and the address's postcode); after
    normalisation they mirror the primary email, the first phone and the postcode.
    ``emails``/``phones`` None means "not given". ``custom_fields`` are validated by the
    service against the federation's definitions (``contacts.custom_fields``).
    """

    given_name: str = ""
    family_name: str = ""
    email: str | None = None
    phone: str | None = None
    postcode: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    emails: tuple[ContactEmail, ...] | None = None
    phones: tuple[ContactPhone, ...] | None = None
    address: ContactAddress | None = None
    constituency: str | None = None
    polling_station: str | None = None
    birth_year: int | None = None
    custom_fields: Mapping[str, Any] = field(default_factory=dict)


def _attr(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


class Contact(BaseModel):
    """A contact as stored and returned.

    ``email``, ``phone`` and ``postcode`` are read-only mirrors of the primary email, the
    first phone and the address's postcode (built from them when only they are given, as
    documents written before the full contact have them)."""

    model_config = ConfigDict(frozen=True)

    id: str
    federation_id: str
    federation_path: str
    version: int
    given_name: str
    family_name: str
    email: str | None = None
    phone: str | None = None
    postcode: str | None = None
    emails: list[ContactEmail] = []
    phones: list[ContactPhone] = []
    address: ContactAddress | None = None
    constituency: str | None = None
    polling_station: str | None = None
    birth_year: int | None = None
    tags: list[str]
    custom_fields: dict[str, str | int | float] = {}
    origin: DataOrigin
    created_at: datetime
    updated_at: datetime
    created_by: str
    updated_by: str | None = None
    #: created with an address on the suppression list: never reachable
    suppressed: bool = False

    @model_validator(mode="before")
    @classmethod
    def _mirrors(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        emails = list(data.get("emails") or [])
        if not emails and data.get("email"):
            emails = [ContactEmail(address=data["email"], primary=True)]
        phones = list(data.get("phones") or [])
        if not phones and data.get("phone"):
            phones = [ContactPhone(number=data["phone"], kind=phone_kind(data["phone"]))]
        address = data.get("address")
        if address is None and data.get("postcode"):
            address = ContactAddress(postcode=data["postcode"])
        primary = [e for e in emails if _attr(e, "primary")] or emails[:1]
        data.update(
            emails=emails,
            phones=phones,
            address=address,
            email=_attr(primary[0], "address") if primary else None,
            phone=_attr(phones[0], "number") if phones else None,
            postcode=_attr(address, "postcode") if address is not None else None,
        )
        return data

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
            emails=list(self.emails),
            phones=list(self.phones),
            address=self.address,
            constituency=self.constituency,
            polling_station=self.polling_station,
            birth_year=self.birth_year,
            custom_fields=dict(self.custom_fields),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def fields(self) -> ContactFields:
        """Its data as (already normalised) ContactFields, e.g. to apply a change to."""
        return ContactFields(
            given_name=self.given_name,
            family_name=self.family_name,
            tags=tuple(self.tags),
            emails=tuple(self.emails),
            phones=tuple(self.phones),
            address=self.address,
            constituency=self.constituency,
            polling_station=self.polling_station,
            birth_year=self.birth_year,
            custom_fields=dict(self.custom_fields),
        )


def new_contact_id() -> str:
    return uuid.uuid4().hex


def build_contact(
    *,
    contact_id: str,
    federation: tuple[str, str],
    version: int,
    fields: ContactFields,
    custom: Mapping[str, Any],
    origin: DataOrigin,
    created: tuple[datetime, str],
    updated: tuple[datetime, str | None],
    suppressed: bool = False,
) -> Contact:
    """A contact of already normalised fields (a phone of unknown kind gets its kind)."""
    return Contact(
        id=contact_id,
        federation_id=federation[0],
        federation_path=federation[1],
        version=version,
        given_name=fields.given_name,
        family_name=fields.family_name,
        emails=list(fields.emails or ()),
        phones=[
            p if p.kind != "other" else ContactPhone(number=p.number, kind=phone_kind(p.number))
            for p in fields.phones or ()
        ],
        address=fields.address,
        constituency=fields.constituency,
        polling_station=fields.polling_station,
        birth_year=fields.birth_year,
        tags=list(fields.tags),
        custom_fields=dict(custom),
        origin=origin,
        created_at=created[0],
        created_by=created[1],
        updated_at=updated[0],
        updated_by=updated[1],
        suppressed=suppressed,
    )


#: what changed_fields of contact-updated compares (mirrors included: consumers read them)
COMPARED = (
    "given_name",
    "family_name",
    "email",
    "phone",
    "postcode",
    "emails",
    "phones",
    "address",
    "constituency",
    "polling_station",
    "birth_year",
    "tags",
)


def changed_fields(before: Contact, after: Contact) -> list[str]:
    """The names contact-updated lists as changed (custom fields as ``custom_fields.<n>``)."""
    changed = [n for n in COMPARED if getattr(after, n) != getattr(before, n)]
    for name in sorted(set(after.custom_fields) | set(before.custom_fields)):
        if after.custom_fields.get(name) != before.custom_fields.get(name):
            changed.append(f"custom_fields.{name}")
    if after.federation_id != before.federation_id:
        changed.append("federation_id")
    return changed


def updated_contact(
    original: Contact,
    fields: ContactFields,
    custom: Mapping[str, Any],
    *,
    suppressed: bool,
    now: datetime,
    updated_by: str | None,
) -> tuple[Contact, list[str]] | None:
    """``original`` carrying ``fields`` (already normalised, e.g. a row or a form folded in
    by ``contacts.imports.fold_into``) as its next version, with the changed field names;
    None when nothing changed (no new version, no event). Imports and form submissions
    write updates through this one path."""
    candidate = Contact.model_validate(
        {
            **original.model_dump(),
            "given_name": fields.given_name,
            "family_name": fields.family_name,
            "emails": list(fields.emails or ()),
            "phones": list(fields.phones or ()),
            "address": fields.address,
            "constituency": fields.constituency,
            "polling_station": fields.polling_station,
            "birth_year": fields.birth_year,
            "tags": list(fields.tags),
            "custom_fields": dict(custom),
            "suppressed": original.suppressed or suppressed,
        }
    )
    changed = changed_fields(original, candidate)
    if not changed and candidate.suppressed == original.suppressed:
        return None
    updated = Contact.model_validate(
        {
            **candidate.model_dump(),
            "version": original.version + 1,
            "updated_at": max(now, original.updated_at),
            "updated_by": updated_by,
        }
    )
    return updated, changed or ["suppressed"]


def contact_created(contact: Contact, producer: str, correlation_id: str | None = None) -> Envelope:
    return new_envelope(
        ContactCreatedV1(contact_id=contact.id, contact_version=1, contact=contact.state()),
        producer=producer,
        federation_id=contact.federation_id,
        federation_path=contact.federation_path,
        correlation_id=correlation_id,
    )


def contact_updated(
    contact: Contact, changed: list[str], producer: str, correlation_id: str | None = None
) -> Envelope:
    return new_envelope(
        ContactUpdatedV1(
            contact_id=contact.id,
            contact_version=contact.version,
            contact=contact.state(),
            changed_fields=changed,
        ),
        producer=producer,
        federation_id=contact.federation_id,
        federation_path=contact.federation_path,
        correlation_id=correlation_id,
    )


# ---------------------------------------------------------------- single values

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def normalise_name(value: str, max_length: int) -> str:
    if _CONTROL.search(value.replace("\t", " ").replace("\n", " ")):
        raise ValueError("must not contain control characters")
    value = clean_text(value)
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    return value


#: RFC 5321's limit, the one email_validator applies after its (much slower) checks
EMAIL_MAX_LENGTH = 254


def normalise_email(value: str) -> str:
    """A valid address with its domain lowercased (and IDNA-normalised); the local part
    is kept as typed (it is case-sensitive by the standard)."""
    value = value.strip()
    # Refused before email_validator, whose checks cost about a microsecond per character:
    # a cell of thousands would cost milliseconds for an address that cannot be valid.
    if len(unicodedata.normalize("NFC", value)) > EMAIL_MAX_LENGTH:
        raise ValueError(f"not a valid email address: at most {EMAIL_MAX_LENGTH} characters")
    try:
        validated = validate_email(value, check_deliverability=False)
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


_PHONE_KINDS: dict[int, PhoneKind] = {
    phonenumbers.PhoneNumberType.MOBILE: "mobile",
    # NANP numbers cannot be told apart; they usually take text messages
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE: "mobile",
    phonenumbers.PhoneNumberType.FIXED_LINE: "landline",
}


def phone_kind(e164: str) -> PhoneKind:
    """mobile or landline from phonenumbers' number type; "other" for VoIP, toll-free,
    premium-rate, pagers... (an SMS can only go to a mobile)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return "other"
    return _PHONE_KINDS.get(phonenumbers.number_type(number), "other")


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


def normalise_contact(
    raw: ContactFields, rules: ContactRules, today: date | None = None
) -> ContactFields:
    """Validate and normalise a contact; raises InvalidFields listing every problem.
    Blank email/phone/postcode count as absent. Problems are reported on the field the
    caller used (``email`` for the single value, ``emails.0.address`` for the list)."""
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}

    def check(name: str, fn, *args: Any) -> None:
        try:
            values[name] = fn(*args)
        except ValueError as exc:
            problems.append((name, str(exc)))

    check("given_name", normalise_name, raw.given_name, rules.max_name_length)
    check("family_name", normalise_name, raw.family_name, rules.max_name_length)
    emails = _normalise_emails(raw, rules, problems)
    phones = _normalise_phones(raw, rules, problems)
    address = _normalise_address(raw, rules, problems)
    check("tags", normalise_tags, raw.tags, rules)
    for name in ("constituency", "polling_station"):
        value = _blank_to_none(getattr(raw, name))
        values[name] = None
        if value is not None:
            check(name, normalise_area_code, value, rules.max_code_length)
    values["birth_year"] = None
    if raw.birth_year is not None:
        check("birth_year", check_birth_year, raw.birth_year, rules, today or date.today())
    if problems:
        raise InvalidFields(problems)
    primary = next((e.address for e in emails if e.primary), None)
    result = ContactFields(
        **values,
        emails=emails,
        phones=phones,
        address=address,
        email=primary,
        phone=phones[0].number if phones else None,
        postcode=address.postcode if address else None,
        custom_fields=dict(raw.custom_fields),
    )
    if not (result.email or result.phone or result.family_name):
        raise InvalidFields(
            [("contact", "at least one of email, phone or family_name is required")]
        )
    return result


def _normalise_emails(
    raw: ContactFields, rules: ContactRules, problems: list[tuple[str, str]]
) -> tuple[ContactEmail, ...]:
    single = _blank_to_none(raw.email)
    if raw.emails is not None and single is not None:
        problems.append(("email", "give either email or emails, not both"))
        return ()
    if raw.emails is None:
        if single is None:
            return ()
        try:
            return (ContactEmail(address=normalise_email(single), primary=True),)
        except ValueError as exc:
            problems.append(("email", str(exc)))
            return ()
    if len(raw.emails) > rules.max_emails:
        problems.append(("emails", f"at most {rules.max_emails} addresses"))
        return ()
    out: list[ContactEmail] = []
    seen: set[str] = set()
    before = len(problems)
    for i, entry in enumerate(raw.emails):
        try:
            address = normalise_email(entry.address)
        except ValueError as exc:
            problems.append((f"emails.{i}.address", str(exc)))
            continue
        if address in seen:
            problems.append((f"emails.{i}.address", "listed twice"))
            continue
        seen.add(address)
        out.append(ContactEmail(address=address, primary=bool(entry.primary)))
    primaries = sum(1 for e in raw.emails if e.primary)
    if primaries > 1:
        problems.append(("emails", "exactly one address may be primary"))
    if len(problems) > before or not out:
        return ()
    if primaries == 0:  # none marked: the first one is the primary address
        out[0] = ContactEmail(address=out[0].address, primary=True)
    return tuple(out)


def _normalise_phones(
    raw: ContactFields, rules: ContactRules, problems: list[tuple[str, str]]
) -> tuple[ContactPhone, ...]:
    single = _blank_to_none(raw.phone)
    if raw.phones is not None and single is not None:
        problems.append(("phone", "give either phone or phones, not both"))
        return ()
    if raw.phones is None:
        if single is None:
            return ()
        try:
            number = normalise_phone(single, rules.region)
        except ValueError as exc:
            problems.append(("phone", str(exc)))
            return ()
        return (ContactPhone(number=number, kind=phone_kind(number)),)
    if len(raw.phones) > rules.max_phones:
        problems.append(("phones", f"at most {rules.max_phones} numbers"))
        return ()
    out: list[ContactPhone] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw.phones):
        try:
            number = normalise_phone(entry.number, rules.region)
        except ValueError as exc:
            problems.append((f"phones.{i}.number", str(exc)))
            continue
        if number in seen:
            problems.append((f"phones.{i}.number", "listed twice"))
            continue
        seen.add(number)
        out.append(ContactPhone(number=number, kind=phone_kind(number)))
    return tuple(out)


def _normalise_address(
    raw: ContactFields, rules: ContactRules, problems: list[tuple[str, str]]
) -> ContactAddress | None:
    single = _blank_to_none(raw.postcode)
    given = raw.address
    if given is not None and single is not None and _blank_to_none(given.postcode) is not None:
        problems.append(("postcode", "give the postcode in address or alone, not both"))
        return None
    # The single postcode of the first API is the address's postcode.
    postcode_field = "postcode" if single is not None else "address.postcode"
    postcode = single if single is not None else _blank_to_none(given.postcode if given else None)
    lines: list[str] = []
    values: dict[str, str | None] = {"commune": None, "commune_insee": None, "department": None}
    before = len(problems)
    if given is not None:
        if len(given.lines) > rules.max_address_lines:
            problems.append(("address.lines", f"at most {rules.max_address_lines} lines"))
        for i, line in enumerate(given.lines):
            try:
                cleaned = normalise_name(line, rules.max_address_line_length)
            except ValueError as exc:
                problems.append((f"address.lines.{i}", str(exc)))
                continue
            if cleaned:
                lines.append(cleaned)
        for name, fn in (
            ("commune", lambda v: normalise_name(v, rules.max_name_length)),
            ("commune_insee", normalise_insee),
            ("department", normalise_department),
        ):
            value = _blank_to_none(getattr(given, name))
            if value is None:
                continue
            try:
                values[name] = fn(value) or None
            except ValueError as exc:
                problems.append((f"address.{name}", str(exc)))
    if postcode is not None:
        try:
            postcode = normalise_postcode(postcode, rules.region)
        except ValueError as exc:
            problems.append((postcode_field, str(exc)))
    if len(problems) > before:
        return None
    insee, department = values["commune_insee"], values["department"]
    if insee is not None:
        derived = department_of_insee(insee)
        if department is not None and derived is not None and department != derived:
            problems.append(
                ("address.department", f"does not match the commune's INSEE code ({derived})")
            )
            return None
        department = department or derived
    if department is None and postcode is not None and rules.region == "FR":
        department = department_of_postcode(postcode)
    if not (lines or postcode or any(values.values()) or department):
        return None
    return ContactAddress(
        lines=lines,
        postcode=postcode,
        commune=values["commune"],
        commune_insee=insee,
        department=department,
    )


def normalise_area_code(value: str, max_length: int) -> str:
    """A constituency or polling station code (compared upper-cased, as the segment
    language does)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    value = normalise_code(value)
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    return value


def check_birth_year(year: int, rules: ContactRules, today: date) -> int:
    if not rules.min_birth_year <= year <= today.year:
        raise ValueError(f"must be between {rules.min_birth_year} and {today.year}")
    return year


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


def search_keys(fields: ContactFields | Contact) -> dict[str, Any]:
    """What ``SearchTerms`` are matched against (stored beside the contact); ``family``
    is also the sort key of "by family name" (case and accents ignored)."""
    emails = [e.address for e in fields.emails or ()] or ([fields.email] if fields.email else [])
    return {
        "given": fold(fields.given_name),
        "family": fold(fields.family_name),
        "emails": [fold(e) for e in emails],
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
    if metadata is None:  # the settings only accept phonenumbers.SUPPORTED_REGIONS
        raise ValueError(f"unknown region {region!r}")
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


# ---------------------------------------------------------------- sorted pages

#: sort key of the API -> document field
SORT_FIELDS: dict[str, str] = {
    "id": "_id",
    "family_name": "search.family",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_SORT_CURSOR_PREFIX = "s1:"


@dataclass(frozen=True)
class SortOrder:
    key: str = "id"
    descending: bool = False

    @property
    def field(self) -> str:
        return SORT_FIELDS[self.key]

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.key


def parse_sort(value: str | None) -> SortOrder:
    """``family_name``, ``-created_at``...: a key of SORT_FIELDS, "-" for descending."""
    if value is None:
        return SortOrder()
    key = value.strip()
    descending = key.startswith("-")
    key = key.removeprefix("-").removeprefix("+")
    if key not in SORT_FIELDS:
        raise InvalidFields(
            [("sort", f"one of {', '.join(SORT_FIELDS)} (prefixed with '-' for descending)")]
        )
    return SortOrder(key, descending)


def sort_value(contact: Contact, order: SortOrder) -> str | datetime:
    """The value of the sort key of a contact (what the next page's cursor starts after)."""
    if order.key == "id":
        return contact.id
    if order.key == "family_name":
        return fold(contact.family_name)
    return getattr(contact, order.key)


def encode_page_cursor(order: SortOrder, value: str | datetime, last_id: str) -> str:
    """An opaque token for "after this contact in this order": the sort key's value and
    the id (ties are broken by id, so pages are stable)."""
    if order == SortOrder():
        return encode_cursor(last_id)
    shown = value.isoformat() if isinstance(value, datetime) else value
    raw = _SORT_CURSOR_PREFIX + json.dumps([order.param, shown, last_id], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_cursor(cursor: str, order: SortOrder) -> tuple[str | datetime, str]:
    """(sort value, id) a cursor points after; 422 on "cursor" if we did not make it or
    made it for another order."""
    if order == SortOrder():
        last_id = decode_cursor(cursor)
        return last_id, last_id
    bad = InvalidFields([("cursor", "not a cursor returned by this API")])
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        param, value, last_id = json.loads(raw.removeprefix(_SORT_CURSOR_PREFIX))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise bad from None
    if not raw.startswith(_SORT_CURSOR_PREFIX) or not isinstance(last_id, str):
        raise bad
    if not _ID.fullmatch(last_id) or not isinstance(value, str):
        raise bad
    if param != order.param:
        raise InvalidFields([("cursor", f"made for another sort order ({param})")])
    if order.key in ("created_at", "updated_at"):
        try:
            return datetime.fromisoformat(value), last_id
        except ValueError:
            raise bad from None
    return value, last_id


_TIME_CURSOR_PREFIX = "t1:"
_LIST_ID = re.compile(r"[0-9a-zA-Z_-]{1,64}")


def aware(at: datetime) -> datetime:
    """The store gives back aware UTC datetimes; documents written by hand may be naive."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def encode_time_cursor(at: datetime, last_id: str) -> str:
    """An opaque token for "the page after (``at``, ``last_id``)" of a list ordered by a
    time then an id (submissions newest first, meetings by start)."""
    raw = f"{_TIME_CURSOR_PREFIX}{aware(at).isoformat()}|{last_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_time_cursor(cursor: str) -> tuple[datetime, str]:
    """(time, id) a cursor points after; 422 (field "cursor") if it was not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, last_id = raw.removeprefix(_TIME_CURSOR_PREFIX).split("|", 1)
        when = aware(datetime.fromisoformat(at))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidFields([("cursor", "not a cursor returned by this list")]) from None
    if not raw.startswith(_TIME_CURSOR_PREFIX) or not _LIST_ID.fullmatch(last_id):
        raise InvalidFields([("cursor", "not a cursor returned by this list")])
    return when, last_id
