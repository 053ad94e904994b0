"""Campaign states, identities and the circuit breaker (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from messaging.campaigns.domain import (
    Action,
    BreakerPolicy,
    CampaignStatus,
    breaker_reason,
    check_schedule,
    message_id,
    transition,
)
from tribune_shared.errors import Conflict, InvalidField

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
