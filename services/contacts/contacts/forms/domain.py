"""Public forms, free of I/O: what a form definition may hold, how a person's answers are
read (with contacts' own normalisation), and the abuse rules of the public intake (rate
limits, honeypot, minimum fill time, proof of work, page tokens, CSP and CORS).

Every problem is reported with the field it concerns; nothing here reads a clock or a
database on its own (``now`` and ``clock`` are passed in), so each rule is unit-tested.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from tribune_shared.errors import InvalidFields
from tribune_shared.events.contracts import Channel, ContactAddress
from tribune_shared.tokens import SignedTokens, TokenError

from contacts.domain import (
    ContactFields,
    ContactRules,
    normalise_contact,
    normalise_tags,
)
from contacts.filter_language import CUSTOM_FIELD_NAME, MAX_NUMBER, clean_text

FormKind = Literal["petition", "signup", "volunteer", "event_rsvp"]
KINDS: tuple[FormKind, ...] = ("petition", "signup", "volunteer", "event_rsvp")


class FormStatus(StrEnum):
    open = "open"
    #: takes no more submissions; the page says so
    closed = "closed"
    #: gone from the public side (404) and from the default list
    archived = "archived"


class Availability(StrEnum):
    """What the public side does with a form right now."""

    open = "open"
    not_yet_open = "not_yet_open"
    ended = "ended"
    closed = "closed"


#: the contact fields a form may ask for (contacts' own fields, normalised the same way)
CONTACT_FIELDS: tuple[str, ...] = (
    "given_name",
    "family_name",
    "email",
    "phone",
    "address",
    "postcode",
    "commune",
    "birth_year",
)
#: at least one of them: a submission is matched to a person by email or phone
REACHABLE = ("email", "phone")


class CustomType(StrEnum):
    text = "text"
    number = "number"
    boolean = "boolean"
    choice = "choice"


_CUSTOM_KEY = re.compile(CUSTOM_FIELD_NAME)
_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_REFERENCE_MAX = 100
_TITLE_MAX = 200
_LABEL_MAX = 200


@dataclass(frozen=True)
class FormLimits:
    """The configurable bounds of a definition (see ContactsSettings)."""

    max_fields: int = 30
    max_consents: int = 10
    max_origins: int = 20
    max_text_chars: int = 5_000
    max_choices: int = 50
    max_answer_chars: int = 500
    pow_min_bits: int = 8
    pow_max_bits: int = 24


# ---------------------------------------------------------------- the definition


def _text(
    value: str, name: str, max_chars: int, problems: list[tuple[str, str]], *, blank_ok: bool
) -> str:
    cleaned = value.strip()
    if not cleaned and not blank_ok:
        problems.append((name, "must not be blank"))
    if len(cleaned) > max_chars:
        problems.append((name, f"must be at most {max_chars} characters"))
    return cleaned


def normalise_origin(value: str) -> str:
    """``scheme://host[:port]`` of a site allowed to embed or post to a form (CORS and
    frame-ancestors compare origins exactly: no path, no trailing slash, lowercase)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an origin such as https://www.example.org")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError("an origin has no path, query or credentials")
    if any(c in value for c in " ;,'\"*"):
        raise ValueError("must be one origin, without wildcards")
    host = parts.hostname.lower()
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def check_definition(
    raw: Mapping[str, Any],
    *,
    rules: ContactRules,
    limits: FormLimits,
    partial: bool = False,
) -> dict[str, Any]:
    """A form definition's fields normalised, or InvalidFields listing every problem.

    ``raw`` holds the API's fields (``kind``, ``fields``, ``custom_fields``...); with
    ``partial`` (a PATCH) only those present are checked and returned, and the rules
    joining several fields are checked by ``check_whole`` on the merged form."""
    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}

    if "kind" in raw:
        if raw["kind"] not in KINDS:
            problems.append(("kind", f"must be one of {', '.join(KINDS)}"))
        out["kind"] = raw["kind"]
    for name, max_chars, blank_ok in (
        ("title", _TITLE_MAX, False),
        ("intro", limits.max_text_chars, True),
        ("thank_you", limits.max_text_chars, True),
    ):
        if name in raw:
            out[name] = _text(raw[name] or "", name, max_chars, problems, blank_ok=blank_ok)
    if "fields" in raw:
        out["fields"] = _contact_fields(raw["fields"] or [], limits, problems)
    if "custom_fields" in raw:
        out["custom_fields"] = _custom_fields(raw["custom_fields"] or [], limits, problems)
    if "consents" in raw:
        out["consents"] = _consent_boxes(raw["consents"] or [], limits, problems)
    if "goal" in raw:
        goal = raw["goal"]
        if goal is not None and (not isinstance(goal, int) or goal < 1 or goal > MAX_NUMBER):
            problems.append(("goal", "must be a positive whole number"))
        out["goal"] = goal
    for name in ("starts_at", "ends_at", "meeting_id"):
        if name in raw:
            out[name] = raw[name]
    if "tags" in raw:
        try:
            out["tags"] = list(normalise_tags(list(raw["tags"] or []), rules))
        except ValueError as exc:
            problems.append(("tags", str(exc)))
    if "reference" in raw:
        reference = clean_text(raw["reference"] or "")
        if len(reference) > _REFERENCE_MAX:
            problems.append(("reference", f"must be at most {_REFERENCE_MAX} characters"))
        out["reference"] = reference or None
    if "allowed_origins" in raw:
        origins: dict[str, None] = {}
        values = list(raw["allowed_origins"] or [])
        if len(values) > limits.max_origins:
            problems.append(("allowed_origins", f"at most {limits.max_origins} origins"))
        for i, value in enumerate(values):
            try:
                origins.setdefault(normalise_origin(value), None)
            except ValueError as exc:
                problems.append((f"allowed_origins.{i}", str(exc)))
        out["allowed_origins"] = list(origins)
    if "proof_of_work_bits" in raw:
        bits = raw["proof_of_work_bits"]
        if bits is not None and not limits.pow_min_bits <= bits <= limits.pow_max_bits:
            problems.append(
                (
                    "proof_of_work_bits",
                    f"must be between {limits.pow_min_bits} and {limits.pow_max_bits} "
                    "(or null: no proof of work)",
                )
            )
        out["proof_of_work_bits"] = bits
    if problems:
        raise InvalidFields(problems)
    if not partial:
        check_whole(out)
    return out


def check_whole(form: Mapping[str, Any]) -> None:
    """The rules joining several fields of a complete definition."""
    problems: list[tuple[str, str]] = []
    names = {f["name"] for f in form.get("fields", [])}
    if not names & set(REACHABLE):
        problems.append(("fields", "a form asks for at least an email or a phone number"))
    keys = {c["key"] for c in form.get("custom_fields", [])}
    for key in sorted(keys & names):
        problems.append(("custom_fields", f"{key!r} is a contact field: use fields"))
    if form.get("goal") is not None and form.get("kind") != "petition":
        problems.append(("goal", "only a petition has a goal"))
    if form.get("kind") == "event_rsvp" and not form.get("meeting_id"):
        problems.append(("meeting_id", "an event RSVP form names its meeting"))
    if form.get("kind") != "event_rsvp" and form.get("meeting_id"):
        problems.append(("meeting_id", "only an event RSVP form names a meeting"))
    starts, ends = form.get("starts_at"), form.get("ends_at")
    if starts is not None and ends is not None and ends <= starts:
        problems.append(("ends_at", "must be after starts_at"))
    if problems:
        raise InvalidFields(problems)


def _contact_fields(
    values: Sequence[Mapping[str, Any]], limits: FormLimits, problems: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    if len(values) > limits.max_fields:
        problems.append(("fields", f"at most {limits.max_fields} fields"))
        return out
    for i, value in enumerate(values):
        name = value.get("name")
        if name not in CONTACT_FIELDS:
            problems.append((f"fields.{i}.name", f"must be one of {', '.join(CONTACT_FIELDS)}"))
            continue
        if name in seen:
            problems.append((f"fields.{i}.name", "listed twice"))
            continue
        seen.add(name)
        label = clean_text(value.get("label") or "")
        if len(label) > _LABEL_MAX:
            problems.append((f"fields.{i}.label", f"must be at most {_LABEL_MAX} characters"))
        out.append({"name": name, "required": bool(value.get("required")), "label": label})
    return out


def _custom_fields(
    values: Sequence[Mapping[str, Any]], limits: FormLimits, problems: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    if len(values) > limits.max_fields:
        problems.append(("custom_fields", f"at most {limits.max_fields} fields"))
        return out
    for i, value in enumerate(values):
        at = f"custom_fields.{i}"
        key = value.get("key") or ""
        if not _CUSTOM_KEY.fullmatch(key):
            problems.append(
                (f"{at}.key", "lowercase letters, digits and '_', starting with a letter")
            )
            continue
        if key in seen:
            problems.append((f"{at}.key", "listed twice"))
            continue
        seen.add(key)
        label = clean_text(value.get("label") or "")
        if not label or len(label) > _LABEL_MAX:
            problems.append((f"{at}.label", f"must be 1 to {_LABEL_MAX} characters"))
        try:
            type_ = CustomType(str(value.get("type")))
        except ValueError:
            problems.append((f"{at}.type", f"must be one of {', '.join(CustomType)}"))
            continue
        choices: dict[str, None] = {}
        for j, choice in enumerate(value.get("choices") or []):
            text = clean_text(choice)
            if not text or len(text) > _LABEL_MAX:
                problems.append((f"{at}.choices.{j}", f"must be 1 to {_LABEL_MAX} characters"))
            elif text in choices:
                problems.append((f"{at}.choices.{j}", "listed twice"))
            choices.setdefault(text, None)
        if type_ is CustomType.choice and not choices:
            problems.append((f"{at}.choices", "a choice field needs at least one choice"))
        if len(choices) > limits.max_choices:
            problems.append((f"{at}.choices", f"at most {limits.max_choices} choices"))
        if type_ is not CustomType.choice and choices:
            problems.append((f"{at}.choices", "only a choice field has choices"))
        out.append(
            {
                "key": key,
                "label": label,
                "type": type_.value,
                "required": bool(value.get("required")),
                "choices": list(choices),
            }
        )
    return out


def _consent_boxes(
    values: Sequence[Mapping[str, Any]], limits: FormLimits, problems: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    if len(values) > limits.max_consents:
        problems.append(("consents", f"at most {limits.max_consents} consent boxes"))
        return out
    for i, value in enumerate(values):
        at = f"consents.{i}"
        try:
            channel = Channel(str(value.get("channel")))
        except ValueError:
            problems.append((f"{at}.channel", f"must be one of {', '.join(Channel)}"))
            continue
        purpose = value.get("purpose") or ""
        if not _PURPOSE.fullmatch(purpose):
            problems.append((f"{at}.purpose", "a purpose such as news or petitions"))
            continue
        if (channel.value, purpose) in seen:
            problems.append((at, "one box per channel and purpose"))
            continue
        seen.add((channel.value, purpose))
        version = clean_text(value.get("text_version") or "")
        if not version or len(version) > _LABEL_MAX:
            problems.append((f"{at}.text_version", "the version of a consent text"))
        out.append({"channel": channel.value, "purpose": purpose, "text_version": version})
    return out


def pick_text(version: str, texts: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The text of ``version`` closest to the form's federation (the projection's texts
    of its federation and ancestors, as consent resolves them); withdrawn ones never."""
    usable = [t for t in texts if t["version"] == version and not t.get("withdrawn")]
    return max(usable, key=lambda t: len(t["federation_path"]), default=None)


def availability(form: Mapping[str, Any], now: datetime) -> Availability:
    if form["status"] != FormStatus.open:
        return Availability.closed
    if form.get("starts_at") is not None and now < form["starts_at"]:
        return Availability.not_yet_open
    if form.get("ends_at") is not None and now >= form["ends_at"]:
        return Availability.ended
    return Availability.open


# ---------------------------------------------------------------- a person's answers

#: where a problem of contacts' normalisation lands on the form
_CONTACT_PROBLEM_FIELD = {
    "address.postcode": "postcode",
    "address.commune": "commune",
    "address.lines": "address",
    "address.lines.0": "address",
    "contact": "email",
}
REQUIRED = "required"
_TRUE = frozenset({"on", "true", "1", "yes", "oui"})
_FALSE = frozenset({"", "off", "false", "0", "no", "non"})


@dataclass(frozen=True)
class RawSubmission:
    """What a person sent, from the page (urlencoded) or a site (JSON), before any check."""

    answers: Mapping[str, Any] = field(default_factory=dict)
    custom: Mapping[str, Any] = field(default_factory=dict)
    #: (channel, purpose) of the ticked boxes
    ticked: frozenset[tuple[str, str]] = frozenset()
    token: str | None = None
    pow_nonce: str | None = None
    #: the hidden field people never see; bots fill it
    honeypot: str = ""


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def read_answers(
    form: Mapping[str, Any],
    raw: RawSubmission,
    rules: ContactRules,
    *,
    max_answer_chars: int,
    today: date,
) -> dict[str, Any]:
    """The answers as stored (contacts' normalisation: email, E.164 phone, postcode...),
    only what the person gave; InvalidFields naming the form's fields otherwise."""
    problems: list[tuple[str, str]] = []
    asked = {f["name"]: f for f in form["fields"]}
    given: dict[str, Any] = {}
    for name, spec in asked.items():
        value = raw.answers.get(name)
        if _given(value):
            if not isinstance(value, str | int) or isinstance(value, bool):
                problems.append((name, "must be text"))
                continue
            given[name] = value.strip() if isinstance(value, str) else value
        elif spec["required"]:
            problems.append((name, REQUIRED))
    if not any(n in given for n in REACHABLE) and not any(
        asked.get(n, {}).get("required") for n in REACHABLE
    ):
        reachable = [n for n in REACHABLE if n in asked] or ["email"]
        problems.append((reachable[0], "give an email address or a phone number"))
    birth_year: int | None = None
    if "birth_year" in given:
        text = str(given["birth_year"]).strip()
        if not (text.isascii() and text.isdigit() and len(text) == 4):
            problems.append(("birth_year", "must be a year such as 1984"))
        else:
            birth_year = int(text)
    for name in ("given_name", "family_name", "email", "phone", "postcode", "commune", "address"):
        if name in given and not isinstance(given[name], str):
            given[name] = str(given[name])
    answers: dict[str, Any] = {}
    # checked even when a required field is missing: the person sees every problem at once
    try:
        contact = normalise_contact(
            ContactFields(
                given_name=given.get("given_name", ""),
                family_name=given.get("family_name", ""),
                email=given.get("email"),
                phone=given.get("phone"),
                postcode=given.get("postcode"),
                address=ContactAddress(
                    lines=[given["address"]] if "address" in given else [],
                    commune=given.get("commune"),
                )
                if "address" in given or "commune" in given
                else None,
                birth_year=birth_year,
            ),
            rules,
            today,
        )
    except InvalidFields as exc:
        for name, reason in exc.problems:
            if name == "contact" and any(n in REACHABLE for n, _ in problems):
                continue  # already said: give an email or a phone
            problems.append((_CONTACT_PROBLEM_FIELD.get(name, name), reason))
    else:
        answers = _stored_answers(contact)
    custom = _read_custom(form.get("custom_fields", []), raw.custom, max_answer_chars, problems)
    if problems:
        raise InvalidFields(problems)
    if custom:
        answers["custom"] = custom
    return answers


def _stored_answers(contact: ContactFields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("given_name", "family_name", "email", "phone", "postcode", "birth_year"):
        value = getattr(contact, name)
        if value not in (None, ""):
            out[name] = value
    if contact.address is not None:
        if contact.address.lines:
            out["address_lines"] = list(contact.address.lines)
        if contact.address.commune:
            out["commune"] = contact.address.commune
    return out


def _read_custom(
    specs: Sequence[Mapping[str, Any]],
    values: Mapping[str, Any],
    max_chars: int,
    problems: list[tuple[str, str]],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        key, name = spec["key"], f"custom.{spec['key']}"
        value = values.get(key)
        try:
            read = _custom_value(CustomType(spec["type"]), value, spec["choices"], max_chars)
        except ValueError as exc:
            problems.append((name, str(exc)))
            continue
        if read is None or read is False:
            if spec["required"]:
                problems.append((name, REQUIRED))
            if read is False:
                out[key] = False
            continue
        out[key] = read
    return out


def _custom_value(
    type_: CustomType, value: Any, choices: Sequence[str], max_chars: int
) -> str | int | float | bool | None:
    if type_ is CustomType.boolean:
        if isinstance(value, bool) or value is None:
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("must be ticked or not")
    if not _given(value):
        return None
    if type_ is CustomType.number:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, str):
            text = value.strip().replace(",", ".").replace(" ", "")
            try:
                number: int | float = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
            except ValueError:
                raise ValueError("must be a number") from None
        elif isinstance(value, int | float):
            number = value
        else:
            raise ValueError("must be a number")
        if number != number or abs(number) > MAX_NUMBER:  # NaN, infinities, huge
            raise ValueError("must be a number")
        return int(number) if isinstance(number, float) and number.is_integer() else number
    if not isinstance(value, str):
        raise ValueError("must be text")
    text = clean_text(value)
    if len(text) > max_chars:
        raise ValueError(f"must be at most {max_chars} characters")
    if type_ is CustomType.choice and text not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return text


def ticked_consents(
    boxes: Sequence[Mapping[str, Any]], ticked: frozenset[tuple[str, str]]
) -> list[dict[str, str]]:
    """The boxes the person ticked, with the exact text version and hash shown to them
    (``boxes``: the form's boxes resolved against the text projection). A box the form
    does not offer cannot be ticked: it is refused, not ignored."""
    offered = {(b["channel"], b["purpose"]): b for b in boxes}
    unknown = sorted(ticked - set(offered))
    if unknown:
        raise InvalidFields([("consents", f"not offered by this form: {unknown[0][1]}")])
    return [
        {
            "channel": b["channel"],
            "purpose": b["purpose"],
            "text_version": b["text_version"],
            "text_sha256": b["text_sha256"],
        }
        for key, b in offered.items()
        if key in ticked
    ]


# ---------------------------------------------------------------- abuse: rate limits


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by key (a client IP, a form id), in this process only: ``rate``
    tokens per second up to ``burst``. At most ``max_keys`` buckets are kept; the least
    recently used is dropped first (a dropped key starts again with a full bucket)."""

    def __init__(
        self, rate: float, burst: int, *, max_keys: int, clock: Callable[[], float]
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when ``key`` may go on (a token is spent), else the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


class AcceptedPages:
    """Page tokens already accepted by this process, with their submission: sending the
    same page twice (a double click, a retried request) answers the first submission
    again instead of storing a second one. Bounded; entries leave at their expiry."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, token_id: str, now: float) -> str | None:
        held = self._seen.get(token_id)
        if held is None or held[1] < now:
            return None
        return held[0]

    def remember(self, token_id: str, submission_id: str, expires_at: float) -> None:
        self._seen[token_id] = (submission_id, expires_at)
        self._seen.move_to_end(token_id)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)


# ---------------------------------------------------------------- abuse: page token, PoW

PAGE_TOKEN_PURPOSE = "public-form-page"


@dataclass(frozen=True)
class PageToken:
    """What the page (or the JSON definition) hands out and the submission sends back:
    the form, when the page was served, the proof-of-work difficulty, and a digest of the
    consent texts shown (a text changed meanwhile is shown again before it counts)."""

    token: str
    form_id: str
    issued_at: float
    bits: int
    texts: str
    expires_at: float

    @property
    def id(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()[:32]


def texts_digest(boxes: Sequence[Mapping[str, Any]]) -> str:
    joined = "|".join(f"{b['channel']}:{b['purpose']}:{b['text_sha256']}" for b in boxes)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


class PageTokens:
    def __init__(self, secret: str, ttl_seconds: float, clock: Callable[[], float]) -> None:
        self.tokens = SignedTokens(secret, PAGE_TOKEN_PURPOSE, ttl_seconds=ttl_seconds, clock=clock)
        self.clock = clock

    def issue(self, form_id: str, bits: int, texts: str) -> str:
        return self.tokens.sign(
            {
                "f": form_id,
                "t": round(self.clock(), 3),
                "b": bits,
                "h": texts,
                # a random part: two pages served in the same millisecond differ (replay
                # detection and each proof of work are per page)
                "n": secrets.token_hex(8),
            }
        )

    def read(self, token: str) -> PageToken:
        """The token's content; TokenError when forged, altered or expired."""
        verified = self.tokens.verify(token)
        data = verified.data
        try:
            return PageToken(
                token=token,
                form_id=str(data["f"]),
                issued_at=float(data["t"]),
                bits=int(data["b"]),
                texts=str(data["h"]),
                expires_at=float(verified.expires_at or 0),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError("the page token is malformed") from None


class Refusal(StrEnum):
    """Why the intake refused a submission (each has its own message on the page)."""

    honeypot = "honeypot"
    too_fast = "too_fast"
    token_missing = "token_missing"
    token_invalid = "token_invalid"
    token_expired = "token_expired"
    texts_changed = "texts_changed"
    proof_of_work = "proof_of_work"


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte == 0:
            bits += 8
            continue
        return bits + (8 - byte.bit_length())
    return bits


_NONCE = re.compile(r"^[0-9]{1,20}$")


def proof_of_work_ok(token: str, nonce: str | None, bits: int) -> bool:
    """SHA-256 of ``<token>:<nonce>`` starts with ``bits`` zero bits (what the page's
    script searches with crypto.subtle; the server checks it with one hash)."""
    if bits <= 0:
        return True
    if nonce is None or not _NONCE.fullmatch(nonce):
        return False
    return leading_zero_bits(hashlib.sha256(f"{token}:{nonce}".encode()).digest()) >= bits


def solve_proof_of_work(token: str, bits: int) -> str:
    """What the browser does (tests and benchmarks use it)."""
    nonce = 0
    while not proof_of_work_ok(token, str(nonce), bits):
        nonce += 1
    return str(nonce)


def check_page(
    page: PageToken | None,
    raw: RawSubmission,
    *,
    form_id: str,
    texts: str,
    now: float,
    min_fill_seconds: float,
) -> Refusal | None:
    """The abuse rules of one submission, in the order a person can fix them."""
    if raw.honeypot.strip():
        return Refusal.honeypot
    if page is None:
        return Refusal.token_missing
    if page.form_id != form_id:
        return Refusal.token_invalid
    if now - page.issued_at < min_fill_seconds:
        return Refusal.too_fast
    if page.texts != texts:
        return Refusal.texts_changed
    if not proof_of_work_ok(page.token, raw.pow_nonce, page.bits):
        return Refusal.proof_of_work
    return None


# ---------------------------------------------------------------- headers


def content_security_policy(allowed_origins: Sequence[str]) -> str:
    """No inline script or style, nothing from elsewhere; the page posts only to itself
    and may be framed by the form's own origin and its allowed sites."""
    ancestors = " ".join(["'self'", *allowed_origins])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )


def cors_headers(origin: str | None, allowed_origins: Sequence[str]) -> dict[str, str]:
    """CORS answer headers: the caller's origin echoed only when the form allows it."""
    headers = {"Vary": "Origin"}
    if origin is not None and origin in allowed_origins:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def preflight_headers(origin: str | None, allowed_origins: Sequence[str]) -> dict[str, str]:
    headers = cors_headers(origin, allowed_origins)
    if "Access-Control-Allow-Origin" in headers:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
    return headers


Language = Literal["fr", "en"]
LANGUAGES: tuple[Language, ...] = ("fr", "en")


def pick_language(asked: str | None, accept_language: str | None) -> Language:
    """French first; English when asked (``?lang=en``) or preferred by the browser."""
    if asked in LANGUAGES:
        return asked
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, i, tag.strip().lower()[:2]))
    for _, _, tag in sorted(ranked):
        if tag in LANGUAGES:
            return tag
    return "fr"
