"""Meetings' pure rules: a valid meeting, places and the waiting list, which reminder is
due, and the attendance summary with the filter language's ``attended`` node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from contacts.filter_language import (
    FilterError,
    compile_filter,
    dump_filter,
    evaluate,
    parse_filter,
)
from contacts.meetings.domain import (
    MeetingLimits,
    MeetingProblems,
    admit,
    attendance_summary,
    clean_meeting,
    places_left,
    promotable,
    reminder_due,
)

START = datetime(2026, 6, 10, 18, 30, tzinfo=UTC)


def meeting(**fields):
    base = {
        "title": "  Réunion   publique ",
        "kind": "meeting",
        "starts_at": START,
        "ends_at": START + timedelta(hours=2),
        "address": " Salle des fêtes ",
        "commune_insee": "69383",
        "capacity": 50,
    }
    return {**base, **fields}


# ---------------------------------------------------------------- validation


def test_a_meeting_is_normalised():
    paris = timezone(timedelta(hours=2))
    clean = clean_meeting(
        meeting(
            starts_at=datetime(2026, 6, 10, 20, 30, 0, 123456, tzinfo=paris),
            ends_at=datetime(2026, 6, 10, 22, 30, tzinfo=paris),
            commune_insee="2a004",
        ),
        MeetingLimits(),
    )
    assert clean["title"] == "Réunion publique"
    assert clean["address"] == "Salle des fêtes"
    assert clean["commune_insee"] == "2A004"
    # kept as the store keeps it: UTC, milliseconds
    assert clean["starts_at"] == datetime(2026, 6, 10, 18, 30, 0, 123000, tzinfo=UTC)


def test_every_broken_rule_is_named():
    with pytest.raises(MeetingProblems) as caught:
        clean_meeting(
            meeting(
                title=" ",
                kind="party",
                ends_at=START - timedelta(minutes=1),
                commune_insee="7501",
                capacity=0,
            ),
            MeetingLimits(),
        )
    fields = [f for f, _ in caught.value.problems]
    assert fields == ["title", "ends_at", "commune_insee", "kind", "capacity"]


def test_dates_need_a_time_zone_and_a_bounded_duration():
    limits = MeetingLimits(max_duration_hours=4)
    with pytest.raises(MeetingProblems) as naive:
        clean_meeting(meeting(starts_at=datetime(2026, 6, 10, 18, 30)), limits)
    assert naive.value.problems[0][0] == "starts_at"
    with pytest.raises(MeetingProblems) as long:
        clean_meeting(meeting(ends_at=START + timedelta(hours=5)), limits)
    assert long.value.problems == [("ends_at", "at most 4 hours after")]


# ---------------------------------------------------------------- capacity


def test_places_go_in_order_of_arrival_then_the_waiting_list():
    assert admit(3, 1, 4) == ["registered", "registered", "waitlisted", "waitlisted"]
    assert admit(3, 3, 1) == ["waitlisted"]
    assert admit(None, 10_000, 2) == ["registered", "registered"]
    assert places_left(3, 5) == 0  # a lowered capacity never goes negative
    assert places_left(None, 5) is None


def test_freed_places_go_to_the_waiting_list():
    assert promotable(3, 2, 5) == 1
    assert promotable(10, 2, 5) == 5
    assert promotable(None, 2, 5) == 5
    assert promotable(2, 2, 5) == 0


# ---------------------------------------------------------------- reminders


def test_a_reminder_is_due_from_its_offset_until_the_start():
    offsets = [24, 2]
    assert reminder_due(START, offsets, START - timedelta(hours=25)) is None
    due = reminder_due(START, offsets, START - timedelta(hours=23))
    assert due is not None and (due.hours_before, due.settles) == (24, (24,))
    assert reminder_due(START, offsets, START - timedelta(hours=23), settled=[24]) is None
    due = reminder_due(START, offsets, START - timedelta(hours=1), settled=[24])
    assert due is not None and (due.hours_before, due.settles) == (2, (2,))
    assert reminder_due(START, offsets, START) is None  # it has started


def test_a_late_registration_gets_the_nearest_reminder_only():
    due = reminder_due(START, [24, 2], START - timedelta(minutes=30))
    assert due is not None
    assert due.hours_before == 2
    assert due.settles == (2, 24)  # the 24-hour one will never be sent any more


# ---------------------------------------------------------------- attendance in segments

T = datetime(2026, 1, 1, tzinfo=UTC)


def person(*attended: tuple[str, datetime]) -> dict:
    return {"attendance": attendance_summary(attended)}


def test_the_summary_ranks_meetings_from_the_most_recent():
    summary = attendance_summary(
        [("meeting", T), ("canvassing", T + timedelta(days=3)), ("meeting", T + timedelta(1))]
    )
    assert [(m["k"], m["n"], m["at"]) for m in summary] == [
        ("any", 1, T + timedelta(days=3)),
        ("any", 2, T + timedelta(days=1)),
        ("any", 3, T),
        ("canvassing", 1, T + timedelta(days=3)),
        ("meeting", 1, T + timedelta(days=1)),
        ("meeting", 2, T),
    ]
    assert len(attendance_summary([("meeting", T)] * 5, keep=2)) == 4  # two per kind


def attended(kind: str = "any", at_least: int = 1, since: datetime | None = None) -> dict:
    node: dict = {"op": "attended", "kind": kind, "at_least": at_least}
    if since is not None:
        node["since"] = since.isoformat()
    return node


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (attended(), {"twice", "once_last_year", "canvasser"}),
        (attended(since=T), {"twice", "canvasser"}),
        (attended("meeting", since=T), {"twice"}),
        (attended("meeting", 2, since=T), {"twice"}),
        (attended("meeting", 2, since=T + timedelta(days=10)), set()),
        (attended("canvassing"), {"canvasser"}),
        (attended(at_least=2), {"twice"}),
        ({"op": "not", "filter": attended()}, {"never"}),
    ],
)
def test_came_to_at_least_n_meetings_since_a_date(node, expected):
    people = {
        "twice": person(("meeting", T + timedelta(days=5)), ("meeting", T + timedelta(days=20))),
        "once_last_year": person(("meeting", T - timedelta(days=30))),
        "canvasser": person(("canvassing", T + timedelta(days=2))),
        "never": {},
    }
    flt = parse_filter(node)
    assert {name for name, doc in people.items() if evaluate(flt, doc)} == expected
    # the JSON projection (ISO dates) a service holding its own copy would read agrees
    projected = {
        name
        for name, doc in people.items()
        if evaluate(
            flt,
            {"attendance": [{**m, "at": m["at"].isoformat()} for m in doc.get("attendance", [])]},
        )
    }
    assert projected == expected


def test_the_attended_node_compiles_to_one_element_match():
    flt = parse_filter(attended("meeting", 3, since=T))
    assert compile_filter(flt) == {
        "attendance": {"$elemMatch": {"k": "meeting", "n": 3, "at": {"$gte": T}}}
    }
    assert dump_filter(flt)["at_least"] == 3


def test_the_attended_node_is_bounded():
    with pytest.raises(FilterError) as caught:
        parse_filter(attended(at_least=101))
    assert caught.value.problems[0][0] == "filter.at_least"
    with pytest.raises(FilterError):
        parse_filter({"op": "attended", "kind": "party"})


# ---------------------------------------------------------------- merges


def _reg(status: str, minute: int, checked_in: bool = False) -> dict:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 1, 9, minute, tzinfo=UTC)
    return {"status": status, "registered_at": at, "checked_in_at": at if checked_in else None}


def test_a_merge_keeps_the_registration_that_holds_the_most():
    from contacts.meetings.domain import kept_on_merge

    assert kept_on_merge(None, _reg("waitlisted", 5))  # only the merged one: it moves
    assert kept_on_merge(_reg("waitlisted", 1), _reg("registered", 5))  # a place wins
    assert not kept_on_merge(_reg("registered", 5), _reg("waitlisted", 1))
    assert kept_on_merge(_reg("registered", 5), _reg("registered", 9, checked_in=True))
    assert kept_on_merge(_reg("registered", 5), _reg("registered", 1))  # earlier arrival
    assert not kept_on_merge(_reg("registered", 1), _reg("registered", 5))
