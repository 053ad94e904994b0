"""Privacy rules: legal deadlines, overdue requests, erasure receipts, retention clocks
(with injected time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from consent.privacy import (
    DEFAULT_RETENTION_RULES,
    RequestStatus,
    RetentionRule,
    add_months,
    check_received_at,
    completions_missing,
    deadline,
    is_overdue,
    receipt,
    retention_cutoff,
    retention_due,
)
from consent.privacy_store import ClockTouch, merged_touches
from consent.settings import ConsentSettings
from pydantic import ValidationError
from tribune_shared.errors import InvalidField


def at(y, m, d, h=12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


@pytest.mark.parametrize(
    ("received", "months", "due"),
    [
        (at(2026, 3, 14), 1, at(2026, 4, 14)),
        (at(2026, 1, 31), 1, at(2026, 2, 28)),  # no Feb 31: the month's last day
        (at(2028, 1, 31), 1, at(2028, 2, 29)),  # leap year
        (at(2026, 12, 15), 1, at(2027, 1, 15)),  # across the year
        (at(2026, 8, 31), 3, at(2026, 11, 30)),
    ],
)
def test_the_answer_is_due_one_calendar_month_after_receipt(received, months, due):
    assert deadline(received, months) == due


def test_add_months_goes_backwards_too():
    assert add_months(at(2026, 3, 31), -1) == at(2026, 2, 28)
    assert add_months(at(2026, 1, 15), -2) == at(2025, 11, 15)


def test_a_request_is_overdue_past_its_deadline_until_answered():
    request = {"status": RequestStatus.open, "deadline": at(2026, 4, 14)}
    assert not is_overdue(request, at(2026, 4, 14))
    assert is_overdue(request, at(2026, 4, 14) + timedelta(seconds=1))
    assert not is_overdue({**request, "status": RequestStatus.completed}, at(2027, 1, 1))
    assert is_overdue({**request, "status": RequestStatus.in_progress}, at(2026, 5, 1))


def test_received_at_is_refused_in_the_future_or_absurdly_old():
    now = at(2026, 6, 1)
    check_received_at(at(2026, 5, 2), now, 1)  # late to record, still fine
    for bad in (now + timedelta(minutes=1), at(2025, 5, 1)):
        with pytest.raises(InvalidField) as exc:
            check_received_at(bad, now, 1)
        assert exc.value.field == "received_at"


def test_the_receipt_lists_every_expected_service_and_what_was_kept():
    done = {
        "contacts": {"completed_at": at(2026, 5, 1, 10)},
        "memberships": {
            "completed_at": at(2026, 5, 1, 11),
            "kept_for_legal_reasons": ["payments: 2 records kept pseudonymised"],
        },
    }
    assert completions_missing(["contacts", "consent", "memberships"], done) == ["consent"]
    done["consent"] = {"completed_at": at(2026, 5, 1, 12)}
    r = receipt(
        ["contacts", "consent", "memberships"],
        done,
        key_destroyed_at=at(2026, 5, 1, 9),
        completed_at=at(2026, 5, 1, 12),
    )
    assert [s["service"] for s in r["services"]] == ["contacts", "consent", "memberships"]
    assert r["services"][1]["completed_at"] == at(2026, 5, 1, 12)
    assert r["kept_for_legal_reasons"] == ["memberships: payments: 2 records kept pseudonymised"]
    assert r["key_destroyed_at"] == at(2026, 5, 1, 9)


PROSPECT, INACTIVE = DEFAULT_RETENTION_RULES


def test_an_unanswered_prospect_is_erased_two_months_after_the_first_message():
    clock = {"origin_kind": "rented_file", "first_message_at": at(2026, 1, 10)}
    assert not retention_due(PROSPECT, clock, at(2026, 3, 9))
    assert retention_due(PROSPECT, clock, at(2026, 3, 10))
    # an answer (any consent granted) stops this clock
    assert not retention_due(PROSPECT, {**clock, "consented_at": at(2026, 1, 12)}, at(2027, 1, 1))
    # no message sent yet: the clock has not started
    assert not retention_due(PROSPECT, {"origin_kind": "rented_file"}, at(2030, 1, 1))
    # only contacts of the rule's origins
    assert not retention_due(PROSPECT, {**clock, "origin_kind": "web_form"}, at(2027, 1, 1))
    # already erased: never twice
    assert not retention_due(PROSPECT, {**clock, "erased": True}, at(2027, 1, 1))


def test_an_inactive_contact_is_erased_three_years_after_the_last_activity():
    clock = {
        "origin_kind": "web_form",
        "created_at": at(2020, 1, 1),
        "last_activity_at": at(2023, 6, 30),
    }
    assert not retention_due(INACTIVE, clock, at(2026, 6, 29))
    assert retention_due(INACTIVE, clock, at(2026, 6, 30))
    # no activity recorded: the creation starts the clock
    assert retention_due(INACTIVE, {"created_at": at(2023, 1, 1)}, at(2026, 1, 1))


@pytest.mark.parametrize("day", [28, 29, 30, 31])
def test_the_store_filter_never_misses_a_due_clock_around_month_ends(day):
    rule = RetentionRule(name="r", clock="inactive", after_months=2)
    started = at(2025, 12, day)
    now = add_months(started, 2)  # due exactly now (clamped to Feb 28)
    assert retention_due(rule, {"last_activity_at": started}, now)
    assert started <= retention_cutoff(rule, now)


def test_retention_rules_are_configurable_as_json(monkeypatch):
    monkeypatch.setenv(
        "CONSENT_RETENTION_RULES",
        '[{"name": "petition-prospects", "clock": "unanswered_prospect", "after_months": 1,'
        ' "origins": ["petition"], "action": "anonymise"}]',
    )
    [rule] = ConsentSettings().retention_rules
    assert (rule.after_months, rule.action, rule.origins) == (1, "anonymise", ["petition"])
    monkeypatch.setenv("CONSENT_RETENTION_RULES", '[{"name": "x", "clock": "never"}]')
    with pytest.raises(ValidationError):
        ConsentSettings()


def test_privacy_settings_have_bounds(monkeypatch):
    settings = ConsentSettings()
    assert settings.privacy_deadline_months == 1
    assert settings.erasure_services == ["contacts", "consent", "memberships", "messaging"]
    monkeypatch.setenv("CONSENT_PRIVACY_DEADLINE_MONTHS", "0")
    with pytest.raises(ValidationError):
        ConsentSettings()


def test_touches_of_one_person_merge_into_what_they_make_one_after_the_other() -> None:
    """A batch's touches are merged per person before one statement per shape: later
    fields set win, the earliest and latest dates and the counts combine, whatever the
    order the events came in."""
    first = ClockTouch(
        "a",
        "f1",
        "/n/f1/",
        set_fields={"origin_kind": "form"},
        earliest={"created_at": at(2026, 1, 5)},
        latest={"last_activity_at": at(2026, 1, 5)},
    )
    sent = ClockTouch(
        "a", "f1", "/n/f1/", earliest={"first_message_at": at(2026, 2, 1)}, inc={"sent": 1}
    )
    older = ClockTouch(
        "a", "f2", "/n/f2/", earliest={"first_message_at": at(2026, 1, 20)}, inc={"sent": 1}
    )
    moved = ClockTouch("a", "f2", "/n/f2/", set_fields={"origin_kind": "event"})
    other = ClockTouch("b", "f1", "/n/f1/", latest={"last_activity_at": at(2026, 3, 1)})

    merged = merged_touches([first, other, sent, older, moved])
    assert [t.contact_id for t in merged] == ["a", "b"]
    a = merged[0]
    assert (a.federation_id, a.federation_path) == ("f2", "/n/f2/")
    assert a.set_fields == {"origin_kind": "event"}
    assert a.earliest == {"created_at": at(2026, 1, 5), "first_message_at": at(2026, 1, 20)}
    assert a.latest == {"last_activity_at": at(2026, 1, 5)}
    assert a.inc == {"sent": 2}
    assert merged[1] == other
    # the same touches as two batches' worth of message-sent share one shape
    assert sent.shape() == older.shape() != first.shape()
