"""Privacy requests nearing or past their legal deadline (consent.monitoring): the figures
per kind, and the gauges the alerts read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consent.monitoring.domain import PrivacyBacklog, backlog
from consent.monitoring.jobs import publish
from prometheus_client import REGISTRY

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
DAY = 86_400


def test_each_kind_gets_its_open_overdue_oldest_and_nearest_deadline():
    groups = {
        "erasure": {
            "open": 3,
            "oldest_received": NOW - timedelta(days=33),
            "earliest_deadline": NOW - timedelta(days=2),
        }
    }
    figures = {f.kind: f for f in backlog(groups, {"erasure": 1}, NOW)}
    assert figures["erasure"] == PrivacyBacklog("erasure", 3, 1, 33 * DAY, -2 * DAY)
    # a kind with nothing open shows zeros and no deadline
    assert figures["access"] == PrivacyBacklog("access", 0, 0, 0.0, None)


def test_naive_times_from_the_store_are_utc():
    groups = {
        "access": {
            "open": 1,
            "oldest_received": (NOW - timedelta(days=1)).replace(tzinfo=None),
            "earliest_deadline": (NOW + timedelta(days=29)).replace(tzinfo=None),
        }
    }
    [access] = [f for f in backlog(groups, {}, NOW) if f.kind == "access"]
    assert access.oldest_age_seconds == DAY and access.seconds_to_deadline == 29 * DAY


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_the_deadline_gauge_exists_only_while_a_request_is_open():
    publish(
        [
            PrivacyBacklog("erasure", 2, 0, 26.5 * DAY, 4 * DAY),
            PrivacyBacklog("access", 0, 0, 0.0, None),
        ]
    )
    assert sample("tribune_privacy_requests_open", kind="erasure") == 2
    assert sample("tribune_privacy_requests_overdue", kind="erasure") == 0
    assert sample("tribune_privacy_request_oldest_age_seconds", kind="erasure") == 26.5 * DAY
    assert sample("tribune_privacy_request_deadline_seconds", kind="erasure") == 4 * DAY
    assert sample("tribune_privacy_request_deadline_seconds", kind="access") is None
    assert sample("tribune_privacy_requests_open", kind="access") == 0

    publish([PrivacyBacklog("erasure", 0, 0, 0.0, None)])  # all completed
    assert sample("tribune_privacy_request_deadline_seconds", kind="erasure") is None
    assert sample("tribune_privacy_requests_open", kind="erasure") == 0
