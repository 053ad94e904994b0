"""The Kafka bus on aiokafka: topics, an idempotent producer and a reliable consumer.

The consumer handles each partition's poll batch in one store transaction (processed event
ids checked and recorded in bulk, batch-capable handlers writing with bulk operations),
partitions concurrently up to a bound, and commits offsets after the transactions. A
failing event is isolated by splitting its batch until it stands alone, retried a bounded
number of times, then parked on ``<topic>-dlq`` with the error; the rest of the batch is
applied once. Each lane (``TopicSpec.lane``) gets its own consumer, so urgent events never
wait behind a bulk backlog.

Events are authenticated: the publisher signs each message (HMAC-SHA256 of the value with
its service's key, headers ``tribune-producer`` and ``tribune-signature``), and the consumer
accepts an event only from its topic's owner (``TopicSpec.owner``), with a valid signature;
anything else is parked on the DLQ with the reason, never applied. Every client connects
with the settings' Kafka security (TLS, SASL/SCRAM): ``kafka_options``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import InvalidPartitionsError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure

from tribune_shared.events import TOPICS, Envelope, dlq_topic, utcnow
from tribune_shared.events.contracts import Lane
from tribune_shared.federations import current_paths
from tribune_shared.logging import get_logger
from tribune_shared.metrics import (
    BATCH_SIZE,
    CONSUMER_LAG,
    DLQ_MESSAGES,
    EVENTS_HANDLED,
    EVENTS_PUBLISHED,
    HANDLER_RETRIES,
    HANDLER_SECONDS,
)
from tribune_shared.settings import Environment, ServiceSettings
from tribune_shared.store import Store, insert_absent
from tribune_shared.subscriptions import Awaiting, Batch, Handler, Step, apply_steps
from tribune_shared.vault import vault_for

log = get_logger(__name__)

__all__ = [
    "Batch",
    "EventConsumer",
    "EventPublisher",
    "Handler",
    "ProcessedEvents",
    "create_topics",
    "ensure_topics",
    "kafka_options",
]


# ---------------------------------------------------------------- connections


def kafka_options(settings: ServiceSettings) -> dict[str, Any]:
    """What every Kafka client of the kernel (producer, consumer, admin) connects with: the
    bootstrap servers, and the transport security and credentials of the settings.

    Production refuses an unauthenticated connection: anyone who reaches the broker could
    otherwise read every event and publish their own."""
    sasl = settings.kafka_security_protocol.startswith("SASL_")
    if settings.environment is Environment.production and not (sasl or settings.kafka_ssl_certfile):
        raise ValueError(
            f"{settings.env_names('kafka_security_protocol')} is "
            f"{settings.kafka_security_protocol}: in production every service authenticates "
            "to Kafka (SASL_SSL or SASL_PLAINTEXT with its own SCRAM user, or SSL with a "
            "client certificate)"
        )
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        # the system's CAs unless a bundle is named; the broker's host name is checked
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if sasl:
        password = settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    return options


# ---------------------------------------------------------------- topics


async def ensure_topics(settings: ServiceSettings, names: Iterable[str] | None = None) -> None:
    """Create the declared topics (and their DLQs) that do not exist yet, and raise the
    partition count of those that have fewer than the registry declares (never lowers
    it). Raising it moves some keys to new partitions: events of one key published before
    and after may then be consumed out of order once, which the projections absorb
    (versions, apply-if-newer); do it in a quiet moment."""
    wanted = [TOPICS[n] for n in (names if names is not None else TOPICS)]
    new = []
    for spec in wanted:
        config = {"cleanup.policy": "compact"} if spec.compacted else {}
        new.append(NewTopic(settings.topic(spec.name), spec.partitions, 1, topic_configs=config))
        new.append(NewTopic(settings.topic(dlq_topic(spec.name)), 1, 1))
    await create_topics(settings, new)


async def create_topics(settings: ServiceSettings, topics: list[NewTopic]) -> None:
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another process won the race
                pass
        present = {t.name: t.num_partitions for t in topics if t.name in existing}
        if present:
            grow = {}
            for described in await admin.describe_topics(list(present)):
                name = described["topic"]
                have = len(described.get("partitions") or [])
                if have and have < present[name]:
                    grow[name] = NewPartitions(total_count=present[name])
            if grow:
                log.warning("topics.partitions_raised", topics=sorted(grow))
                try:
                    await admin.create_partitions(grow)
                except InvalidPartitionsError:  # another process raised them first
                    pass
    finally:
        await admin.close()


# ---------------------------------------------------------------- producer


PRODUCER_HEADER = "tribune-producer"
SIGNATURE_HEADER = "tribune-signature"
_SCHEME = b"sha256="


def signature(value: bytes, key: bytes) -> bytes:
    """The ``tribune-signature`` of a message value: ``sha256=<hex HMAC-SHA256>``."""
    # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than hmac.new (every
    # consumed event is verified: it was a fifth of the live figures' cost per event)
    return _SCHEME + hmac.digest(key, value, "sha256").hex().encode()


def message_headers(
    envelope: Envelope, value: bytes, producer: str, key: bytes
) -> list[tuple[str, bytes]]:
    """The headers of a published event: its identity (tracing, routing without decoding),
    the service that sent it and that service's signature over ``value``."""
    return [
        ("event_id", envelope.event_id.encode()),
        ("event_type", envelope.type.encode()),
        ("event_version", str(envelope.version).encode()),
        ("correlation_id", envelope.correlation_id.encode()),
        (PRODUCER_HEADER, producer.encode()),
        (SIGNATURE_HEADER, signature(value, key)),
    ]


ProducerKeys = Callable[[str], tuple[bytes, ...]]


def authenticity_problem(
    keys_of: ProducerKeys, event_type: str, envelope: Envelope, record: ConsumerRecord
) -> str | None:
    """Why an event read from ``event_type``'s topic cannot be trusted (None: it can): it
    must come from the topic's owner (any service for owner ``*``), say so in its header
    and its envelope alike, be of the topic's type, and carry that producer's signature
    (``keys_of(producer)``: the keys it may have signed with)."""
    headers = dict(record.headers or [])
    claimed = headers.get(PRODUCER_HEADER, b"").decode(errors="replace")
    if not claimed:
        return f"no {PRODUCER_HEADER} header"
    if claimed != envelope.producer:
        return f"signed as {claimed!r} but the envelope says producer {envelope.producer!r}"
    if envelope.type != event_type:
        return f"a {envelope.type!r} event on the {event_type!r} topic"
    spec = TOPICS.get(event_type)
    if spec is None:
        return f"no contract for topic {event_type!r}"
    if spec.owner != "*" and claimed != spec.owner:
        return f"producer {claimed!r} is not the owner of {event_type!r} ({spec.owner!r})"
    keys = keys_of(claimed)
    if not keys:
        return f"no signing key known for producer {claimed!r}"
    sent = headers.get(SIGNATURE_HEADER)
    if not sent:
        return f"no {SIGNATURE_HEADER} header"
    value = record.value or b""
    if not any(hmac.compare_digest(sent, signature(value, key)) for key in keys):
        return f"bad signature for producer {claimed!r}"
    return None


class EventPublisher:
    """Idempotent producer (acks=all), signing every event as its service. Services
    publish through their outbox relay.

    ``producer``: the service this publisher speaks for (default: the settings' own);
    only tools and tests standing in for another service name one, and they need its
    key."""

    def __init__(self, settings: ServiceSettings, producer: str | None = None) -> None:
        self.settings = settings
        self.name = producer or settings.service_name
        keys = settings.event_keys(self.name)
        if not keys:
            raise ValueError(
                f"no event signing key for {self.name!r}: set "
                f"TRIBUNE_EVENT_SIGNING_KEYS__{self.name.upper()}"
            )
        self._key = keys[0]
        self.producer = AIOKafkaProducer(
            **kafka_options(settings),
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            client_id=f"{settings.service_name}-producer",
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish_many(
        self, envelopes: Sequence[Envelope], *, partition: int | None = None
    ) -> None:
        """Send a batch, signed, and wait until the broker acknowledged every message.
        ``partition`` pins them all to one (tests); by default the key chooses."""
        futures = []
        for env in envelopes:
            topic = self.settings.topic(env.type)
            value = env.to_bytes()
            futures.append(
                await self.producer.send(
                    topic,
                    value,
                    key=env.key.encode(),
                    headers=message_headers(env, value, self.name, self._key),
                    partition=partition,
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


class ProcessedEvents:
    """The event ids a service has applied, per consumer group, recorded in the same
    transaction as the handlers' writes (so a redelivery is skipped) and read by the APIs
    for read-your-writes (``tribune_shared.consistency``)."""

    collection = "processed_events"  # expiry: outbox.kernel_indexes

    def __init__(self, store: Store, group: str) -> None:
        self.store = store
        self.group = group

    def key(self, event_id: str) -> str:
        return f"{self.group}:{event_id}"

    async def claim(
        self, envelopes: Sequence[Envelope], session: AsyncClientSession
    ) -> list[Envelope]:
        """The envelopes not applied before (nor earlier in this batch), recorded as applied
        in ``session``: one read and one insert for the whole batch."""
        now = utcnow()
        docs = [{"_id": self.key(e.event_id), "at": now, "type": e.type} for e in envelopes]
        fresh = await insert_absent(self.store[self.collection], docs, session=session)
        return [envelopes[i] for i in fresh]

    async def applied(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids were applied (committed) by this group."""
        keys = [self.key(i) for i in event_ids]
        cut = len(self.group) + 1
        return {
            d["_id"][cut:]
            async for d in self.store[self.collection].find({"_id": {"$in": keys}}, {"_id": 1})
        }


class _Rebalanced(ConsumerRebalanceListener):
    """Forgets what this worker knew of partitions it no longer owns: their lag (no stale
    series) and their held events (the next owner starts from the committed offset)."""

    def __init__(self, group: str, held: dict[TopicPartition, _Hold]) -> None:
        self.group = group
        self.held = held

    async def on_partitions_revoked(self, revoked) -> None:
        for tp in revoked:
            self.held.pop(tp, None)
            try:
                CONSUMER_LAG.remove(self.group, tp.topic, str(tp.partition))
            except KeyError:
                pass

    async def on_partitions_assigned(self, assigned) -> None:
        pass


@dataclass(frozen=True)
class _Item:
    record: ConsumerRecord
    envelope: Envelope


class _Stopping(Exception):
    """The store stayed unreachable until shutdown: leave the batch uncommitted."""


def _waiting_at(items: list[_Item], awaiting: Awaiting) -> int | None:
    """The index of the event that waits (the only one of a batch of one; the one the
    handler named), or None: the batch is split to find it."""
    if len(items) == 1:
        return 0
    if awaiting.event_id is None:
        return None
    return next(
        (i for i, item in enumerate(items) if item.envelope.event_id == awaiting.event_id), None
    )


class _Deferred(Exception):
    """An event awaits another topic's fact (``Awaiting``): its partition stops at it."""

    def __init__(self, item: _Item, reason: str) -> None:
        super().__init__(reason)
        self.item = item
        self.reason = reason


@dataclass
class _Hold:
    """A partition paused at an event that awaits another topic's fact."""

    event_id: str
    since: float  # when the event first waited (monotonic)
    tries: int
    resume_at: float


@dataclass(frozen=True)
class _Outcome:
    """What became of one partition's records in a poll: the ones finished (committed
    next), and the event it stopped at to wait, if any."""

    tp: TopicPartition
    done: list[ConsumerRecord]
    stopped_at: _Deferred | None = None


def _is_outage(exc: BaseException) -> bool:
    # The store (or the vault) cannot be reached: no event is at fault, so nothing is
    # parked; the consumer waits (lag grows and alerts) until it comes back.
    return isinstance(exc, ConnectionFailure)


class EventConsumer:
    """One Kafka consumer of a service: its lane's topics, batched, partitions in parallel.

    ``group`` is the service's logical consumer group: it keys the processed-event ids, so
    every lane (and a replay with another Kafka group) shares one record of what was
    applied. The Kafka group id is ``<topic prefix><group>`` for the bulk lane and
    ``<topic prefix><group>.<lane>`` for the others."""

    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        *,
        group: str,
        handlers: Mapping[str, Step | Sequence[Step]],
        dlq_publisher: EventPublisher,
        lane: Lane = Lane.bulk,
        from_beginning: bool = True,
    ) -> None:
        self.settings = settings
        self.lane = lane
        suffix = "" if lane is Lane.bulk else f".{lane.value}"
        self.group = settings.topic(group) + suffix
        self.steps: dict[str, tuple[Step, ...]] = {
            t: (h,) if callable(h) else tuple(h) for t, h in handlers.items()
        }
        self.processed = ProcessedEvents(store, group)
        self.store = store
        self.vault = vault_for(store)
        self.dlq = dlq_publisher
        self._topic_to_type = {settings.topic(t): t for t in self.steps}
        # the producers' keys, resolved once per producer (derived keys cost an HMAC)
        self._keys_of: ProducerKeys = cache(settings.event_keys)
        owners = {TOPICS[t].owner for t in self.steps if t in TOPICS} - {"*"}
        unverifiable = sorted(o for o in owners if not self._keys_of(o))
        if unverifiable:  # every event would be parked: refuse to start instead
            raise ValueError(
                f"{settings.service_name} consumes events of {unverifiable} but has no key to "
                "verify them: set "
                + ", ".join(f"TRIBUNE_EVENT_SIGNING_KEYS__{p.upper()}" for p in unverifiable)
            )
        self.consumer = AIOKafkaConsumer(
            **kafka_options(settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            isolation_level="read_committed",
            client_id=f"{settings.service_name}-{group}{suffix}",
            # The bulk lane lets the broker gather a fuller batch (one transaction's fixed
            # cost then spreads over many events); the urgent lane takes each event at once.
            fetch_min_bytes=settings.consumer_fetch_min_bytes if lane is Lane.bulk else 1,
            fetch_max_wait_ms=int(settings.consumer_fetch_max_wait_seconds * 1000),
        )
        self._held: dict[TopicPartition, _Hold] = {}
        self.consumer.subscribe(
            list(self._topic_to_type), listener=_Rebalanced(self.group, self._held)
        )
        # a poll's batches of one slot run in the registry's order: causes before effects
        # (contact-created before the consent-confirmation-requested about that contact)
        self._rank = {settings.topic(t): i for i, t in enumerate(TOPICS)}
        self._stopping = asyncio.Event()
        self._limit = asyncio.Semaphore(settings.consumer_partition_concurrency)
        self._lag_due = 0.0  # monotonic time of the next lag refresh
        self.ready = asyncio.Event()
        for event_type in self.steps:  # series exist at 0, so the first DLQ message is an increase
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
        batch = self.settings.consumer_batch_max_records
        try:
            while not self._stopping.is_set():
                self._resume_due()
                polled = await self.consumer.getmany(
                    timeout_ms=200,
                    max_records=batch * self.settings.consumer_partition_concurrency,
                )
                if polled:
                    slots: dict[int, list[tuple[TopicPartition, list[ConsumerRecord]]]] = {}
                    for tp, records in sorted(
                        polled.items(), key=lambda kv: self._rank.get(kv[0].topic, len(TOPICS))
                    ):
                        slots.setdefault(tp.partition, []).append((tp, records))
                    outcomes = [
                        outcome
                        for finished in await asyncio.gather(
                            *(self._slot(batches) for batches in slots.values())
                        )
                        for outcome in finished
                    ]
                    # Commit after the transactions: a crash before this re-delivers, and
                    # the processed ids make the redelivery a no-op.
                    offsets = {o.tp: o.done[-1].offset + 1 for o in outcomes if o.done}
                    if offsets:
                        await self.consumer.commit(offsets)
                    for outcome in outcomes:
                        self._hold(outcome)
                await self._report_lag_when_due()
        finally:
            await self.consumer.stop()

    async def _slot(
        self, batches: list[tuple[TopicPartition, list[ConsumerRecord]]]
    ) -> list[_Outcome]:
        """Handle the batches of one partition number (of every topic) one after the other.

        Every topic is keyed by its aggregate id and created with the same partition count,
        so one person's events sit in the same partition number of every topic: handled in
        one slot, two batches never write the same person's documents at once (a
        contact-created batch and a consent-granted batch both moving retention clocks
        would otherwise lose write conflicts to each other, and re-run, for as long as they
        overlap). Slots run concurrently, up to the configured bound."""
        async with self._limit:
            return [await self._partition(tp, records) for tp, records in batches]

    async def _partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> _Outcome:
        """Handle one partition's records in order. Finished: all of them, unless shutdown
        interrupted a store outage (then none, and nothing is committed) or an event
        awaits another topic's fact (then the ones before it; the partition waits there)."""
        size = self.settings.consumer_batch_max_records
        try:
            for start in range(0, len(records), size):
                await self._chunk(tp, records[start : start + size])
        except _Stopping:
            return _Outcome(tp, [])
        except _Deferred as deferred:
            at = deferred.item.record.offset
            return _Outcome(tp, [r for r in records if r.offset < at], deferred)
        return _Outcome(tp, records)

    # -- events that await another topic's fact

    def _hold(self, outcome: _Outcome) -> None:
        """Pause a partition stopped at an awaiting event and rewind it to that event (it
        is fetched again on resumption); other partitions, the awaited fact's among them,
        go on meanwhile. The waits grow from the retry backoff to at most 5 s."""
        tp, deferred = outcome.tp, outcome.stopped_at
        if deferred is None:
            self._held.pop(tp, None)  # got past whatever it waited for
            return
        now = time.monotonic()
        event_id = deferred.item.envelope.event_id
        held = self._held.get(tp)
        if held is None or held.event_id != event_id:
            held = _Hold(event_id, since=now, tries=0, resume_at=now)
        held.tries += 1
        base = self.settings.consumer_retry_backoff_seconds or 0.1
        held.resume_at = now + min(5.0, base * 2 ** (held.tries - 1))
        self._held[tp] = held
        self.consumer.seek(tp, deferred.item.record.offset)
        self.consumer.pause(tp)
        log.info(
            "event.awaiting",
            topic=tp.topic,
            partition=tp.partition,
            offset=deferred.item.record.offset,
            event_id=event_id,
            tries=held.tries,
            reason=deferred.reason[:300],
        )

    def _resume_due(self) -> None:
        now = time.monotonic()
        for tp, held in self._held.items():
            if held.resume_at <= now and tp in self.consumer.paused():
                self.consumer.resume(tp)

    def _waited(self, item: _Item, tp: TopicPartition) -> float | None:
        """How long ``item`` has waited, if it may wait more (None: its time is up)."""
        held = self._held.get(tp)
        fresh = held is None or held.event_id != item.envelope.event_id
        waited = 0.0 if fresh or held is None else time.monotonic() - held.since
        return waited if waited < self.settings.consumer_dependency_wait_seconds else None

    async def _chunk(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        event_type = self._topic_to_type.get(tp.topic, tp.topic)
        items: list[_Item] = []
        for record in records:
            try:
                envelope = Envelope.from_bytes(record.value)
            except Exception as exc:  # undecodable: retrying cannot help
                await self._park(tp, record, f"undecodable envelope: {exc}", attempts=0)
                continue
            problem = authenticity_problem(self._keys_of, event_type, envelope, record)
            if problem is not None:  # forged or misrouted: never applied, kept for a look
                await self._park(tp, record, f"unauthenticated event: {problem}", attempts=0)
                continue
            items.append(_Item(record, envelope))
        if not items:
            return
        # Handlers get personal fields in clear (unless the person was erased): one vault
        # read for the batch, outside the transaction.
        items = await self._opened(tp, items)
        if not items:
            return
        BATCH_SIZE.labels(self.settings.service_name, event_type).observe(len(items))
        await self._apply(tp, event_type, items, attempt=1)

    async def _opened(self, tp: TopicPartition, items: list[_Item]) -> list[_Item]:
        """The items with their personal fields opened, one vault read for the batch. If the
        batch read fails for another reason than an outage (a data key wrapped by a KEK
        this process does not hold, a corrupt key), each event is opened alone and the
        ones that still fail are parked: one bad key never stops the consumer."""
        try:
            opened = await self._outage_safe(
                lambda: self.vault.open_many([i.envelope for i in items])
            )
            return [_Item(i.record, e) for i, e in zip(items, opened, strict=True)]
        except _Stopping:
            raise
        except Exception:
            log.warning("consumer.vault_batch_failed", topic=tp.topic, size=len(items))
        kept = []
        for item in items:
            try:
                envelope = await self._outage_safe(lambda i=item: self.vault.open(i.envelope))
            except _Stopping:
                raise
            except Exception as exc:
                await self._park(tp, item.record, f"personal fields unreadable: {exc!r}", 0)
                continue
            kept.append(_Item(item.record, envelope))
        return kept

    async def _outage_safe(self, call):
        """Run ``call`` until the store answers (an outage is waited out, never parked)."""
        delay = self.settings.consumer_retry_backoff_seconds or 0.1
        while True:
            try:
                return await call()
            except Exception as exc:
                if not _is_outage(exc):
                    raise
                if self._stopping.is_set():
                    raise _Stopping() from exc
                log.warning("consumer.store_unreachable", group=self.group, error=repr(exc))
                await asyncio.sleep(min(5.0, delay))
                delay *= 2

    async def _apply(
        self, tp: TopicPartition, event_type: str, items: list[_Item], attempt: int
    ) -> None:
        """Apply ``items`` in one transaction; on failure isolate the culprit: split the
        batch until the failing event stands alone, retry it, then park it."""
        service = self.settings.service_name
        started = time.perf_counter()
        try:
            fresh = await self._outage_safe(lambda: self._transaction(event_type, items))
        except _Stopping:
            raise
        except Exception as exc:
            if isinstance(exc, Awaiting) and (at := _waiting_at(items, exc)) is not None:
                # the events before the waiting one are ready: one transaction for them
                if at > 0:
                    await self._apply(tp, event_type, items[:at], attempt=1)
                if self._waited(items[at], tp) is not None:
                    raise _Deferred(items[at], str(exc)) from exc
                waited = self.settings.consumer_dependency_wait_seconds
                await self._park(tp, items[at].record, f"waited {waited:g} s: {exc!r}", attempt)
                if rest := items[at + 1 :]:
                    await self._apply(tp, event_type, rest, attempt=1)
                return
            if len(items) > 1:
                middle = len(items) // 2
                log.info(
                    "consumer.batch_split", topic=tp.topic, size=len(items), error=repr(exc)[:300]
                )
                await self._apply(tp, event_type, items[:middle], attempt=1)
                await self._apply(tp, event_type, items[middle:], attempt=1)
                return
            if attempt > self.settings.consumer_max_retries:
                await self._park(tp, items[0].record, repr(exc), attempts=attempt)
                return
            HANDLER_RETRIES.labels(service, event_type).inc()
            log.warning(
                "event.retry",
                topic=tp.topic,
                offset=items[0].record.offset,
                event_id=items[0].envelope.event_id,
                attempt=attempt,
                error=repr(exc)[:500],
            )
            await asyncio.sleep(self.settings.consumer_retry_backoff_seconds * attempt)
            await self._apply(tp, event_type, items, attempt=attempt + 1)
            return
        elapsed = time.perf_counter() - started
        HANDLER_SECONDS.labels(service, event_type).observe(elapsed)
        EVENTS_HANDLED.labels(service, event_type, "ok").inc(fresh)
        if len(items) > fresh:
            EVENTS_HANDLED.labels(service, event_type, "duplicate").inc(len(items) - fresh)
        # One line per batch (not per event): which correlations it carried, for tracing.
        log.info(
            "events.handled",
            topic=tp.topic,
            partition=tp.partition,
            first_offset=items[0].record.offset,
            last_offset=items[-1].record.offset,
            applied=fresh,
            duplicates=len(items) - fresh,
            duration_ms=round(elapsed * 1000, 1),
            correlation_ids=sorted({i.envelope.correlation_id for i in items})[:50],
        )

    async def _transaction(self, event_type: str, items: list[_Item]) -> int:
        steps = self.steps[event_type]

        async def work(session: AsyncClientSession) -> int:
            fresh = await self.processed.claim([i.envelope for i in items], session)
            if fresh:
                # an event made before its federation moved must not write the old path
                fresh = await current_paths(self.store, fresh, session)
                await apply_steps(steps, fresh, session)
            return len(fresh)

        return await self.store.run_transaction(work, what=f"consume {event_type}")

    async def _park(
        self, tp: TopicPartition, record: ConsumerRecord, error: str, attempts: int
    ) -> None:
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

    async def _report_lag_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._lag_due:
            self._lag_due = now + self.settings.consumer_lag_report_seconds
            await self._report_lag()

    async def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = await self.consumer.position(tp)
            CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(
                max(0, high - position)
            )
