"""The open privacy requests' figures per kind: pure rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consent.privacy import RequestKind


@dataclass(frozen=True)
class PrivacyBacklog:
    kind: str
    #: requests not completed yet
    open: int
    #: of which past their deadline
    overdue: int
    #: seconds since the oldest open one was received (0 when none is open)
    oldest_age_seconds: float
    #: seconds until the earliest deadline of an open one (negative: passed); None when
    #: none is open
    seconds_to_deadline: float | None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def backlog(
    groups: Mapping[str, Mapping[str, Any]], overdue: Mapping[str, int], now: datetime
) -> list[PrivacyBacklog]:
    """Every kind of request, open ones or not (a kind with none open shows zeros).
    ``groups``: per kind ``{"open", "oldest_received", "earliest_deadline"}``;
    ``overdue``: per kind, how many are past their deadline."""
    figures = []
    for kind in RequestKind:
        group = groups.get(kind.value)
        if not group or not group.get("open"):
            figures.append(PrivacyBacklog(kind.value, 0, 0, 0.0, None))
            continue
        oldest = _aware(group["oldest_received"])
        deadline = _aware(group["earliest_deadline"])
        figures.append(
            PrivacyBacklog(
                kind.value,
                int(group["open"]),
                int(overdue.get(kind.value, 0)),
                max(0.0, (now - oldest).total_seconds()),
                (deadline - now).total_seconds(),
            )
        )
    return figures
