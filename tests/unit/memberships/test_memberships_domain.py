"""Membership rules: the state machine, periods of calendar and rolling plans, standing,
and the payment rules (French cash limit)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import product

import pytest
from memberships.domain import (
    TRANSITIONS,
    InvalidTransition,
    Membership,
    MembershipStatus,
    Period,
    Plan,
    PlanKind,
    cancel,
    check_paid_at,
    check_transition,
    lapsed_on,
    new_membership,
    pay_dues,
    period_for,
    settle,
)
from tribune_shared.errors import InvalidField

S = MembershipStatus
ANNUAL = Plan("annual", PlanKind.calendar, grace_days=90)
ROLLING = Plan("rolling-year", PlanKind.rolling, days=365, grace_days=30)

ALLOWED = {
    (S.pending, S.active),
    (S.pending, S.cancelled),
    (S.active, S.grace),
    (S.active, S.cancelled),
    (S.grace, S.active),
    (S.grace, S.lapsed),
    (S.grace, S.cancelled),
}


# ---------------------------------------------------------------- state machine


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transitions_pass(current, target):
    check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), [p for p in product(S, S) if p not in ALLOWED])
def test_every_other_transition_is_refused(current, target):
    with pytest.raises(InvalidTransition) as exc:
        check_transition(current, target)
    assert exc.value.status_code == 409
    assert exc.value.extra == {"current": current.value, "target": target.value}


def test_the_table_is_exactly_the_documented_lifecycle():
    assert {(c, t) for c, targets in TRANSITIONS.items() for t in targets} == ALLOWED
    assert TRANSITIONS[S.lapsed] == TRANSITIONS[S.cancelled] == frozenset()


# ---------------------------------------------------------------- periods


def test_calendar_plan_ends_on_december_31_of_the_payment_year():
    assert period_for(ANNUAL, date(2025, 6, 10)) == Period(date(2025, 6, 10), date(2025, 12, 31))
    assert period_for(ANNUAL, date(2025, 12, 31)) == Period(date(2025, 12, 31), date(2025, 12, 31))


def test_calendar_renewal_while_covered_buys_the_next_year():
    period = period_for(ANNUAL, date(2025, 12, 5), covered_until=date(2025, 12, 31))
    assert period == Period(date(2026, 1, 1), date(2026, 12, 31))


def test_calendar_payment_after_the_period_covers_the_current_year():
    period = period_for(ANNUAL, date(2026, 2, 1), covered_until=date(2025, 12, 31))
    assert period == Period(date(2026, 2, 1), date(2026, 12, 31))


def test_rolling_plan_lasts_its_days_inclusive():
    assert period_for(ROLLING, date(2025, 3, 1)) == Period(date(2025, 3, 1), date(2026, 2, 28))
    # 2024 is a leap year: 365 days from Jan 1 end on Dec 30.
    assert period_for(ROLLING, date(2024, 1, 1)).ends_on == date(2024, 12, 30)
    month = Plan("monthly", PlanKind.rolling, days=30)
    assert period_for(month, date(2025, 1, 31)).ends_on == date(2025, 3, 1)


def test_rolling_renewal_while_covered_starts_the_day_after():
    period = period_for(ROLLING, date(2025, 6, 1), covered_until=date(2025, 6, 30))
    assert period == Period(date(2025, 7, 1), date(2026, 6, 30))


def test_a_rolling_plan_needs_days():
    with pytest.raises(ValueError, match="days"):
        Plan("broken", PlanKind.rolling)


# ---------------------------------------------------------------- standing


def _active(starts=date(2025, 1, 10), ends=date(2025, 12, 31), grace=90) -> Membership:
    return Membership("m1", "c1", "annual", S.active, starts, ends, grace)


def test_status_moves_with_time_from_active_to_grace_to_lapsed():
    m = _active()
    assert m.status_on(date(2025, 12, 31)) is S.active
    assert m.status_on(date(2026, 1, 1)) is S.grace
    assert m.status_on(date(2026, 3, 31)) is S.grace  # 90 grace days after Dec 31
    assert m.status_on(date(2026, 4, 1)) is S.lapsed


def test_in_good_standing_is_active_or_grace_at_the_date():
    m = _active()
    assert m.in_good_standing(date(2025, 5, 1))
    assert m.in_good_standing(date(2026, 2, 1))  # grace: still à jour
    assert not m.in_good_standing(date(2026, 4, 1))  # lapsed
    assert not m.in_good_standing(date(2025, 1, 9))  # before it started


def test_pending_and_cancelled_are_not_in_good_standing():
    pending = new_membership("m1", "c1", ANNUAL)
    assert pending.status is S.pending
    assert not pending.in_good_standing(date(2025, 5, 1))
    cancelled = cancel(_active())
    assert cancelled.status is S.cancelled
    assert not cancelled.in_good_standing(date(2025, 5, 1))


# ---------------------------------------------------------------- dues


def test_first_dues_activate_a_pending_membership_for_the_planPeriod():
    paid = pay_dues(new_membership("m1", "c1", ANNUAL), ANNUAL, date(2025, 4, 2))
    assert (paid.status, paid.starts_on, paid.ends_on) == (
        S.active,
        date(2025, 4, 2),
        date(2025, 12, 31),
    )
    assert paid.grace_days == 90


def test_dues_while_active_extend_the_membership_and_keep_its_start():
    renewed = pay_dues(_active(), ANNUAL, date(2025, 11, 20))
    assert renewed.status is S.active
    assert renewed.starts_on == date(2025, 1, 10)
    assert renewed.ends_on == date(2026, 12, 31)


def test_dues_in_grace_make_the_membership_active_again():
    in_grace = settle(_active(), date(2026, 2, 1))
    assert in_grace.status is S.grace
    renewed = pay_dues(in_grace, ANNUAL, date(2026, 2, 1))
    assert renewed.status is S.active
    assert renewed.ends_on == date(2026, 12, 31)
    assert renewed.in_good_standing(date(2026, 6, 1))


def test_dues_may_switch_the_plan_on_renewal():
    renewed = pay_dues(_active(), ROLLING, date(2025, 12, 1))
    assert (renewed.plan, renewed.ends_on, renewed.grace_days) == (
        "rolling-year",
        date(2026, 12, 31),
        30,
    )


@pytest.mark.parametrize("status", [S.lapsed, S.cancelled])
def test_final_memberships_cannot_be_renewed(status):
    m = Membership("m1", "c1", "annual", status, date(2024, 1, 1), date(2024, 12, 31), 90)
    with pytest.raises(InvalidTransition):
        pay_dues(m, ANNUAL, date(2025, 6, 1))


def test_settle_records_grace_then_lapse_and_the_lapse_day():
    m = _active()
    assert settle(m, date(2025, 6, 1)) == m
    lapsed = settle(m, date(2026, 6, 1))
    assert lapsed.status is S.lapsed
    assert lapsed_on(lapsed) == date(2026, 4, 1)


def test_a_lapsed_membership_cannot_be_cancelled():
    with pytest.raises(InvalidTransition):
        cancel(settle(_active(), date(2027, 1, 1)))


# ---------------------------------------------------------------- payment rules


def test_a_payment_cannot_be_dated_in_the_future():
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    check_paid_at(now + timedelta(seconds=60), now, timedelta(seconds=300))
    with pytest.raises(InvalidField) as exc:
        check_paid_at(now + timedelta(hours=1), now, timedelta(seconds=300))
    assert exc.value.field == "paid_at"
