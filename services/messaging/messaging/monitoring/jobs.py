"""The worker's periodic round that sets the campaign gauges.

Every messaging worker runs it and exports the same figures: dashboards and alerts take
the ``max`` per campaign. A campaign's series goes away once it stops sending, so the
gauge holds at most ``MESSAGING_CAMPAIGN_WATCH_MAX_CAMPAIGNS`` series."""

from __future__ import annotations

from prometheus_client import Gauge
from tribune_shared.events import utcnow
from tribune_shared.store import Store
from tribune_shared.worker import BackgroundTask, periodic

from messaging.monitoring.domain import CampaignProgress, measure
from messaging.monitoring.store import CampaignWatchStore
from messaging.settings import MessagingSettings

CAMPAIGNS_SENDING = Gauge("tribune_campaigns_sending", "Campaigns in the sending state")
CAMPAIGNS_WAITING = Gauge(
    "tribune_campaigns_waiting",
    "Sending campaigns with messages due now (or their audience still arriving)",
)
CAMPAIGN_IDLE = Gauge(
    "tribune_campaign_idle_seconds",
    "Per sending campaign: seconds since it last handed a message over (or was launched "
    "or resumed) while messages are due; 0 when nothing waits",
    ["campaign_id"],
)


class CampaignWatch:
    def __init__(self, settings: MessagingSettings, store: Store) -> None:
        self.settings = settings
        self.store = CampaignWatchStore(store)
        self._shown: set[str] = set()

    async def measure(self) -> list[CampaignProgress]:
        now = utcnow()
        campaigns = await self.store.sending(self.settings.campaign_watch_max_campaigns)
        due = await self.store.with_due_messages([c["_id"] for c in campaigns], now)
        return [measure(c, now, c["_id"] in due) for c in campaigns]

    async def round(self) -> list[CampaignProgress]:
        figures = await self.measure()
        publish(figures, self._shown)
        self._shown = {f.campaign_id for f in figures}
        return figures

    def task(self) -> BackgroundTask:
        return periodic(
            "messaging.campaign_watch", self.settings.campaign_watch_interval_seconds, self.round
        )


def publish(figures: list[CampaignProgress], shown_before: set[str]) -> None:
    """Set the gauges; drop the series of campaigns no longer sending."""
    CAMPAIGNS_SENDING.set(len(figures))
    CAMPAIGNS_WAITING.set(sum(1 for f in figures if f.waiting))
    for figure in figures:
        CAMPAIGN_IDLE.labels(figure.campaign_id).set(round(figure.idle_seconds))
    for gone in shown_before - {f.campaign_id for f in figures}:
        CAMPAIGN_IDLE.remove(gone)
