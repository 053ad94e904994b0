"""Membership and payment rules, free of I/O.

A membership goes pending -> active -> grace -> lapsed, or is cancelled. Paying dues
activates a pending membership and renews an active (or grace) one; lapsed and cancelled
are final: dues paid after them start a new membership. Time alone moves an active
membership to grace (after its paid period) and to lapsed (after the grace days), so
"in good standing" (à jour de cotisation) is computed at a date, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from tribune_shared.errors import InvalidField, Refused


class MembershipStatus(StrEnum):
    pending = "pending"
    active = "active"
    grace = "grace"
    lapsed = "lapsed"
    cancelled = "cancelled"


S = MembershipStatus

#: every allowed change of status; lapsed and cancelled are final
TRANSITIONS: dict[MembershipStatus, frozenset[MembershipStatus]] = {
    S.pending: frozenset({S.active, S.cancelled}),
    S.active: frozenset({S.grace, S.cancelled}),
    S.grace: frozenset({S.active, S.lapsed, S.cancelled}),
    S.lapsed: frozenset(),
    S.cancelled: frozenset(),
}
OPEN_STATUSES = frozenset({S.pending, S.active, S.grace})
GOOD_STANDING = frozenset({S.active, S.grace})


class InvalidTransition(Refused):
    """A membership was asked to move to a status it cannot reach from its current one."""


def check_transition(current: MembershipStatus, target: MembershipStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(
            f"a {current.value} membership cannot become {target.value}",
            current=current.value,
            target=target.value,
        )


# ---------------------------------------------------------------- plans and periods


class PlanKind(StrEnum):
    calendar = "calendar"  # ends on December 31 of the year it starts in
    rolling = "rolling"  # lasts a fixed number of days from its start


@dataclass(frozen=True)
class Plan:
    name: str
    kind: PlanKind
    days: int | None = None
    grace_days: int = 30

    def __post_init__(self) -> None:
        if self.kind is PlanKind.rolling and (self.days is None or self.days < 1):
            raise ValueError(f"rolling plan {self.name!r} needs a positive number of days")
        if self.grace_days < 0:
            raise ValueError("grace_days cannot be negative")


@dataclass(frozen=True)
class Period:
    starts_on: date
    ends_on: date  # inclusive


def period_for(plan: Plan, paid_on: date, covered_until: date | None = None) -> Period:
    """The period paid for on ``paid_on``. A payment made while an earlier period still
    runs (``covered_until`` >= ``paid_on``) buys the next period, starting the day after."""
    if covered_until is not None and covered_until >= paid_on:
        start = covered_until + timedelta(days=1)
    else:
        start = paid_on
    if plan.kind is PlanKind.calendar:
        return Period(start, date(start.year, 12, 31))
    assert plan.days is not None
    return Period(start, start + timedelta(days=plan.days - 1))


# ---------------------------------------------------------------- memberships


@dataclass(frozen=True)
class Membership:
    membership_id: str
    contact_id: str
    plan: str
    status: MembershipStatus
    starts_on: date | None = None
    ends_on: date | None = None
    grace_days: int = 0

    @property
    def grace_ends_on(self) -> date | None:
        return self.ends_on + timedelta(days=self.grace_days) if self.ends_on else None

    def status_on(self, day: date) -> MembershipStatus:
        """The status at ``day``, with the passing of time applied (active -> grace -> lapsed)."""
        if self.status in GOOD_STANDING and self.ends_on is not None:
            if day <= self.ends_on:
                return S.active
            assert self.grace_ends_on is not None
            return S.grace if day <= self.grace_ends_on else S.lapsed
        return self.status

    def in_good_standing(self, day: date) -> bool:
        """À jour de cotisation at ``day``: active or in grace, and already started."""
        started = self.starts_on is not None and self.starts_on <= day
        return started and self.status_on(day) in GOOD_STANDING


def new_membership(membership_id: str, contact_id: str, plan: Plan) -> Membership:
    return Membership(membership_id, contact_id, plan.name, S.pending, grace_days=plan.grace_days)


def settle(membership: Membership, day: date) -> Membership:
    """Record the changes time made by ``day`` (active -> grace -> lapsed), each checked."""
    current = membership.status
    target = membership.status_on(day)
    path = {
        (S.active, S.grace): [S.grace],
        (S.active, S.lapsed): [S.grace, S.lapsed],
        (S.grace, S.lapsed): [S.lapsed],
        (S.grace, S.active): [],  # renewed while in grace: already active again
    }.get((current, target), [])
    for step in path:
        check_transition(current, step)
        current = step
    return replace(membership, status=current)


def lapsed_on(membership: Membership) -> date:
    """The first day a membership is no longer in good standing."""
    if membership.grace_ends_on is None:
        raise InvalidTransition("a membership that never started cannot lapse")
    return membership.grace_ends_on + timedelta(days=1)


def pay_dues(membership: Membership, plan: Plan, paid_on: date) -> Membership:
    """Activate (pending) or renew (active, grace) ``membership`` with dues paid on
    ``paid_on``, possibly switching to ``plan``. Call ``settle`` first."""
    if membership.status is S.pending:
        check_transition(S.pending, S.active)
        period = period_for(plan, paid_on)
        return replace(
            membership,
            status=S.active,
            plan=plan.name,
            starts_on=period.starts_on,
            ends_on=period.ends_on,
            grace_days=plan.grace_days,
        )
    if membership.status is S.grace:
        check_transition(S.grace, S.active)
    elif membership.status is not S.active:
        raise InvalidTransition(
            f"a {membership.status.value} membership cannot be renewed; start a new one",
            current=membership.status.value,
            target=S.active.value,
        )
    period = period_for(plan, paid_on, covered_until=membership.ends_on)
    return replace(
        membership,
        status=S.active,
        plan=plan.name,
        ends_on=period.ends_on,
        grace_days=plan.grace_days,
    )


def cancel(membership: Membership) -> Membership:
    check_transition(membership.status, S.cancelled)
    return replace(membership, status=S.cancelled)


# ---------------------------------------------------------------- payments


def check_paid_at(paid_at: datetime, now: datetime, tolerance: timedelta) -> None:
    """A payment cannot have been made in the future (beyond clock skew)."""
    if paid_at > now + tolerance:
        raise InvalidField("paid_at is in the future", field="paid_at")


def amount_check(expected_cents: int | None, paid_cents: int) -> dict[str, int | bool | None]:
    """What the plan expected against what was paid. A difference is recorded and flagged
    for the treasurer, never refused: a member may round up, or pay a rate not declared."""
    if expected_cents is None:
        return {
            "expected_cents": None,
            "paid_cents": paid_cents,
            "difference_cents": None,
            "flagged": False,
        }
    difference = paid_cents - expected_cents
    return {
        "expected_cents": expected_cents,
        "paid_cents": paid_cents,
        "difference_cents": difference,
        "flagged": difference != 0,
    }
