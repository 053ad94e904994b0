"""The gateway worker's recorder: the registry's ``LIVE_EVENTS`` topics, read with the
stream's own consumer group, kept in the store in batches (one transaction per poll),
offsets committed after. Only signed events of each topic's owner are kept; a message that
is not one is counted and skipped (this is a view: nothing to park or retry)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter
from tribune_shared.events import Envelope, utcnow
from tribune_shared.events.contracts import GATEWAY_LIVE_EVENTS
from tribune_shared.logging import get_logger
from tribune_shared.topic_reader import TopicReader

from gateway.live_events.store import LiveEventStore
from gateway.settings import GatewaySettings

log = get_logger(__name__)

RECORDED = Counter(
    "tribune_live_events_recorded_total",
    "Events the gateway recorded for its live stream, and messages it skipped",
    ["outcome"],  # recorded | duplicate | refused
)


class LiveEventsRecorder(TopicReader):
    name = "live_events"

    def __init__(self, settings: GatewaySettings, store: LiveEventStore) -> None:
        super().__init__(
            settings,
            GATEWAY_LIVE_EVENTS.reads,
            group_id=settings.topic(GATEWAY_LIVE_EVENTS.app_id),
            refused=RECORDED.labels("refused"),
            retry_seconds=settings.live_events_retry_seconds,
            batch=settings.live_events_batch_size,
        )
        self.store = store

    async def take(self, envelopes: list[Envelope], consumer: AIOKafkaConsumer) -> None:
        kept = await self.store.record(envelopes, utcnow())
        RECORDED.labels("recorded").inc(kept)
        RECORDED.labels("duplicate").inc(len(envelopes) - kept)
        await consumer.commit()
