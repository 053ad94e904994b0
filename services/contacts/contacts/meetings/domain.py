"""Rules of meetings, free of I/O: what a valid meeting is, who gets a place and who waits,
which reminder is due, and the attendance summary segments query."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from contacts.domain import clean_text
from contacts.filter_language import MAX_ATTENDANCE_RANK

MeetingKind = Literal["meeting", "canvassing"]
MeetingStatus = Literal["scheduled", "cancelled"]
#: registered: has a place; waitlisted: beyond the capacity, in order of arrival; walk_in:
#: checked in on the day without having registered (outside the capacity)
RegistrationStatus = Literal["registered", "waitlisted", "walk_in"]
KINDS: tuple[str, ...] = ("meeting", "canvassing")

#: INSEE commune code: five characters, Corsica's "2A"/"2B" departments included
COMMUNE_CODE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")


@dataclass(frozen=True)
class MeetingLimits:
    max_title_length: int = 200
    max_place_length: int = 500
    max_duration_hours: int = 24 * 7
    max_capacity: int = 100_000


@dataclass(frozen=True)
class Rsvp:
    """One person registering for a meeting through a form (contacts.submissions)."""

    meeting_id: str
    contact_id: str
    submission_id: str
    federation_id: str
    federation_path: str


class MeetingProblems(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


def clean_meeting(fields: dict[str, Any], limits: MeetingLimits) -> dict[str, Any]:
    """The meeting's fields normalised (title and place text, commune code upper case),
    or MeetingProblems listing every field that breaks a rule."""
    problems: list[tuple[str, str]] = []
    out = dict(fields)
    title = clean_text(fields.get("title") or "")
    if not title:
        problems.append(("title", "must not be blank"))
    elif len(title) > limits.max_title_length:
        problems.append(("title", f"must be at most {limits.max_title_length} characters"))
    out["title"] = title
    starts_at, ends_at = fields.get("starts_at"), fields.get("ends_at")
    for name, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if value is None:
            problems.append((name, "required"))
        elif value.tzinfo is None:
            problems.append((name, "must carry a time zone (e.g. 2026-05-01T18:30:00+02:00)"))
        else:  # as the store keeps it (milliseconds, UTC): a re-sent value is no change
            out[name] = value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)
    starts_at, ends_at = out.get("starts_at"), out.get("ends_at")
    if isinstance(starts_at, datetime) and isinstance(ends_at, datetime):
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            pass  # said above
        elif ends_at <= starts_at:
            problems.append(("ends_at", "must be after starts_at"))
        elif ends_at - starts_at > timedelta(hours=limits.max_duration_hours):
            problems.append(("ends_at", f"at most {limits.max_duration_hours} hours after"))
    address = clean_text(fields.get("address") or "")
    if len(address) > limits.max_place_length:
        problems.append(("address", f"must be at most {limits.max_place_length} characters"))
    out["address"] = address
    commune = fields.get("commune_insee")
    if commune is not None:
        commune = clean_text(commune).upper() or None
        if commune is not None and not COMMUNE_CODE.match(commune):
            problems.append(("commune_insee", "must be an INSEE commune code (5 characters)"))
    out["commune_insee"] = commune
    if fields.get("kind") not in KINDS:
        problems.append(("kind", f"must be one of {', '.join(KINDS)}"))
    capacity = fields.get("capacity")
    if capacity is not None and not 1 <= capacity <= limits.max_capacity:
        problems.append(("capacity", f"must be between 1 and {limits.max_capacity}"))
    if problems:
        raise MeetingProblems(problems)
    return out


# ---------------------------------------------------------------- capacity and waiting list


def places_left(capacity: int | None, registered: int) -> int | None:
    """Places still free (None: no limit)."""
    return None if capacity is None else max(0, capacity - registered)


def admit(capacity: int | None, registered: int, arriving: int) -> list[RegistrationStatus]:
    """The status of each of ``arriving`` new registrations, in order of arrival: a place
    while there is one, then the waiting list. A full meeting never bumps anybody."""
    free = places_left(capacity, registered)
    if free is None:
        return ["registered"] * arriving
    placed = min(free, arriving)
    placed_ones: list[RegistrationStatus] = ["registered"] * placed
    waiting_ones: list[RegistrationStatus] = ["waitlisted"] * (arriving - placed)
    return placed_ones + waiting_ones


def promotable(capacity: int | None, registered: int, waiting: int) -> int:
    """How many of the waiting list (first come, first served) get the places freed by a
    cancelled registration or a larger capacity."""
    free = places_left(capacity, registered)
    return waiting if free is None else min(free, waiting)


# ---------------------------------------------------------------- reminders


@dataclass(frozen=True)
class ReminderDue:
    #: the offset (hours before the start) the reminder is sent for
    hours_before: int
    #: every offset this decision settles: the one sent and the larger ones not sent yet
    #: (a person who registers late, or a job that was down, gets the nearest reminder
    #: only, never a burst)
    settles: tuple[int, ...]


def reminder_due(
    starts_at: datetime, offsets: Iterable[int], now: datetime, settled: Iterable[int] = ()
) -> ReminderDue | None:
    """The reminder a registered person is due ``now``, or None. The reminder of offset H
    is due from H hours before the start until the start (or the next smaller offset's
    window); each offset is settled at most once per person and meeting."""
    if now >= starts_at:
        return None
    opened = sorted(h for h in set(offsets) if now >= starts_at - timedelta(hours=h))
    if not opened:
        return None
    nearest = opened[0]
    done = set(settled)
    if nearest in done:
        return None
    return ReminderDue(nearest, tuple(h for h in opened if h not in done))


def reminder_horizon(offsets: Sequence[int]) -> timedelta:
    """How far ahead the job looks for meetings: the largest offset."""
    return timedelta(hours=max(offsets, default=0))


# ---------------------------------------------------------------- attendance summary


def attendance_summary(
    attended: Iterable[tuple[str, datetime]], keep: int = MAX_ATTENDANCE_RANK
) -> list[dict[str, Any]]:
    """The summary stored on the contact from (kind, starts_at) of each meeting the person
    was checked in at: per kind and for "any", the ``keep`` most recent ranked from 1. The
    filter language's ``attended`` node asks whether rank N started at or after a date."""
    by_kind: dict[str, list[datetime]] = {"any": []}
    for kind, at in attended:
        by_kind.setdefault(kind, []).append(at)
        by_kind["any"].append(at)
    summary: list[dict[str, Any]] = []
    for kind in sorted(by_kind):
        for rank, at in enumerate(sorted(by_kind[kind], reverse=True)[:keep], start=1):
            summary.append({"k": kind, "n": rank, "at": at})
    return summary


#: what a registration holds, best first: a place beats the waiting list
_HOLDS = {"registered": 2, "waitlisted": 1}


def kept_on_merge(survivor: dict[str, Any] | None, merged: dict[str, Any]) -> bool:
    """Whether a merge keeps the merged contact's registration to a meeting rather than
    the survivor's (the same person registered twice under two contacts): being checked in
    beats a place, a place beats the waiting list, and the earlier arrival wins a tie."""
    if survivor is None:
        return True

    def rank(r: dict[str, Any]) -> tuple[bool, int, float]:
        return (
            r.get("checked_in_at") is not None,
            _HOLDS.get(str(r.get("status")), 0),
            -r["registered_at"].timestamp(),
        )

    return rank(merged) > rank(survivor)


def registration_id(meeting_id: str, contact_id: str) -> str:
    """One registration per person and meeting: registering twice is the same one."""
    return f"{meeting_id}:{contact_id}"


def reminder_marker(meeting_id: str, contact_id: str, hours_before: int) -> str:
    return f"{meeting_id}:{contact_id}:{hours_before}"
