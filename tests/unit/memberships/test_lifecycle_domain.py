"""Lifecycle rules: what the sweep records, which renewal reminder is due, a membership's
state at a past day (the electoral roll), and the roll's CSV cells."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from memberships.domain import Membership, MembershipStatus
from memberships.lifecycle.domain import (
    GOOD_STANDING_ON,
    StateOn,
    reminder_due,
    reminder_key,
    reminder_windows,
    roll_header,
    roll_row,
    state_on,
    sweep_steps,
)

S = MembershipStatus
END = date(2026, 12, 31)
GRACE_END = END + timedelta(days=90)


def member(status: S = S.active, starts_on: date | None = date(2026, 1, 10)) -> Membership:
    return Membership(
        "m1",
        "c1",
        "annual",
        status,
        starts_on=starts_on,
        ends_on=END if starts_on else None,
        grace_days=90 if starts_on else 0,
    )


# ---------------------------------------------------------------- the sweep


@pytest.mark.parametrize(
    ("status", "day", "steps"),
    [
        (S.active, END, []),  # the last paid day: still active
        (S.active, END + timedelta(days=1), [S.grace]),
        (S.active, GRACE_END, [S.grace]),  # the last grace day
        (S.active, GRACE_END + timedelta(days=1), [S.grace, S.lapsed]),  # missed sweeps
        (S.grace, GRACE_END, []),
        (S.grace, GRACE_END + timedelta(days=1), [S.lapsed]),
        (S.lapsed, GRACE_END + timedelta(days=400), []),
        (S.cancelled, GRACE_END + timedelta(days=1), []),
    ],
)
def test_the_sweep_records_each_transition_time_made(status, day, steps):
    assert sweep_steps(member(status), day) == steps


def test_a_pending_membership_is_never_swept():
    assert sweep_steps(member(S.pending, starts_on=None), date(2030, 1, 1)) == []


# ---------------------------------------------------------------- renewal reminders


def test_reminder_windows_split_the_days_left_between_the_offsets():
    assert reminder_windows([30, 7]) == [(7, 0), (30, 8)]
    assert reminder_windows([7]) == [(7, 0)]


@pytest.mark.parametrize(
    ("days_left", "offset"),
    [(31, None), (30, 30), (8, 30), (7, 7), (0, 7), (-1, None)],
)
def test_the_reminder_due_is_the_nearest_offset_at_or_above_the_days_left(days_left, offset):
    decision = reminder_due(date(2026, 1, 10), END, END - timedelta(days=days_left), [30, 7])
    assert (decision.offset_days if decision else None) == offset
    if decision:
        assert decision.days_left == days_left and decision.send


def test_each_offset_is_settled_once_per_period():
    day = END - timedelta(days=30)
    first = reminder_due(date(2026, 1, 10), END, day, [30, 7])
    assert first is not None and first.keys == (reminder_key(END, 30),)
    assert reminder_due(date(2026, 1, 10), END, day, [30, 7], first.keys) is None
    # a week before the end the 7-day reminder is still due
    week = reminder_due(date(2026, 1, 10), END, END - timedelta(days=5), [30, 7], first.keys)
    assert week is not None and week.offset_days == 7
    # after a renewal the new period has its own reminders
    renewed = END + timedelta(days=365)
    later = reminder_due(
        date(2026, 1, 10), renewed, renewed - timedelta(days=20), [30, 7], first.keys
    )
    assert later is not None and later.offset_days == 30


def test_a_sweep_that_was_down_sends_the_nearest_reminder_only():
    decision = reminder_due(date(2026, 1, 10), END, END - timedelta(days=3), [30, 7])
    assert decision is not None and decision.offset_days == 7
    # the 30-day reminder is settled with it: no burst of stale reminders afterwards
    assert set(decision.keys) == {reminder_key(END, 7), reminder_key(END, 30)}


def test_a_member_who_just_joined_is_not_asked_to_renew_at_once():
    joined = END - timedelta(days=20)  # paid on December 11 for a calendar year
    early = reminder_due(joined, END, joined, [30, 7])
    assert early is not None and early.offset_days == 30 and not early.send
    late = reminder_due(joined, END, END - timedelta(days=7), [30, 7], early.keys)
    assert late is not None and late.offset_days == 7 and late.send


def test_no_reminders_configured_means_none():
    assert reminder_due(date(2026, 1, 10), END, END, []) is None


# ---------------------------------------------------------------- state at a day


@pytest.mark.parametrize(
    ("status", "day", "cancelled_on", "state"),
    [
        (S.active, date(2026, 1, 9), None, StateOn.not_started),
        (S.active, date(2026, 1, 10), None, StateOn.active),
        (S.active, END, None, StateOn.active),
        (S.grace, END + timedelta(days=1), None, StateOn.grace),
        (S.active, GRACE_END, None, StateOn.grace),  # not swept yet: the dates decide
        (S.active, GRACE_END + timedelta(days=1), None, StateOn.lapsed),
        # lapsed since: it was active and in grace on the days its period covered
        (S.lapsed, date(2026, 6, 1), None, StateOn.active),
        (S.lapsed, GRACE_END, None, StateOn.grace),
        (S.lapsed, GRACE_END + timedelta(days=1), None, StateOn.lapsed),
        # cancelled on June 1: active before, cancelled from that day on
        (S.cancelled, date(2026, 5, 31), date(2026, 6, 1), StateOn.active),
        (S.cancelled, date(2026, 6, 1), date(2026, 6, 1), StateOn.cancelled),
        (S.cancelled, date(2027, 6, 1), date(2026, 6, 1), StateOn.cancelled),
    ],
)
def test_state_on_a_day_includes_history(status, day, cancelled_on, state):
    assert state_on(member(status), day, cancelled_on) is state


def test_a_pending_membership_never_stood():
    assert state_on(member(S.pending, starts_on=None), END) is StateOn.not_started
    assert state_on(member(S.cancelled, starts_on=None), END, END) is StateOn.cancelled


def test_good_standing_is_active_or_grace():
    assert GOOD_STANDING_ON == {StateOn.active, StateOn.grace}


# ---------------------------------------------------------------- the roll as CSV


def test_roll_cells_are_neutralised_against_formula_injection():
    entry = {
        "contact_id": "c1",
        "given_name": '=HYPERLINK("http://evil")',
        "family_name": "@SUM(A1)",
        "membership_id": "m1",
        "plan": "+annual",
        "state": "active",
        "starts_on": date(2026, 1, 10),
        "ends_on": END,
        "grace_ends_on": None,
        "federation_id": "-paris",
    }
    header = roll_header(True)
    row = dict(zip(header, roll_row(entry, True), strict=True))
    assert row["given_name"] == '\'=HYPERLINK("http://evil")'
    assert row["family_name"] == "'@SUM(A1)"
    assert row["plan"] == "'+annual" and row["federation_id"] == "'-paris"
    assert row["starts_on"] == "2026-01-10" and row["grace_ends_on"] == ""
    assert roll_header(False) == [h for h in header if h not in ("given_name", "family_name")]
    assert len(roll_row(entry, False)) == len(roll_header(False))
