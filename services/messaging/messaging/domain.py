"""Messaging rules, free of I/O: who may be reached, and which projected state wins."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from tribune_shared.errors import InvalidField, Refused
from tribune_shared.events.contracts import Channel

#: channels this service can send on today
SUPPORTED_CHANNELS = frozenset({Channel.email})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ConsentStatus(StrEnum):
    granted = "granted"
    revoked = "revoked"


class MessageStatus(StrEnum):
    queued = "queued"  # a campaign's intent: waiting for a worker
    held = "held"  # an A/B test's rest of the audience: waits for the winning subject
    sending = "sending"  # claimed or handed to the provider, outcome not recorded yet
    sent = "sent"
    failed = "failed"
    refused = "refused"  # a rule refused it at send time (``refused_rule`` says which)
    cancelled = "cancelled"  # its campaign was cancelled before it was sent


# ---------------------------------------------------------------- projections


def is_newer(stored_version: int | None, incoming_version: int) -> bool:
    """A projected state replaces the stored one only if it is strictly newer; a replayed
    or late event changes nothing."""
    return stored_version is None or incoming_version > stored_version


def consent_version(status: ConsentStatus, changed_at: datetime) -> int:
    """Order consent facts by when they happened (not when they arrived).

    Microseconds since the epoch, doubled; a revocation gets the odd slot so that a grant
    and a revocation stamped with the same instant resolve to "revoked" whatever their
    arrival order (when in doubt, do not message).
    """
    if changed_at.tzinfo is None:
        changed_at = changed_at.replace(tzinfo=UTC)
    micros = (changed_at - _EPOCH) // timedelta(microseconds=1)
    return micros * 2 + (1 if status is ConsentStatus.revoked else 0)


# ---------------------------------------------------------------- membership standing


class Standing(StrEnum):
    """A person's membership standing as messaging projects it (``None``: never a member)."""

    up_to_date = "up_to_date"  # active: dues paid for the current period
    grace = "grace"  # period over, not lapsed yet (memberships lapses after the grace days)
    lapsed = "lapsed"  # not renewed after the grace days, or cancelled


class MembershipState(StrEnum):
    active = "active"
    lapsed = "lapsed"
    cancelled = "cancelled"


_ORDER = {MembershipState.active: 0, MembershipState.lapsed: 1, MembershipState.cancelled: 2}


def membership_version(state: MembershipState, on: date) -> int:
    """Order one membership's facts by the day they happened; on the same day a lapse or
    a cancellation wins over an activation (when in doubt, not up to date)."""
    return on.toordinal() * 3 + _ORDER[state]


def standing_of(
    memberships: list[tuple[MembershipState, date | None]], today: date
) -> Standing | None:
    """A person's standing from their memberships' latest facts (state, period end): the
    best of them (a person up to date in one federation is up to date)."""
    best: Standing | None = None
    rank = {Standing.lapsed: 0, Standing.grace: 1, Standing.up_to_date: 2}
    for state, ends_on in memberships:
        if state is MembershipState.active:
            current = Standing.up_to_date if ends_on is None or today <= ends_on else Standing.grace
        else:
            current = Standing.lapsed
        if best is None or rank[current] > rank[best]:
            best = current
    return best


# ---------------------------------------------------------------- sending


@dataclass(frozen=True)
class Recipient:
    """A contact as messaging projects it."""

    contact_id: str
    federation_id: str
    federation_path: str
    email: str | None = None
    given_name: str = ""
    family_name: str = ""
    phone: str | None = None  # E.164
    origin_kind: str | None = None  # tribune_shared.events.contracts.OriginKind
    origin_detail: str = ""
    department: str | None = None  # INSEE code ("75", "2A", "974")

    @property
    def display_name(self) -> str:
        return " ".join(p for p in (self.given_name.strip(), self.family_name.strip()) if p)


@dataclass(frozen=True)
class ConsentState:
    """The latest consent fact for one contact x channel x purpose."""

    status: ConsentStatus
    changed_at: datetime


def consent_after(consent: ConsentState | None, revoked_at: datetime | None) -> ConsentState | None:
    """The consent to decide on: the view's, unless a revocation was seen (the revocation
    feed) at or after it; a revocation wins a tie, as in the view."""
    if revoked_at is None:
        return consent
    if consent is not None and consent.changed_at > revoked_at:
        return consent  # granted again after that revocation
    return ConsentState(status=ConsentStatus.revoked, changed_at=revoked_at)


@dataclass(frozen=True)
class ContentLimits:
    subject_max_chars: int
    text_max_chars: int


def check_channel(channel: Channel) -> None:
    if channel not in SUPPORTED_CHANNELS:
        raise InvalidField("not supported yet", field="channel")


def single_line_problem(value: str) -> str | None:
    """Why ``value`` cannot be one header line (a subject), or None. Python's email package
    refuses a header holding any line boundary ``str.splitlines`` knows (CR, LF, VT, FF,
    the separators 0x1C-0x1E, NEL 0x85, U+2028, U+2029): a subject holds none of them, nor
    any other control character (NUL, ESC...)."""
    if value.splitlines() != [value]:
        return "must be a single line"
    if any(unicodedata.category(c) == "Cc" and c != "\t" for c in value):
        return "must not contain control characters"
    return None


def check_content(subject: str, text: str, limits: ContentLimits) -> None:
    """A subject is one non-blank line; a text is not blank; both within the limits."""
    if not subject.strip():
        raise InvalidField("must not be blank", field="subject")
    if problem := single_line_problem(subject):
        raise InvalidField(problem, field="subject")
    if len(subject) > limits.subject_max_chars:
        raise InvalidField(
            f"must be at most {limits.subject_max_chars} characters", field="subject"
        )
    if not text.strip():
        raise InvalidField("must not be blank", field="text")
    if len(text) > limits.text_max_chars:
        raise InvalidField(f"must be at most {limits.text_max_chars} characters", field="text")


def check_purpose(purpose: str, tracking_purpose: str) -> None:
    """The tracking consent allows tracking messages; it is not what a message is for."""
    if purpose == tracking_purpose:
        raise InvalidField(
            f"'{tracking_purpose}' is the tracking consent, not a message purpose",
            field="purpose",
        )


def tracking_allowed(consent: ConsentState | None) -> bool:
    """Per-person open/click tracking only with the person's (unrevoked) consent."""
    return consent is not None and consent.status is ConsentStatus.granted


def check_limit(limit: int, max_page_size: int) -> None:
    if limit > max_page_size:
        raise InvalidField(f"must be at most {max_page_size}", field="limit")


@dataclass(frozen=True)
class Refusal:
    rule: str
    reason: str


def refusal(
    recipient: Recipient,
    consent: ConsentState | None,
    channel: Channel,
    purpose: str,
    *,
    suppressed: bool = False,
) -> Refusal | None:
    """Why this contact may not be sent this message now, or None if it may.
    ``suppressed``: the address is on the suppression list (whatever the consents say)."""
    if channel is Channel.email and not recipient.email:
        return Refusal("no_address", "contact has no email address")
    if suppressed:
        return Refusal(
            "suppressed",
            "the address is on the suppression list (the person objected to everything "
            "or was erased)",
        )
    if consent is None:
        return Refusal("no_consent", f"no {channel.value} consent for purpose '{purpose}'")
    if consent.status is ConsentStatus.revoked:
        return Refusal(
            "consent_revoked", f"{channel.value} consent for purpose '{purpose}' was revoked"
        )
    return None


def check_sendable(
    recipient: Recipient,
    consent: ConsentState | None,
    channel: Channel,
    purpose: str,
    *,
    suppressed: bool = False,
) -> None:
    """Raise Refused (409) with a clear reason unless the message may be sent."""
    found = refusal(recipient, consent, channel, purpose, suppressed=suppressed)
    if found is not None:
        raise Refused(found.reason, rule=found.rule)
