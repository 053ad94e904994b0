"""The Kafka bus on aiokafka: topics, an idempotent producer and a reliable consumer.

Consumers commit offsets only after processing, remember processed event ids (in the
same transaction as the handler's writes), retry a bounded number of times, then park
the message on ``<topic>-dlq`` with the error and go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError

from tribune_shared.events import TOPICS, Envelope, dlq_topic, utcnow
from tribune_shared.logging import bind_correlation_id, get_logger
from tribune_shared.metrics import (
    CONSUMER_LAG,
    DLQ_MESSAGES,
    EVENTS_HANDLED,
    EVENTS_PUBLISHED,
    HANDLER_RETRIES,
    HANDLER_SECONDS,
)
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store
from tribune_shared.vault import opening, vault_for

log = get_logger(__name__)

Handler = Callable[[Envelope, AsyncClientSession], Awaitable[None]]


# ---------------------------------------------------------------- topics


async def ensure_topics(settings: ServiceSettings, names: Iterable[str] | None = None) -> None:
    """Create the declared topics (and their DLQs) that do not exist yet."""
    wanted = [TOPICS[n] for n in (names if names is not None else TOPICS)]
    new = []
    for spec in wanted:
        config = {"cleanup.policy": "compact"} if spec.compacted else {}
        new.append(NewTopic(settings.topic(spec.name), spec.partitions, 1, topic_configs=config))
        new.append(NewTopic(settings.topic(dlq_topic(spec.name)), 1, 1))
    await create_topics(settings, new)


async def create_topics(settings: ServiceSettings, topics: list[NewTopic]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another process won the race
                pass
    finally:
        await admin.close()


# ---------------------------------------------------------------- producer


def message_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    return [
        ("event_id", envelope.event_id.encode()),
        ("event_type", envelope.type.encode()),
        ("event_version", str(envelope.version).encode()),
        ("correlation_id", envelope.correlation_id.encode()),
    ]


class EventPublisher:
    """Idempotent producer (acks=all). Services publish through their outbox relay."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            client_id=f"{settings.service_name}-producer",
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish_many(self, envelopes: list[Envelope]) -> None:
        """Send a batch and wait until the broker acknowledged every message."""
        futures = []
        for env in envelopes:
            topic = self.settings.topic(env.type)
            futures.append(
                await self.producer.send(
                    topic, env.to_bytes(), key=env.key.encode(), headers=message_headers(env)
                )
            )
            EVENTS_PUBLISHED.labels(self.settings.service_name, env.type).inc()
        await asyncio.gather(*futures)

    async def publish(self, envelope: Envelope) -> None:
        await self.publish_many([envelope])

    async def send_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await self.producer.send_and_wait(topic, value, key=key, headers=headers)


# ---------------------------------------------------------------- consumer


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError")


class ProcessedEvents:
    """Remembers handled event ids per consumer group, inside the handler's transaction."""

    collection = "processed_events"  # TTL index: outbox.kernel_indexes

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run_once(self, group: str, envelope: Envelope, handler: Handler) -> bool:
        """Run ``handler`` unless this event was already handled; True if it ran.

        A concurrent duplicate surfaces as a write conflict or duplicate key and is retried
        by the consumer, after which it is seen here as already processed."""
        key = f"{group}:{envelope.event_id}"
        processed = self.store[self.collection]
        async with self.store.transaction() as session:
            if await processed.find_one({"_id": key}, {"_id": 1}, session=session):
                return False
            await processed.insert_one(
                {"_id": key, "at": utcnow(), "type": envelope.type}, session=session
            )
            await handler(envelope, session)
        return True


class _LagCleanup(ConsumerRebalanceListener):
    """Drops the lag of partitions this worker no longer owns (no stale series)."""

    def __init__(self, group: str) -> None:
        self.group = group

    async def on_partitions_revoked(self, revoked) -> None:
        for tp in revoked:
            try:
                CONSUMER_LAG.remove(self.group, tp.topic, str(tp.partition))
            except KeyError:
                pass

    async def on_partitions_assigned(self, assigned) -> None:
        pass


class EventConsumer:
    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        *,
        group: str,
        handlers: dict[str, Handler],
        dlq_publisher: EventPublisher,
        from_beginning: bool = True,
    ) -> None:
        self.settings = settings
        self.group = settings.topic(group)
        self.handlers = handlers
        self.processed = ProcessedEvents(store)
        self.vault = vault_for(store)
        self.dlq = dlq_publisher
        self._topic_to_type = {settings.topic(t): t for t in handlers}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            isolation_level="read_committed",
            client_id=f"{settings.service_name}-{group}",
        )
        self.consumer.subscribe(list(self._topic_to_type), listener=_LagCleanup(self.group))
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        for event_type in handlers:  # series exist at 0, so the first DLQ message is an increase
            DLQ_MESSAGES.labels(settings.service_name, event_type)
            for outcome in ("ok", "duplicate", "dlq"):
                EVENTS_HANDLED.labels(settings.service_name, event_type, outcome)

    async def start(self) -> None:
        await self.consumer.start()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until asked to stop; in-flight batches finish and commit first."""
        self.ready.set()
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.consumer_batch_max_records
                )
                for tp, records in batches.items():
                    for record in records:
                        await self._process(tp, record)
                    # Commit after processing: a crash before this re-delivers (handled once).
                    await self.consumer.commit({tp: records[-1].offset + 1})
                await self._report_lag()
        finally:
            await self.consumer.stop()

    async def _process(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        event_type = self._topic_to_type.get(tp.topic, tp.topic)
        service = self.settings.service_name
        structlog.contextvars.unbind_contextvars("correlation_id", "event_id")
        try:
            envelope = Envelope.from_bytes(record.value)
        except Exception as exc:  # undecodable: retrying cannot help
            await self._park(tp, record, f"undecodable envelope: {exc}", attempts=0)
            return
        bind_correlation_id(envelope.correlation_id)
        structlog.contextvars.bind_contextvars(event_id=envelope.event_id)
        handler = self.handlers[event_type]
        if envelope.sealed is not None:  # handlers get personal fields in clear (if not erased)
            handler = opening(handler, self.vault)
        attempts = 0
        transient_deadline = time.monotonic() + self.settings.consumer_transient_retry_seconds
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                ran = await self.processed.run_once(self.group, envelope, handler)
                HANDLER_SECONDS.labels(service, event_type).observe(time.perf_counter() - started)
                EVENTS_HANDLED.labels(service, event_type, "ok" if ran else "duplicate").inc()
                log.info(
                    "event.handled" if ran else "event.duplicate_skipped",
                    topic=tp.topic,
                    offset=record.offset,
                    event_type=envelope.type,
                )
                return
            except Exception as exc:
                if _is_transient(exc) and time.monotonic() < transient_deadline:
                    # A conflict with another (possibly orphaned) transaction is not the
                    # handler's fault: wait it out without spending a retry.
                    attempts -= 1
                    log.info("event.transient_conflict", topic=tp.topic, error=repr(exc))
                    await asyncio.sleep(self.settings.consumer_retry_backoff_seconds)
                    continue
                if attempts > self.settings.consumer_max_retries:
                    await self._park(tp, record, repr(exc), attempts=attempts)
                    return
                HANDLER_RETRIES.labels(service, event_type).inc()
                log.warning("event.retry", topic=tp.topic, attempt=attempts, error=repr(exc))
                await asyncio.sleep(self.settings.consumer_retry_backoff_seconds * attempts)

    async def _park(self, tp: TopicPartition, record: ConsumerRecord, error: str, attempts: int):
        event_type = self._topic_to_type.get(tp.topic, tp.topic)
        headers = [
            *list(record.headers or []),
            ("dlq_error", error[:2000].encode()),
            ("dlq_original_topic", tp.topic.encode()),
            ("dlq_partition", str(tp.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_consumer_group", self.group.encode()),
        ]
        await self.dlq.send_raw(dlq_topic(tp.topic), record.value, record.key, headers)
        DLQ_MESSAGES.labels(self.settings.service_name, event_type).inc()
        EVENTS_HANDLED.labels(self.settings.service_name, event_type, "dlq").inc()
        log.error("event.parked_on_dlq", topic=tp.topic, offset=record.offset, error=error)

    async def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = await self.consumer.position(tp)
            CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(
                max(0, high - position)
            )
