"""The gateway worker's recorder: the registry's ``LIVE_EVENTS`` topics, read with the
stream's own consumer group, kept in the store in batches (one transaction per poll),
offsets committed after. Only signed events of each topic's owner are kept; a message that
is not one is counted and skipped (this is a view: nothing to park or retry)."""

from __future__ import annotations

import asyncio
import contextlib
from functools import cache

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter
from tribune_shared.bus import ProducerKeys, authenticity_problem, ensure_topics, kafka_options
from tribune_shared.events import Envelope, utcnow
from tribune_shared.events.contracts import GATEWAY_LIVE_EVENTS, TOPICS
from tribune_shared.logging import get_logger

from gateway.live_events.store import LiveEventStore
from gateway.settings import GatewaySettings

log = get_logger(__name__)

RECORDED = Counter(
    "tribune_live_events_recorded_total",
    "Events the gateway recorded for its live stream, and messages it skipped",
    ["outcome"],  # recorded | duplicate | refused
)


class LiveEventsRecorder:
    def __init__(self, settings: GatewaySettings, store: LiveEventStore) -> None:
        self.settings = settings
        self.store = store
        self._keys_of: ProducerKeys = cache(settings.event_keys)
        self._types = {settings.topic(t): t for t in GATEWAY_LIVE_EVENTS.reads}
        #: set once its consumer has partitions (it records what is published from then on)
        self.ready = asyncio.Event()
        owners = {TOPICS[t].owner for t in GATEWAY_LIVE_EVENTS.reads} - {"*"}
        unverifiable = sorted(o for o in owners if not self._keys_of(o))
        if unverifiable:  # every event would be refused: say so at start instead
            raise ValueError(
                "the live event recorder cannot verify events of "
                f"{unverifiable}: set "
                + ", ".join(f"TRIBUNE_EVENT_SIGNING_KEYS__{p.upper()}" for p in unverifiable)
            )

    def consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self._types,
            **kafka_options(self.settings),
            group_id=self.settings.topic(GATEWAY_LIVE_EVENTS.app_id),
            enable_auto_commit=False,
            # a dashboard follows what happens from now on: a new deployment does not
            # record the topics' whole history
            auto_offset_reset="latest",
            isolation_level="read_committed",
            client_id=f"{self.settings.service_name}-live-events",
        )

    def decode(self, records: list) -> list[Envelope]:
        kept: list[Envelope] = []
        for record in records:
            event_type = self._types.get(record.topic)
            try:
                envelope = Envelope.from_bytes(record.value or b"")
            except ValueError:
                RECORDED.labels("refused").inc()
                continue
            problem = (
                "unknown topic"
                if event_type is None
                else authenticity_problem(self._keys_of, event_type, envelope, record)
            )
            if problem is not None:
                RECORDED.labels("refused").inc()
                log.warning("live_events.refused", topic=record.topic, problem=problem)
                continue
            kept.append(envelope)
        return kept

    async def run(self, stop: asyncio.Event) -> None:
        """Until SIGTERM: poll, keep the batch, commit. A failing round (the store is down)
        is logged and retried from the last commit after a pause."""
        await ensure_topics(self.settings, list(GATEWAY_LIVE_EVENTS.reads))
        while not stop.is_set():
            consumer = self.consumer()
            try:
                await consumer.start()
                await self._loop(consumer, stop)
            except Exception as exc:
                log.warning("live_events.recorder_failed", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.live_events_retry_seconds)
            finally:
                await consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        batch = self.settings.live_events_batch_size
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=500, max_records=batch)
            if consumer.assignment() and not self.ready.is_set():
                for partition in consumer.assignment():  # "latest" resolved now, not later
                    await consumer.position(partition)
                self.ready.set()
            records = [r for part in polled.values() for r in part]
            if not records:
                continue
            envelopes = self.decode(records)
            kept = await self.store.record(envelopes, utcnow())
            RECORDED.labels("recorded").inc(kept)
            RECORDED.labels("duplicate").inc(len(envelopes) - kept)
            await consumer.commit()
