"""Consent rules, free of I/O: the current state is derived from an append-only ledger."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import Channel


class ConsentStatus(StrEnum):
    granted = "granted"
    revoked = "revoked"
    pending = "pending"


class LedgerEntry(BaseModel):
    """One immutable fact in a contact's consent history."""

    model_config = ConfigDict(frozen=True)

    contact_id: str
    channel: Channel
    purpose: str
    status: ConsentStatus
    source: str
    proof: dict[str, str] = Field(default_factory=dict)
    actor: str
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


def needs_entry(current: ConsentStatus | None, wanted: ConsentStatus) -> bool:
    """Granting what is granted or revoking what is revoked changes nothing (idempotent)."""
    if wanted is ConsentStatus.revoked and current is None:
        return True  # an objection is recorded even if consent was never asked: it is proof
    return current != wanted


def check_purpose(purpose: str, allowed: list[str]) -> None:
    if purpose not in allowed:
        raise InvalidField(
            f"unknown purpose; expected one of {', '.join(allowed)}", field="purpose"
        )
