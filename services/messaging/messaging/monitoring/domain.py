"""How long a sending campaign has waited for progress: pure rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class CampaignProgress:
    campaign_id: str
    #: messages are due now, or the audience is still arriving
    waiting: bool
    #: seconds since the campaign last made progress while something waits, else 0
    idle_seconds: float


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def last_progress(campaign: Mapping[str, Any]) -> datetime | None:
    """The latest of: its last message handed over, its launch, its last resume (a paused
    campaign is not stalled while paused, and its clock starts again when resumed)."""
    moments = [
        _aware(campaign.get("last_sent_at")),
        _aware(campaign.get("launched_at")),
        _aware(((campaign.get("audit") or {}).get("resume") or {}).get("at")),
    ]
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def measure(campaign: Mapping[str, Any], now: datetime, has_due: bool) -> CampaignProgress:
    """A sending campaign's progress. Nothing waits (all handed over, deferred to after
    the quiet hours, held for an A/B winner): idle 0, it is not stalled."""
    audience = campaign.get("audience") or {}
    waiting = has_due or not audience.get("resolved", False)
    since = last_progress(campaign)
    idle = max(0.0, (now - since).total_seconds()) if waiting and since is not None else 0.0
    return CampaignProgress(str(campaign["_id"]), waiting, idle)
