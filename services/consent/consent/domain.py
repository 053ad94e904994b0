"""Consent rules, free of I/O: the current state is derived from an append-only ledger."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import Channel


class ConsentStatus(StrEnum):
    granted = "granted"
    revoked = "revoked"
    #: asked, waiting for the person to confirm (double opt-in): counts as no consent
    pending = "pending"


class ActorKind(StrEnum):
    user = "user"  # a user of the federation recorded it (a form, a call, an import...)
    person = "person"  # the person did it (confirmation link, unsubscribe, SMS STOP)


#: the actor id recorded when the person acts themselves
PERSON = "person"


class Source(StrEnum):
    """Sources the person's own actions are recorded with (users give theirs freely)."""

    double_opt_in = "double_opt_in"
    unsubscribe_link = "unsubscribe_link"
    one_click = "one_click"
    sms_stop = "sms_stop"
    #: the person reported a message as spam to their mailbox provider (messaging's
    #: message-complained): their objection to the message's purpose
    complaint = "complaint"
    #: carried over from a duplicate merged into this contact (contacts' merge)
    contact_merge = "contact_merge"


class LedgerEntry(BaseModel):
    """One immutable fact in a contact's consent history."""

    model_config = ConfigDict(frozen=True)

    contact_id: str
    channel: Channel
    purpose: str
    status: ConsentStatus
    source: str
    #: how it was obtained: text version and SHA-256 of the text, form or import id,
    #: minimised IP and user agent, double opt-in request and confirmation times...
    proof: dict[str, str] = Field(default_factory=dict)
    actor: str
    actor_kind: ActorKind = ActorKind.user
    recorded_at: datetime


def current_status(
    history: list[LedgerEntry], channel: Channel, purpose: str
) -> ConsentStatus | None:
    """The latest status for (channel, purpose), or None if never asked."""
    latest = None
    for entry in history:
        if entry.channel == channel and entry.purpose == purpose:
            if latest is None or entry.recorded_at >= latest.recorded_at:
                latest = entry
    return latest.status if latest else None


def carried_over(
    merged: list[dict[str, Any]], survivor: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """When a duplicate is merged into a surviving contact: the merged contact's current
    consents (granted or revoked; a pending request dies with its contact) that become the
    survivor's. The person's latest decision wins; at the same instant a revocation wins;
    a state the survivor already has changes nothing."""
    theirs = {(d["channel"], d["purpose"]): d for d in survivor}
    out = []
    for doc in merged:
        status = ConsentStatus(doc["status"])
        if status is ConsentStatus.pending:
            continue
        mine = theirs.get((doc["channel"], doc["purpose"]))
        if mine is not None:
            if ConsentStatus(mine["status"]) is status:
                continue
            newer = doc["updated_at"] > mine["updated_at"]
            tie_revoked = doc["updated_at"] == mine["updated_at"] and (
                status is ConsentStatus.revoked
            )
            if not (newer or tie_revoked):
                continue
        out.append(doc)
    return out


def needs_entry(current: ConsentStatus | None, wanted: ConsentStatus) -> bool:
    """Granting what is granted or revoking what is revoked changes nothing (idempotent).

    A pending request (double opt-in) is needed only when there is no consent yet: asking
    again while a request is pending, or asking someone who already consented, changes
    nothing."""
    if wanted is ConsentStatus.revoked:
        # an objection is recorded even if consent was never asked: it is proof
        return current is not ConsentStatus.revoked
    if wanted is ConsentStatus.pending:
        return current not in (ConsentStatus.granted, ConsentStatus.pending)
    return current != wanted


def unchanged_status(current: ConsentStatus | None, wanted: ConsentStatus) -> ConsentStatus:
    """The status to report when ``needs_entry`` said nothing changes."""
    return current if current is not None else wanted


def check_purpose(purpose: str, allowed: list[str]) -> None:
    if purpose not in allowed:
        raise InvalidField(
            f"unknown purpose; expected one of {', '.join(allowed)}", field="purpose"
        )


def check_tracking_channel(channel: Channel, purpose: str, tracking_purpose: str) -> None:
    """Per-person open/click tracking exists only for emails."""
    if purpose == tracking_purpose and channel is not Channel.email:
        raise InvalidField(
            f"the '{tracking_purpose}' consent exists only on channel email", field="channel"
        )


def check_double_opt_in(channel: Channel) -> None:
    """The confirmation link goes by email: double opt-in is for the email channel."""
    if channel is not Channel.email:
        raise InvalidField("double opt-in is only available for channel email", field="channel")


def every_consent(purposes: list[str], tracking_purpose: str) -> list[tuple[Channel, str]]:
    """Every (channel, purpose) a person can object to: "unsubscribe from everything"."""
    pairs = [(channel, purpose) for channel in Channel for purpose in purposes]
    return [*pairs, (Channel.email, tracking_purpose)]


# ---------------------------------------------------------------- consent texts


def text_sha256(body: str) -> str:
    """Hex SHA-256 of a consent text's exact UTF-8 bytes (what the proof refers to)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def proof_of(
    *,
    text: dict[str, Any] | None,
    reference: str | None,
    client: dict[str, str],
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The proof kept with a ledger entry: the consent text (version and hash), the form or
    import id, where the request came from (already minimised) and anything specific."""
    proof: dict[str, str] = {}
    if text is not None:
        proof["text_version"] = text["version"]
        proof["text_hash"] = text["sha256"]
    if reference:
        proof["reference"] = reference
    proof.update(client)
    proof.update(extra or {})
    return proof


# ---------------------------------------------------------------- SMS STOP


def is_stop_message(text: str, keywords: list[str]) -> bool:
    """An inbound SMS asks to stop if its whole text, or its first word, is a keyword
    (case, accents as written, extra blanks and trailing punctuation ignored)."""
    words = " ".join(text.split()).upper().strip(" .!")
    if not words:
        return False
    return words in keywords or words.split(" ")[0] in keywords


def consent_rates(people: int, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (channel, purpose): how many consents are granted, pending and revoked, and the
    share of the people known who granted it (``rate``, 0 with nobody known). ``rows``:
    ``{channel, purpose, status, n}`` counts. Pending counts as no consent (double opt-in)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (str(row["channel"]), str(row["purpose"]))
        entry = out.setdefault(
            key,
            {"channel": key[0], "purpose": key[1], **{s.value: 0 for s in ConsentStatus}},
        )
        status = str(row["status"])
        if status in entry:
            entry[status] += int(row["n"])
    for entry in out.values():
        entry["rate"] = round(entry[ConsentStatus.granted.value] / people, 4) if people else 0.0
    return [out[k] for k in sorted(out)]
