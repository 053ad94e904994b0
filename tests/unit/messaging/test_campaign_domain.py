"""Campaign states, identities and the circuit breaker (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from messaging.campaigns.domain import (
    Action,
    BreakerPolicy,
    CampaignStatus,
    ClaimCursor,
    QueuePosition,
    UnsentSweep,
    add_stats,
    breaker_reason,
    check_schedule,
    message_id,
    transition,
)
from tribune_shared.errors import Conflict, InvalidField
from tribune_shared.store import ID_RANGES

S = CampaignStatus


@pytest.mark.parametrize(
    ("current", "action", "target"),
    [
        (S.draft, Action.launch, S.sending),
        (S.scheduled, Action.launch, S.sending),
        (S.draft, Action.schedule, S.scheduled),
        (S.scheduled, Action.schedule, S.scheduled),  # moved to another time
        (S.sending, Action.pause, S.paused),
        (S.paused, Action.resume, S.sending),
        (S.sending, Action.cancel, S.cancelled),
        (S.paused, Action.cancel, S.cancelled),
        (S.draft, Action.cancel, S.cancelled),
    ],
)
def test_allowed_transitions(current, action, target):
    assert transition(current, action) is target


@pytest.mark.parametrize(
    ("current", "action"),
    [
        (S.sending, Action.launch),
        (S.completed, Action.launch),
        (S.cancelled, Action.resume),
        (S.draft, Action.pause),
        (S.completed, Action.cancel),
        (S.sending, Action.schedule),
        (S.failed, Action.resume),
    ],
)
def test_refused_transitions_say_why(current, action):
    with pytest.raises(Conflict) as refused:
        transition(current, action)
    assert current.value in refused.value.message
    assert refused.value.extra["status"] == current.value


def test_one_message_id_per_campaign_and_contact():
    assert message_id("c1", "p1") == message_id("c1", "p1")
    assert len({message_id("c1", "p1"), message_id("c1", "p2"), message_id("c2", "p1")}) == 3


def test_a_schedule_is_in_the_future_within_the_horizon_and_zoned():
    now = datetime(2027, 3, 1, 9, tzinfo=UTC)
    check_schedule(now + timedelta(hours=1), now, timedelta(days=30))
    for at, reason in [
        (now - timedelta(seconds=1), "future"),
        (now + timedelta(days=31), "within 30 days"),
        (datetime(2027, 3, 2, 9), "time zone"),
    ]:
        with pytest.raises(InvalidField) as bad:
            check_schedule(at, now, timedelta(days=30))
        assert reason in bad.value.message and bad.value.field == "at"


POLICY = BreakerPolicy(
    min_sent=100, max_bounce_rate=0.05, max_complaint_rate=0.003, max_unsubscribe_rate=0.02
)


def test_the_breaker_waits_for_a_sample_then_names_the_rate_it_trips_on():
    assert breaker_reason({"sent": 50, "bounced": 40}, POLICY) is None  # too early to judge
    assert breaker_reason({"sent": 1000, "bounced": 50}, POLICY) is None  # exactly 5%: fine
    reason = breaker_reason({"sent": 1000, "bounced": 51}, POLICY)
    assert reason is not None and "bounce rate 5.1%" in reason and "51 of 1000" in reason
    reason = breaker_reason({"sent": 1000, "complained": 4}, POLICY)
    assert reason is not None and reason.startswith("complaint rate")
    reason = breaker_reason({"sent": 1000, "unsubscribed": 21}, POLICY)
    assert reason is not None and reason.startswith("unsubscribe rate")


def test_every_message_says_why_the_person_receives_it():
    from messaging.campaigns.domain import DEFAULT_ORIGIN_LINE, origin_line

    assert origin_line("petition", "Sauvons la gare") == (
        "Vous recevez ce message car vous avez signé notre pétition (Sauvons la gare)."
    )
    assert (
        origin_line("web_form") == "Vous recevez ce message car vous avez rempli notre formulaire."
    )
    assert "fichier loué" in origin_line("rented_file")
    assert origin_line(None) == origin_line("unknown-kind") == DEFAULT_ORIGIN_LINE


def test_an_ab_draw_is_fixed_per_contact_and_splits_the_share_in_halves():
    from messaging.campaigns.domain import ab_variant

    draws = [ab_variant("c1", f"p{i}", 0.2) for i in range(20_000)]
    assert draws == [ab_variant("c1", f"p{i}", 0.2) for i in range(20_000)]  # fixed
    a, b = draws.count("a"), draws.count("b")
    assert 1_800 < a < 2_200 and 1_800 < b < 2_200  # 10% each, give or take
    assert draws.count(None) == 20_000 - a - b  # held for the winner
    # another campaign draws other people
    assert [ab_variant("c2", f"p{i}", 0.2) for i in range(200)] != draws[:200]


def test_the_ab_winner_has_the_better_rate_per_message_sent_and_a_wins_ties():
    from messaging.campaigns.domain import AbMetric, ab_winner

    stats = {"ab": {"a": {"sent": 1000, "clicked": 30}, "b": {"sent": 500, "clicked": 20}}}
    winner, why = ab_winner(stats, AbMetric.clicked)
    assert winner == "b" and "A 3.0%, B 4.0%" in why
    assert ab_winner({}, AbMetric.opened)[0] == "a"  # nothing measured: A
    even = {"ab": {"a": {"sent": 10, "opened": 1}, "b": {"sent": 10, "opened": 1}}}
    assert ab_winner(even, AbMetric.opened)[0] == "a"


def test_an_ab_subject_test_compares_versions_that_differ_only_in_their_subject():
    from messaging.campaigns.domain import check_ab_versions

    a = {"version": 1, "parts": {"subject": "Samedi", "html": "<p>x</p>", "text": "x"}}
    check_ab_versions(a, {**a, "version": 2, "parts": {**a["parts"], "subject": "Ce samedi"}})
    for b, reason in [
        ({**a, "version": 2, "parts": {**a["parts"], "html": "<p>y</p>"}}, "only in their subject"),
        ({**a, "version": 2}, "same subject"),
        (a, "another version"),
    ]:
        with pytest.raises(InvalidField) as bad:
            check_ab_versions(a, b)
        assert reason in bad.value.message
        assert bad.value.field == "ab_test.template_version_b"


def test_statistics_shards_add_up_nested_counters_and_keep_the_campaigns_own():
    own = {"sent": 4, "refused_by": {"no_consent": 1}}
    total = add_stats({}, own)
    add_stats(total, {"sent": 3, "queued": -3, "refused_by": {"no_consent": 1, "suppressed": 2}})
    add_stats(total, {"ab": {"a": {"sent": 1}}, "queued": 5})
    assert total == {
        "sent": 7,
        "queued": 2,
        "refused_by": {"no_consent": 2, "suppressed": 2},
        "ab": {"a": {"sent": 1}},
    }
    assert own == {"sent": 4, "refused_by": {"no_consent": 1}}  # the shards' reader's copy


def test_a_claim_reads_the_queue_in_windows_of_id_ranges_that_adapt_and_wrap() -> None:
    """The claim's windows (ClaimCursor): bounded on both sides, wider after a window with
    too few, narrower after a full one, on after the last id read, and from the first range
    again after the last."""
    first = ClaimCursor("7f")
    assert first.ids() == {"$gte": "7f", "$lt": "80"}
    # too few in it: the next window starts at its end, twice as wide
    wider = first.after(["7f01", "7f99"], wanted=5)
    assert wider == ClaimCursor("80", False, 2)
    assert wider.ids() == {"$gte": "80", "$lt": "82"}
    # a full window: on after the last id read, half as wide (never below one range)
    full = wider.after(["8001", "8005", "81aa"], wanted=3)
    assert full == ClaimCursor("81aa", True, 1)
    assert full.ids() == {"$gt": "81aa", "$lt": "82"}
    # the last range reaches the end of the id space; after it, the first range again
    last = ClaimCursor("ff", False, 4)
    assert last.ids() == {"$gte": "ff"} and last.upper() is None
    assert last.after([], wanted=1) == ClaimCursor("", False, 8)
    assert ClaimCursor("", False, ID_RANGES).ids() == {"$gte": ""}  # the whole queue
    assert ClaimCursor("", False, ID_RANGES).after([], 1).span == ID_RANGES


def test_a_queue_position_follows_each_deferred_time_once_it_has_come() -> None:
    """Times learnt from the store get a cursor each, starting in the dispatcher's range;
    the ones that have come are read earliest first; learning a time again keeps where its
    reading got to."""
    position = QueuePosition.starting_at("a0")
    assert position.now == ClaimCursor("a0") and position.due == {}
    morning = datetime(2027, 3, 1, 7, tzinfo=UTC)
    later = morning + timedelta(hours=2)
    position.learn([later, morning])
    assert position.due == {morning: ClaimCursor("a0"), later: ClaimCursor("a0")}
    assert position.come(morning - timedelta(seconds=1)) == []
    assert position.come(morning) == [morning]
    assert position.come(later + timedelta(minutes=1)) == [morning, later]
    position.due[morning] = ClaimCursor("a7", True, 1)
    position.learn([morning])
    assert position.due[morning] == ClaimCursor("a7", True, 1)
    # a time the dispatcher decided is kept as the store keeps it (UTC, milliseconds)
    paris = ZoneInfo("Europe/Paris")
    position.learn([datetime(2027, 3, 2, 8, 0, 0, 123456, tzinfo=paris)])
    assert datetime(2027, 3, 2, 7, 0, 0, 123000, tzinfo=UTC) in position.due
    assert all(at.tzinfo is UTC for at in position.due)


def test_a_sweep_of_a_cancelled_campaign_starts_every_cursor_in_its_range() -> None:
    """Two workers sweeping one cancelled campaign from different ranges cancel different
    batches: the held, queued and deferred cursors all start where the sweep does."""
    sweep = UnsentSweep.starting_at("c4")
    assert sweep.held == ClaimCursor("c4") and sweep.queued.now == ClaimCursor("c4")
    sweep.queued.learn([datetime(2027, 3, 1, 7, tzinfo=UTC)])
    assert list(sweep.queued.due.values()) == [ClaimCursor("c4")]
