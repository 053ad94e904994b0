"""The faust app of the live figures: two agents (memberships, payments), two tables of
absolute states with changelog topics, and the per-federation figures derived from them.

- Tables are keyed by membership id and payment id, as the topics are, and declared with
  the topics' partition count (from the registry): faust writes a key's changelog to the
  partition of the event that changed it, so a table must be co-partitioned with its
  topics. Store ``memory://``: a restart reads the changelog topics back.
- The per-federation figures are not a table of their own: they are a function of the
  states, so after faust recovered its tables they are rebuilt from them, and between
  recoveries every state change adds its difference. A figure can therefore never drift
  from the states (a changelog of sums could, if one of two writes were lost in a crash).
- Every event is authenticated as the kernel's consumers do (owner, signature) and decoded
  with the kernel's contracts; one that is not trusted or does not decode is counted,
  logged and skipped: the agent never stops on a bad message.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import faust
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import EventT
from prometheus_client import Counter, Histogram
from tribune_shared.bus import authenticity_problem, create_topics, kafka_options
from tribune_shared.events import TOPICS, Envelope, decode, utcnow
from tribune_shared.logging import get_logger

from memberships.live.domain import (
    FederationFigures,
    MembershipState,
    PaymentState,
    Placement,
    membership_fact,
    payment_fact,
)
from memberships.live.watchers import Watchers
from memberships.settings import MembershipsSettings

log = get_logger(__name__)

MEMBERSHIP_TOPICS = (
    "membership-activated",
    "membership-grace-started",
    "membership-lapsed",
    "membership-cancelled",
)
PAYMENT_TOPICS = ("payment-received", "payment-refunded")
LIVE_TOPICS = (*MEMBERSHIP_TOPICS, *PAYMENT_TOPICS)

LIVE_EVENTS = Counter(
    "tribune_live_events_total",
    "Events the live figures read, by outcome (changed, unchanged: a duplicate or a "
    "transition that changes no figure, refused: untrusted or undecodable)",
    ["topic", "outcome"],
)
LIVE_TRAIL = Histogram(
    "tribune_live_trail_seconds",
    "From an event's occurred_at to its effect on the live figures",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def partitions_of(topics: tuple[str, ...]) -> int:
    """The partition count one agent's topics share (its table's count)."""
    counts = {TOPICS[t].partitions for t in topics}
    if len(counts) != 1:
        raise ValueError(f"topics {topics} must be co-partitioned, registry says {counts}")
    return counts.pop()


def _credentials(settings: MembershipsSettings) -> Any:
    """The kernel's Kafka security (tribune_shared.bus.kafka_options) as faust takes it."""
    options = kafka_options(settings)
    ssl_context = options.get("ssl_context")
    if "sasl_mechanism" in options:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=options["sasl_mechanism"],
            ssl_context=ssl_context,
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


class LiveFigures:
    """The faust app and what it keeps; ``figures`` and ``watchers`` are read by the API."""

    def __init__(self, settings: MembershipsSettings) -> None:
        self.settings = settings
        self.zone = settings.zone
        self.figures = FederationFigures()
        self.watchers = Watchers()
        #: set once faust recovered its tables (the figures are complete)
        self.recovered = False
        # resolved once per producer, as the kernel's consumers do (a derived key costs
        # an HMAC, per event otherwise)
        self._keys_of: Callable[[str], tuple[bytes, ...]] = cache(settings.event_keys)
        servers = [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")]
        # faust makes its data folder (tables, leader state) even with memory:// tables;
        # by default in the working directory, where every run and test left one behind.
        # Nothing in it outlives the process (the changelog topics are the durable part).
        self._datadir = Path(tempfile.gettempdir()) / f"tribune-memberships-live-{uuid.uuid4().hex}"
        self.app = faust.App(
            settings.topic(settings.live_app_id),
            broker=servers,
            broker_credentials=_credentials(settings),
            store="memory://",
            datadir=self._datadir,
            # the registry's topics exist (ensure_topics at start); faust declares only
            # its own changelog and assignor topics, with the partitions given here
            topic_allow_declare=True,
            topic_disable_leader=True,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            table_cleanup_interval=3600.0,
            producer_linger=settings.live_changelog_linger_seconds,
        )
        self.membership_states = self.app.Table(
            "membership-states",
            default=None,
            partitions=partitions_of(MEMBERSHIP_TOPICS),
            schema=_state_schema(),
            help="membership id -> its absolute state (memberships.live.domain)",
        )
        self.payment_states = self.app.Table(
            "payment-states",
            default=None,
            partitions=partitions_of(PAYMENT_TOPICS),
            schema=_state_schema(),
            help="payment id -> its absolute state (memberships.live.domain)",
        )
        self.membership_states.on_recover(self._rebuild)
        self.payment_states.on_recover(self._rebuild)
        membership_topic = self.app.topic(
            *(settings.topic(t) for t in MEMBERSHIP_TOPICS), key_type=bytes, value_type=bytes
        )
        payment_topic = self.app.topic(
            *(settings.topic(t) for t in PAYMENT_TOPICS), key_type=bytes, value_type=bytes
        )
        self.app.agent(membership_topic, name="memberships-live.memberships")(self._memberships)
        self.app.agent(payment_topic, name="memberships-live.payments")(self._payments)
        self._prefix = settings.topic_prefix

    # ------------------------------------------------------------ lifecycle

    def changelog_topics(self) -> list[NewTopic]:
        """The tables' changelog topics, compacted, co-partitioned with their sources."""
        return [
            NewTopic(
                table.changelog_topic.get_topic_name(),
                table.partitions,
                1,
                topic_configs={"cleanup.policy": "compact"},
            )
            for table in (self.membership_states, self.payment_states)
        ]

    async def start(self) -> None:
        # created here, not left to faust: started in-process it did not declare them, and
        # a missing changelog crashes every agent (PartitionsMismatch)
        changelogs = self.changelog_topics()
        await create_topics(self.settings, changelogs)
        # and seen with their partitions before faust reads the metadata: a topic just
        # created is not at once in every broker's metadata, and faust would take it for
        # one of 0 partitions (PartitionsMismatch again, and the agents stay down)
        await topics_visible(
            self.settings,
            {t.name: t.num_partitions for t in changelogs}
            | {self.settings.topic(n): TOPICS[n].partitions for n in LIVE_TOPICS},
        )
        await self.app.start()

    async def stop(self) -> None:
        try:
            await self.app.stop()
        finally:
            shutil.rmtree(self._datadir, ignore_errors=True)

    @property
    def ready(self) -> bool:
        """Figures are served once recovered, outside a rebalance, and while both agents
        run: a crashed agent stops counting, so /ready fails and the process is replaced."""
        agents_alive = all(not agent.crashed for agent in self.app.agents.values())
        return self.recovered and not self.app.rebalancing and agents_alive

    async def _rebuild(self) -> None:
        memberships = [MembershipState.from_json(v) for v in self.membership_states.values() if v]
        payments = [PaymentState.from_json(v) for v in self.payment_states.values() if v]
        changed = self.figures.rebuild(memberships, payments)
        self.recovered = True
        self.watchers.notify(changed)
        log.info("live.recovered", memberships=len(memberships), payments=len(payments))

    # ------------------------------------------------------------ agents

    async def _memberships(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            self.on_event(event, self.membership_states, self._membership)

    async def _payments(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            self.on_event(event, self.payment_states, self._payment)

    def on_event(
        self,
        event: EventT,
        table: Any,
        apply: Callable[[Envelope, Any, Any], set[str]],
    ) -> None:
        message = event.message
        topic = message.topic.removeprefix(self._prefix)
        try:
            envelope = Envelope.from_bytes(message.value or b"")
            record = ConsumerRecord(
                message.topic,
                message.partition,
                message.offset,
                int(message.timestamp * 1000),
                0,
                message.key,
                message.value,
                None,
                0,
                0,
                list(message.headers or []),
            )
            problem = authenticity_problem(self._keys_of, topic, envelope, record)
            if problem:
                raise ValueError(problem)
            data = decode(envelope).model_dump(mode="json")
        except Exception as exc:  # a bad message is skipped, never fatal
            LIVE_EVENTS.labels(topic, "refused").inc()
            log.warning("live.event_refused", topic=topic, offset=message.offset, error=str(exc))
            return
        old_raw = table.get(envelope.key)
        changed = apply(envelope, data, old_raw)
        LIVE_EVENTS.labels(topic, "changed" if changed else "unchanged").inc()
        if changed:
            self.watchers.notify(changed)
        LIVE_TRAIL.observe(max(0.0, (utcnow() - envelope.occurred_at).total_seconds()))

    def _membership(self, envelope: Envelope, data: dict[str, Any], old_raw: Any) -> set[str]:
        fact = membership_fact(envelope.type, data, _placement(envelope))
        if fact is None:
            return set()
        old = MembershipState.from_json(old_raw) if old_raw else None
        new = old.merge(fact) if old else fact
        if new == old:
            return set()  # a duplicate (faust after a rebalance, the outbox after a crash)
        self.membership_states[envelope.key] = new.to_json()
        return self.figures.apply_membership(old, new)

    def _payment(self, envelope: Envelope, data: dict[str, Any], old_raw: Any) -> set[str]:
        fact = payment_fact(envelope.type, data, _placement(envelope), self.zone)
        if fact is None:
            return set()
        old = PaymentState.from_json(old_raw) if old_raw else None
        new = old.merge(fact) if old else fact
        if new == old:
            return set()
        self.payment_states[envelope.key] = new.to_json()
        return self.figures.apply_payment(old, new)


async def topics_visible(
    settings: MembershipsSettings, wanted: dict[str, int], timeout: float = 60.0
) -> None:
    """Wait until every topic is described with at least its partition count."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            described = await admin.describe_topics(list(wanted))
            have = {d["topic"]: len(d.get("partitions") or []) for d in described}
            missing = sorted(n for n, p in wanted.items() if have.get(n, 0) < p)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not ready after {timeout:.0f}s: {missing}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _state_schema() -> faust.Schema:
    """Tables hold JSON: a str key (so a recovered key equals a live one) and a dict."""
    return faust.Schema(key_serializer="json", value_serializer="json")


def _placement(envelope: Envelope) -> Placement:
    return Placement(envelope.federation_id, envelope.federation_path, envelope.occurred_at)
