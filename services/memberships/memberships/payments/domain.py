"""Payment rules free of I/O: reversals (refunds, chargebacks) and the standing they take
back, recurring schedules and their due dates, remittance slips of cheques."""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, Literal

from tribune_shared.errors import InvalidField, Refused
from tribune_shared.spreadsheet import BOM, encode_rows, neutralise

from memberships.domain import Membership, MembershipStatus, check_transition

# ---------------------------------------------------------------- reversals

ReversalKind = Literal["refund", "chargeback"]
#: the status a reversal gives a payment
REVERSED_STATUS: dict[str, str] = {"refund": "refunded", "chargeback": "charged_back"}
#: what may be reversed: accepted money, and captured money the law refused
REVERSIBLE = frozenset({"accepted", "flagged_for_refund"})


class AlreadyReversed(Refused):
    """The payment was already refunded or charged back (409): money goes back once."""

    code = "already_reversed"


def check_reversible(payment: Mapping[str, Any], kind: str, amount_cents: int) -> str:
    """The payment's status after the reversal; AlreadyReversed or InvalidField otherwise."""
    if payment["status"] not in REVERSIBLE:
        raise AlreadyReversed(
            f"payment already {payment['status'].replace('_', ' ')}",
            payment_id=payment["_id"],
            status=payment["status"],
        )
    if amount_cents != payment["amount_cents"]:
        raise InvalidField(
            f"only the full amount ({payment['amount_cents']} cents) can be reversed",
            field="amount_cents",
        )
    return REVERSED_STATUS[kind]


@dataclass(frozen=True)
class StandingReversal:
    """What a reversal does to the membership the dues paid for."""

    ends_on_before: date | None
    ends_on_after: date | None
    #: nothing paid is left: the membership is cancelled
    cancelled: bool
    membership: Membership


def _day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def reverse_standing(
    membership: Membership, history: Sequence[Mapping[str, Any]], payment_id: str
) -> StandingReversal | None:
    """Take back the period ``payment_id`` bought, from the membership's history.

    Each dues payment stacks a period on the membership; a reversal removes the LAST period
    still held: when the reversed payment is the latest, ``ends_on`` goes back to what it was
    before it; when later dues were paid on top of it, the member keeps one period less (the
    later payment now stands for the earlier period). A membership left with no paid period
    is cancelled. Closed memberships (lapsed, cancelled) and payments the history does not
    know are left alone (None)."""
    if membership.status not in (MembershipStatus.active, MembershipStatus.grace):
        return None
    befores: list[tuple[str, date | None]] = []  # per period still held: ends_on before it
    current: date | None = None
    for entry in history:
        if entry.get("payment_id") and entry.get("ends_on"):
            befores.append((entry["payment_id"], current))
            current = _day(entry["ends_on"])
        elif entry.get("reversed_payment_id"):
            if befores:
                befores.pop()
            current = _day(entry.get("ends_on"))
        elif "ends_on" in entry:  # a missed schedule moved the end (grace started)
            current = _day(entry["ends_on"])
    reversed_ids = {e["reversed_payment_id"] for e in history if e.get("reversed_payment_id")}
    paid = {e["payment_id"] for e in history if e.get("payment_id") and e.get("ends_on")}
    if payment_id not in paid - reversed_ids or not befores:
        return None
    _, before = befores[-1]
    if before is None or (membership.starts_on is not None and before < membership.starts_on):
        check_transition(membership.status, MembershipStatus.cancelled)
        return StandingReversal(
            membership.ends_on,
            None,
            True,
            replace(membership, status=MembershipStatus.cancelled),
        )
    return StandingReversal(membership.ends_on, before, False, replace(membership, ends_on=before))


# ---------------------------------------------------------------- schedules


class Interval(StrEnum):
    monthly = "monthly"
    quarterly = "quarterly"
    yearly = "yearly"


MONTHS = {Interval.monthly: 1, Interval.quarterly: 3, Interval.yearly: 12}


class ScheduleStatus(StrEnum):
    active = "active"
    paused = "paused"
    cancelled = "cancelled"


OPEN_SCHEDULES = frozenset({ScheduleStatus.active, ScheduleStatus.paused})
PAST_TENSE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
SCHEDULE_ACTIONS: dict[str, tuple[frozenset[ScheduleStatus], ScheduleStatus]] = {
    "pause": (frozenset({ScheduleStatus.active}), ScheduleStatus.paused),
    "resume": (frozenset({ScheduleStatus.paused}), ScheduleStatus.active),
    "cancel": (OPEN_SCHEDULES, ScheduleStatus.cancelled),
}


def schedule_target(current: ScheduleStatus, action: str) -> ScheduleStatus:
    """The status ``action`` gives a schedule; Refused (409) if it cannot from ``current``."""
    allowed, target = SCHEDULE_ACTIONS[action]
    if current not in allowed:
        raise Refused(
            f"a {current.value} schedule cannot be {PAST_TENSE[action]}",
            status=current.value,
        )
    return target


def add_interval(day: date, interval: Interval, anchor_day: int, times: int = 1) -> date:
    """``day`` moved by ``times`` intervals, on the schedule's day of the month (clamped to
    the month's length: a schedule due on the 31st is due on February's last day)."""
    months = day.year * 12 + day.month - 1 + MONTHS[interval] * times
    year, month = divmod(months, 12)
    month += 1
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def missed_dues(
    next_due_on: date, interval: Interval, anchor_day: int, today: date, tolerance_days: int
) -> tuple[list[date], date]:
    """The due dates passed by more than ``tolerance_days`` without payment (oldest first)
    and the next due date after them."""
    missed: list[date] = []
    due = next_due_on
    while due + timedelta(days=tolerance_days) < today:
        missed.append(due)
        due = add_interval(due, interval, anchor_day)
    return missed, due


def resumed_due(next_due_on: date, interval: Interval, anchor_day: int, today: date) -> date:
    """A resumed schedule is next due on its first due date from today on (the dues of
    the pause are not claimed)."""
    due = next_due_on
    while due < today:
        due = add_interval(due, interval, anchor_day)
    return due


def grace_after_miss(membership: Membership, missed_due_on: date) -> Membership | None:
    """A missed dues payment starts the grace period at once: the paid period ends the day
    before the missed due date (so ``status_on`` gives grace from that date on, and the
    grace days count from it). None if the membership is not open or its paid period
    already ended before the missed date."""
    open_ = membership.status in (MembershipStatus.active, MembershipStatus.grace)
    if not open_ or membership.ends_on is None:
        return None
    new_end = missed_due_on - timedelta(days=1)
    if membership.ends_on <= new_end:
        return None
    if membership.status is MembershipStatus.active:
        check_transition(membership.status, MembershipStatus.grace)
    return replace(membership, status=MembershipStatus.grace, ends_on=new_end)


# ---------------------------------------------------------------- manual entries


def check_manual_day(paid_on: date, today: date, backdate_days: int) -> None:
    """A treasurer's entry is dated between ``backdate_days`` ago (a cheque is valid one year
    and eight days: Code monétaire et financier, art. L131-59) and today."""
    if paid_on > today:
        raise InvalidField("the payment date is in the future", field="paid_on")
    if paid_on < today - timedelta(days=backdate_days):
        raise InvalidField(
            f"the payment date is more than {backdate_days} days ago", field="paid_on"
        )


# ---------------------------------------------------------------- remittance slips

SLIP_COLUMNS = (
    "slip_number",
    "line",
    "payment_id",
    "cheque_number",
    "drawer_bank",
    "drawer",
    "paid_on",
    "amount_cents",
    "amount",
    "currency",
)


def euros(cents: int) -> str:
    """1234567 -> "12 345,67" (French notation, no currency sign: core PDF fonts are
    Latin-1 and lack the euro sign)."""
    whole, rest = divmod(cents, 100)
    return f"{whole:,}".replace(",", " ") + f",{rest:02d}"


@dataclass(frozen=True)
class SlipLine:
    payment_id: str
    cheque_number: str
    bank: str
    drawer: str
    paid_on: date
    amount_cents: int


def slip_lines(
    payments: Iterable[Mapping[str, Any]], drawer_of: Mapping[str, str]
) -> list[SlipLine]:
    """The cheques of a slip, in the order they were received."""
    lines = [
        SlipLine(
            payment_id=p["payment_id"],
            cheque_number=p["cheque_number"],
            bank=p.get("bank", ""),
            drawer=drawer_of.get(p["payment_id"], ""),
            paid_on=_day(p["paid_on"]) or date.min,
            amount_cents=p["amount_cents"],
        )
        for p in payments
    ]
    return sorted(lines, key=lambda line: (line.paid_on, line.payment_id))


def slip_csv(number: int, lines: Sequence[SlipLine], currency: str) -> str:
    rows: list[list[str]] = [list(SLIP_COLUMNS)]
    for i, line in enumerate(lines, start=1):
        values = [
            str(number),
            str(i),
            line.payment_id,
            line.cheque_number,
            line.bank,
            line.drawer,
            line.paid_on.isoformat(),
            str(line.amount_cents),
            euros(line.amount_cents),
            currency,
        ]
        rows.append([neutralise(v) for v in values])
    return BOM + encode_rows(rows)
