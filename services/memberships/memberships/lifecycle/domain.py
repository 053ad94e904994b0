"""Lifecycle rules, free of I/O: what the sweep records, which renewal reminder is due,
and a membership's state at any day, past ones included (the electoral roll).

The core rules (``memberships.domain``: ``settle``, ``status_on``, ``cancel``) stay the one
source of the transitions; this module decides when to apply them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from tribune_shared.spreadsheet import neutralise

from memberships.domain import Membership, MembershipStatus, settle

S = MembershipStatus


# ---------------------------------------------------------------- the sweep


def sweep_steps(membership: Membership, today: date) -> list[MembershipStatus]:
    """The statuses time moved ``membership`` through by ``today``, in order (each one a
    recorded transition with its event): [grace], [lapsed], [grace, lapsed] or []."""
    settled = settle(membership, today)  # checks every step against the transition table
    if settled.status is membership.status:
        return []
    steps = []
    if membership.status is S.active:
        steps.append(S.grace)
    if settled.status is S.lapsed:
        steps.append(S.lapsed)
    return steps


# ---------------------------------------------------------------- renewal reminders


def reminder_key(ends_on: date, offset_days: int) -> str:
    """Names one reminder of one paid period: a renewal moves ``ends_on``, so the next
    period gets its own reminders."""
    return f"{ends_on.isoformat()}:{offset_days}"


@dataclass(frozen=True)
class ReminderDecision:
    offset_days: int
    days_left: int
    #: False: the offset is passed over without a message (the period began after the
    #: reminder's day: a member who just joined is not asked to renew at once)
    send: bool
    #: the reminders of this period this decision settles (the offset and any larger one
    #: not sent yet: a sweep that was down sends the nearest reminder only, never a burst)
    keys: tuple[str, ...]


def reminder_windows(offsets: Sequence[int]) -> list[tuple[int, int]]:
    """(offset, fewest days left it covers) per offset, smallest first: with 30 and 7,
    the 7-day reminder covers 0..7 days left and the 30-day one 8..30."""
    ordered = sorted(set(offsets))
    return [(d, ordered[i - 1] + 1 if i else 0) for i, d in enumerate(ordered)]


def reminder_due(
    starts_on: date | None,
    ends_on: date | None,
    today: date,
    offsets: Sequence[int],
    reminded: Sequence[str] = (),
) -> ReminderDecision | None:
    """The renewal reminder an active membership is due ``today``, or None. Each offset
    is settled at most once per paid period (``reminded`` holds the settled keys)."""
    if ends_on is None or not offsets:
        return None
    days_left = (ends_on - today).days
    if days_left < 0:
        return None  # the period is over: the grace period's business, not a reminder's
    applicable = [d for d in sorted(set(offsets)) if d >= days_left]
    if not applicable:
        return None
    offset = applicable[0]
    if reminder_key(ends_on, offset) in reminded:
        return None
    send = starts_on is not None and ends_on - timedelta(days=offset) >= starts_on
    keys = tuple(reminder_key(ends_on, d) for d in applicable)
    return ReminderDecision(offset, days_left, send, keys)


# ---------------------------------------------------------------- state at a day


class StateOn(StrEnum):
    """Where a membership stood on a given day (history included)."""

    not_started = "not_started"  # pending, or its first period begins later
    active = "active"
    grace = "grace"
    lapsed = "lapsed"
    cancelled = "cancelled"


def state_on(membership: Membership, day: date, cancelled_on: date | None = None) -> StateOn:
    """The membership's state on ``day``, past days included: unlike ``status_on`` (the
    status now, with time applied), a membership lapsed or cancelled since was active on
    the days its periods covered. A renewal buys the period right after the last one (or
    starts in the grace days), so a membership is in good standing without a gap from
    ``starts_on`` to ``grace_ends_on``, unless cancelled (from ``cancelled_on`` on)."""
    if membership.starts_on is None or membership.ends_on is None or day < membership.starts_on:
        if membership.status is S.cancelled and (cancelled_on is None or cancelled_on <= day):
            return StateOn.cancelled
        return StateOn.not_started
    if membership.status is S.cancelled and (cancelled_on is None or cancelled_on <= day):
        return StateOn.cancelled
    if day <= membership.ends_on:
        return StateOn.active
    assert membership.grace_ends_on is not None
    return StateOn.grace if day <= membership.grace_ends_on else StateOn.lapsed


GOOD_STANDING_ON = frozenset({StateOn.active, StateOn.grace})


# ---------------------------------------------------------------- the roll as CSV

ROLL_COLUMNS = (
    "contact_id",
    "membership_id",
    "plan",
    "state",
    "starts_on",
    "ends_on",
    "grace_ends_on",
    "federation_id",
)
#: the person's name, when the memberships service knows it (its people projection)
NAME_COLUMNS = ("given_name", "family_name")


def roll_header(with_names: bool) -> list[str]:
    return [ROLL_COLUMNS[0], *(NAME_COLUMNS if with_names else ()), *ROLL_COLUMNS[1:]]


def roll_row(entry: dict[str, object], with_names: bool) -> list[str]:
    """One member of the roll as CSV cells, each neutralised against formula injection
    (a name typed as ``=HYPERLINK(...)`` stays text)."""
    names = [entry.get(c) for c in NAME_COLUMNS] if with_names else []
    values = [entry["contact_id"], *names, *(entry.get(c) for c in ROLL_COLUMNS[1:])]
    return [neutralise("" if v is None else str(v)) for v in values]
