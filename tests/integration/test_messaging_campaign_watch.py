"""The stalled-campaign gauges' figures read from the real store: a hand-off records when
each campaign last sent (never moved back), a campaign with due messages and no recent
hand-off is idle, deferred messages are not due, only sending campaigns are measured."""

from __future__ import annotations

from datetime import timedelta

import pytest
from messaging.campaigns.store import CAMPAIGNS, INDEXES, CampaignStore
from messaging.monitoring.jobs import CampaignWatch
from messaging.settings import MessagingSettings
from messaging.store import MESSAGES
from prometheus_client import REGISTRY
from support import run_with_store
from tribune_shared.events import utcnow

pytestmark = pytest.mark.integration


def campaign(cid: str, status: str, launched_minutes_ago: float) -> dict:
    return {
        "_id": cid,
        "status": status,
        "launched_at": utcnow() - timedelta(minutes=launched_minutes_ago),
        "audience": {"resolved": True},
        "stats": {},
    }


def queued(mid: str, cid: str, not_before=None) -> dict:
    return {"_id": mid, "campaign_id": cid, "status": "queued", "not_before": not_before}


def test_sending_campaigns_are_measured_from_their_last_hand_off(isolated_env):
    settings = MessagingSettings()
    now = utcnow()

    async def work(store):
        await store.ensure_indexes(INDEXES)
        await store[CAMPAIGNS].insert_many(
            [
                campaign("stuck", "sending", 60),
                campaign("deferred", "sending", 60),  # SMS after the quiet hours
                campaign("done", "completed", 60),
            ]
        )
        await store[MESSAGES].insert_many(
            [
                queued("m1", "stuck"),
                queued("m2", "deferred", now + timedelta(hours=8)),
                queued("m3", "done"),
            ]
        )
        campaigns = CampaignStore(store)
        # what a dispatcher's hand-off writes: a later one moves it on, an older never back
        for sent in (now - timedelta(minutes=20), now - timedelta(minutes=40)):
            async with store.transaction() as session:
                await campaigns.count_stats(
                    {"stuck": {"sent": 1, "queued": -1}}, session, last_sent={"stuck": sent}
                )
        stored = (await campaigns.by_ids(["stuck"]))["stuck"]
        return stored, {f.campaign_id: f for f in await CampaignWatch(settings, store).round()}

    stored, figures = run_with_store(settings, work)
    assert stored["stats"]["sent"] == 2
    assert set(figures) == {"stuck", "deferred"}
    assert figures["stuck"].waiting
    assert figures["stuck"].idle_seconds == pytest.approx(20 * 60, abs=30)
    assert not figures["deferred"].waiting and figures["deferred"].idle_seconds == 0
    idle = REGISTRY.get_sample_value
    assert idle("tribune_campaign_idle_seconds", {"campaign_id": "stuck"}) >= 20 * 60 - 30
    assert REGISTRY.get_sample_value("tribune_campaigns_sending") == 2
