"""The overdue privacy request gauges' figures read from the real store (two aggregations
over the open requests): completed requests do not count, each kind apart."""

from __future__ import annotations

from datetime import timedelta

import pytest
from consent.monitoring.jobs import PrivacyWatch
from consent.privacy_store import PRIVACY_INDEXES, PRIVACY_REQUESTS
from consent.settings import ConsentSettings
from prometheus_client import REGISTRY
from support import run_with_store
from tribune_shared.events import utcnow

pytestmark = pytest.mark.integration
DAY = 86_400


def request(rid: str, kind: str, status: str, age_days: float) -> dict:
    received = utcnow() - timedelta(days=age_days)
    return {
        "_id": rid,
        "kind": kind,
        "status": status,
        "received_at": received,
        "deadline": received + timedelta(days=30),
        "federation_path": "/root/",
    }


def test_open_requests_are_measured_per_kind(isolated_env):
    settings = ConsentSettings()

    async def work(store):
        await store.ensure_indexes(PRIVACY_INDEXES)
        watch = PrivacyWatch(settings, store)
        empty = {f.kind: f for f in await watch.round()}
        await store[PRIVACY_REQUESTS].insert_many(
            [
                request("e1", "erasure", "in_progress", 33),  # 3 days late
                request("e2", "erasure", "in_progress", 27),  # 3 days left
                request("e3", "erasure", "completed", 60),
                request("a1", "access", "open", 2),
                request("a2", "access", "completed", 45),
            ]
        )
        return empty, {f.kind: f for f in await watch.round()}

    empty, figures = run_with_store(settings, work)
    assert empty["erasure"].open == 0 and empty["erasure"].seconds_to_deadline is None
    erasure, access = figures["erasure"], figures["access"]
    assert (erasure.open, erasure.overdue) == (2, 1)
    assert erasure.oldest_age_seconds == pytest.approx(33 * DAY, abs=60)
    assert erasure.seconds_to_deadline == pytest.approx(-3 * DAY, abs=60)
    assert (access.open, access.overdue) == (1, 0)
    assert access.seconds_to_deadline == pytest.approx(28 * DAY, abs=60)
    gauge = REGISTRY.get_sample_value
    assert gauge("tribune_privacy_requests_overdue", {"kind": "erasure"}) == 1
    assert gauge("tribune_privacy_request_deadline_seconds", {"kind": "erasure"}) < 0
