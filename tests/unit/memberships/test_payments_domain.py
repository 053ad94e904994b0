"""Payment rules without I/O: what a reversal takes back, recurring due dates, what a
missed due does to a membership, manual entry dates, remittance slip rows."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from memberships.domain import Membership, MembershipStatus
from memberships.payments.domain import (
    AlreadyReversed,
    Interval,
    ScheduleStatus,
    SlipLine,
    add_interval,
    check_manual_day,
    check_reversible,
    euros,
    grace_after_miss,
    missed_dues,
    resumed_due,
    reverse_standing,
    schedule_target,
    slip_csv,
    slip_lines,
)
from tribune_shared.errors import InvalidField, Refused

S = MembershipStatus


def member(status=S.active, starts="2025-03-15", ends="2026-12-31", grace=90) -> Membership:
    return Membership(
        "m1",
        "c1",
        "annual",
        status,
        starts_on=date.fromisoformat(starts),
        ends_on=date.fromisoformat(ends) if ends else None,
        grace_days=grace,
    )


def paid(payment_id: str, ends_on: str) -> dict:
    return {"status": "active", "payment_id": payment_id, "ends_on": ends_on}


HISTORY = [
    {"status": "pending"},
    paid("p1", "2025-12-31"),
    paid("p2", "2026-12-31"),
]


# ---------------------------------------------------------------- reversals


def test_a_payment_is_reversible_once_and_in_full():
    payment = {"_id": "p", "status": "accepted", "amount_cents": 3000}
    assert check_reversible(payment, "refund", 3000) == "refunded"
    assert check_reversible(payment, "chargeback", 3000) == "charged_back"
    flagged = {**payment, "status": "flagged_for_refund"}
    assert check_reversible(flagged, "refund", 3000) == "refunded"
    with pytest.raises(InvalidField) as partial:
        check_reversible(payment, "refund", 2999)
    assert partial.value.field == "amount_cents"
    for done in ("refunded", "charged_back"):
        with pytest.raises(AlreadyReversed) as again:
            check_reversible({**payment, "status": done}, "refund", 3000)
        assert again.value.status_code == 409


def test_reversing_the_latest_dues_gives_back_the_previous_end():
    change = reverse_standing(member(), HISTORY, "p2")
    assert change is not None
    assert (change.ends_on_before, change.ends_on_after) == (date(2026, 12, 31), date(2025, 12, 31))
    assert not change.cancelled
    assert change.membership.ends_on == date(2025, 12, 31)
    assert change.membership.status is S.active


def test_reversing_older_dues_takes_one_period_off_the_end():
    change = reverse_standing(member(), HISTORY, "p1")
    assert change is not None and change.ends_on_after == date(2025, 12, 31)


def test_reversing_every_paid_period_cancels_the_membership():
    first = reverse_standing(member(), HISTORY, "p2")
    assert first is not None
    history = [
        *HISTORY,
        {"status": "active", "reversed_payment_id": "p2", "ends_on": "2025-12-31"},
    ]
    second = reverse_standing(first.membership, history, "p1")
    assert second is not None and second.cancelled
    assert second.membership.status is S.cancelled


def test_a_single_paid_period_reversed_cancels():
    history = [{"status": "pending"}, paid("p1", "2025-12-31")]
    change = reverse_standing(member(ends="2025-12-31"), history, "p1")
    assert change is not None and change.cancelled and change.ends_on_after is None


def test_a_reversed_payment_or_an_unknown_one_takes_nothing_more():
    history = [*HISTORY, {"reversed_payment_id": "p2", "ends_on": "2025-12-31"}]
    assert reverse_standing(member(ends="2025-12-31"), history, "p2") is None
    assert reverse_standing(member(), HISTORY, "elsewhere") is None


def test_closed_memberships_are_left_alone():
    for status in (S.lapsed, S.cancelled):
        assert reverse_standing(member(status), HISTORY, "p2") is None


def test_reversal_after_a_missed_schedule_goes_back_to_the_moved_end():
    history = [
        {"status": "pending"},
        paid("p1", "2025-12-31"),
        {"status": "grace", "reason": "schedule_missed", "ends_on": "2025-05-31"},
        paid("p2", "2026-07-09"),
    ]
    change = reverse_standing(member(ends="2026-07-09"), history, "p2")
    assert change is not None and change.ends_on_after == date(2025, 5, 31)


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("day", "interval", "anchor", "expected"),
    [
        (date(2025, 1, 31), Interval.monthly, 31, date(2025, 2, 28)),
        (date(2025, 2, 28), Interval.monthly, 31, date(2025, 3, 31)),
        (date(2024, 1, 31), Interval.monthly, 31, date(2024, 2, 29)),
        (date(2025, 11, 15), Interval.quarterly, 15, date(2026, 2, 15)),
        (date(2024, 2, 29), Interval.yearly, 29, date(2025, 2, 28)),
        (date(2025, 12, 5), Interval.monthly, 5, date(2026, 1, 5)),
    ],
)
def test_due_dates_follow_the_interval_on_the_anchor_day(day, interval, anchor, expected):
    assert add_interval(day, interval, anchor) == expected


def test_a_due_date_is_missed_only_after_the_tolerance():
    due = date(2025, 3, 1)
    assert missed_dues(due, Interval.monthly, 1, date(2025, 3, 8), 7) == ([], due)
    assert missed_dues(due, Interval.monthly, 1, date(2025, 3, 9), 7) == (
        [due],
        date(2025, 4, 1),
    )


def test_several_missed_dues_are_each_counted():
    missed, following = missed_dues(date(2025, 1, 1), Interval.monthly, 1, date(2025, 4, 20), 7)
    assert missed == [date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1), date(2025, 4, 1)]
    assert following == date(2025, 5, 1)


def test_a_resumed_schedule_claims_no_due_of_its_pause():
    assert resumed_due(date(2025, 1, 10), Interval.monthly, 10, date(2025, 4, 2)) == date(
        2025, 4, 10
    )
    assert resumed_due(date(2025, 6, 10), Interval.monthly, 10, date(2025, 4, 2)) == date(
        2025, 6, 10
    )


def test_schedule_actions_and_their_refusals():
    assert schedule_target(ScheduleStatus.active, "pause") is ScheduleStatus.paused
    assert schedule_target(ScheduleStatus.paused, "resume") is ScheduleStatus.active
    assert schedule_target(ScheduleStatus.paused, "cancel") is ScheduleStatus.cancelled
    for current, action in (
        (ScheduleStatus.active, "resume"),
        (ScheduleStatus.paused, "pause"),
        (ScheduleStatus.cancelled, "cancel"),
        (ScheduleStatus.cancelled, "resume"),
    ):
        with pytest.raises(Refused):
            schedule_target(current, action)


def test_a_missed_dues_payment_starts_grace_from_the_due_date():
    after = grace_after_miss(member(), date(2025, 6, 1))
    assert after is not None
    assert after.status is S.grace and after.ends_on == date(2025, 5, 31)
    assert after.status_on(date(2025, 6, 10)) is S.grace
    assert after.grace_ends_on == date(2025, 8, 29)
    assert after.in_good_standing(date(2025, 6, 10))


def test_a_miss_after_the_paid_period_or_on_a_closed_membership_changes_nothing():
    assert grace_after_miss(member(ends="2025-05-31"), date(2025, 6, 1)) is None
    assert grace_after_miss(member(S.lapsed), date(2025, 6, 1)) is None
    assert grace_after_miss(member(S.pending, ends=None), date(2025, 6, 1)) is None


# ---------------------------------------------------------------- manual entries


def test_a_manual_entry_is_dated_between_the_backdate_limit_and_today():
    today = date(2025, 6, 1)
    check_manual_day(today, today, 373)
    check_manual_day(date(2024, 5, 24), today, 373)
    for day in (date(2025, 6, 2), date(2024, 5, 23)):
        with pytest.raises(InvalidField) as bad:
            check_manual_day(day, today, 373)
        assert bad.value.field == "paid_on"


# ---------------------------------------------------------------- remittance slips


def test_amounts_read_the_french_way():
    assert euros(5) == "0,05"
    assert euros(123456789) == "1 234 567,89"


def test_slip_csv_lists_the_cheques_in_order_with_safe_cells():
    lines = slip_lines(
        [
            {
                "payment_id": "b",
                "cheque_number": "0002",
                "bank": "=HYPERLINK()",
                "paid_on": "2025-03-02",
                "amount_cents": 5000,
            },
            {
                "payment_id": "a",
                "cheque_number": "0001",
                "bank": "Banque Postale",
                "paid_on": "2025-03-01",
                "amount_cents": 3000,
            },
        ],
        {"a": "Ada Lovelace", "b": "-Bob"},
    )
    assert [line.payment_id for line in lines] == ["a", "b"]
    assert isinstance(lines[0], SlipLine)
    text = slip_csv(7, lines, "EUR")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0][:4] == ["slip_number", "line", "payment_id", "cheque_number"]
    assert rows[1][:6] == ["7", "1", "a", "0001", "Banque Postale", "Ada Lovelace"]
    assert rows[2][4:6] == ["'=HYPERLINK()", "'-Bob"]
    assert rows[2][7:] == ["5000", "50,00", "EUR"]
