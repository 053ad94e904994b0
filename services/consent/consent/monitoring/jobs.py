"""The worker's periodic round that sets the privacy request gauges (every consent worker
exports the same figures: alerts take the max, or the min of the deadlines)."""

from __future__ import annotations

from prometheus_client import Gauge
from tribune_shared.events import utcnow
from tribune_shared.store import Store
from tribune_shared.worker import BackgroundTask, periodic

from consent.monitoring.domain import PrivacyBacklog, backlog
from consent.monitoring.store import PrivacyWatchStore
from consent.settings import ConsentSettings

REQUESTS_OPEN = Gauge(
    "tribune_privacy_requests_open", "Privacy requests not completed yet", ["kind"]
)
REQUESTS_OVERDUE = Gauge(
    "tribune_privacy_requests_overdue",
    "Privacy requests past their legal deadline and not completed",
    ["kind"],
)
OLDEST_AGE = Gauge(
    "tribune_privacy_request_oldest_age_seconds",
    "Seconds since the oldest open privacy request was received (0: none open)",
    ["kind"],
)
DEADLINE = Gauge(
    "tribune_privacy_request_deadline_seconds",
    "Seconds until the earliest deadline of an open privacy request (negative: passed); "
    "absent when none is open",
    ["kind"],
)


class PrivacyWatch:
    def __init__(self, settings: ConsentSettings, store: Store) -> None:
        self.settings = settings
        self.store = PrivacyWatchStore(store)

    async def measure(self) -> list[PrivacyBacklog]:
        now = utcnow()
        groups = await self.store.open_by_kind()
        overdue = await self.store.overdue_by_kind(now) if groups else {}
        return backlog(groups, overdue, now)

    async def round(self) -> list[PrivacyBacklog]:
        figures = await self.measure()
        publish(figures)
        return figures

    def task(self) -> BackgroundTask:
        return periodic(
            "consent.privacy_watch", self.settings.privacy_watch_interval_seconds, self.round
        )


def publish(figures: list[PrivacyBacklog]) -> None:
    for figure in figures:
        REQUESTS_OPEN.labels(figure.kind).set(figure.open)
        REQUESTS_OVERDUE.labels(figure.kind).set(figure.overdue)
        OLDEST_AGE.labels(figure.kind).set(round(figure.oldest_age_seconds))
        if figure.seconds_to_deadline is None:
            try:  # nothing open: no deadline to alert on
                DEADLINE.remove(figure.kind)
            except KeyError:
                pass
        else:
            DEADLINE.labels(figure.kind).set(round(figure.seconds_to_deadline))
