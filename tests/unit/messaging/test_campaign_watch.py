"""Stalled campaigns (messaging.monitoring): how long a sending campaign has waited for
progress, and the gauges the alert reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from messaging.monitoring.domain import CampaignProgress, last_progress, measure
from messaging.monitoring.jobs import publish
from prometheus_client import REGISTRY

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def campaign(**fields):
    return {"_id": "c1", "audience": {"resolved": True}, **fields}


def test_idle_counts_from_the_last_message_handed_over():
    c = campaign(launched_at=NOW - timedelta(hours=2), last_sent_at=NOW - timedelta(minutes=20))
    assert measure(c, NOW, has_due=True) == CampaignProgress("c1", True, 1200.0)


def test_a_campaign_that_never_sent_counts_from_its_launch():
    c = campaign(launched_at=NOW - timedelta(minutes=7))
    assert measure(c, NOW, has_due=True).idle_seconds == 420


def test_a_resumed_campaign_counts_from_its_resume():
    c = campaign(
        launched_at=NOW - timedelta(days=1),
        last_sent_at=NOW - timedelta(hours=20),
        audit={"resume": {"by": "u1", "at": NOW - timedelta(minutes=3)}},
    )
    assert last_progress(c) == NOW - timedelta(minutes=3)
    assert measure(c, NOW, has_due=True).idle_seconds == 180


def test_nothing_due_is_not_a_stall():
    # all handed over, deferred to after the quiet hours, or held for an A/B winner
    c = campaign(launched_at=NOW - timedelta(hours=9), last_sent_at=NOW - timedelta(hours=8))
    assert measure(c, NOW, has_due=False) == CampaignProgress("c1", False, 0.0)


def test_an_audience_that_never_arrived_is_waiting():
    c = {"_id": "c1", "launched_at": NOW - timedelta(minutes=30), "audience": {}}
    figure = measure(c, NOW, has_due=False)
    assert figure.waiting and figure.idle_seconds == 1800


def test_naive_times_from_the_store_are_utc():
    c = campaign(launched_at=(NOW - timedelta(minutes=1)).replace(tzinfo=None))
    assert measure(c, NOW, has_due=True).idle_seconds == 60


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_the_gauges_follow_the_sending_campaigns_and_forget_finished_ones():
    publish(
        [CampaignProgress("ca", True, 1500.4), CampaignProgress("cb", False, 0.0)],
        shown_before=set(),
    )
    assert sample("tribune_campaigns_sending") == 2
    assert sample("tribune_campaigns_waiting") == 1
    assert sample("tribune_campaign_idle_seconds", campaign_id="ca") == 1500
    assert sample("tribune_campaign_idle_seconds", campaign_id="cb") == 0

    publish([CampaignProgress("cb", True, 60.0)], shown_before={"ca", "cb"})
    assert sample("tribune_campaign_idle_seconds", campaign_id="ca") is None
    assert sample("tribune_campaign_idle_seconds", campaign_id="cb") == 60
    assert sample("tribune_campaigns_sending") == 1
    publish([], shown_before={"cb"})
    assert sample("tribune_campaign_idle_seconds", campaign_id="cb") is None
    assert sample("tribune_campaigns_sending") == 0
