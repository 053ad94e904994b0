"""Readers of topics that keep something of their own outside the consumers' machinery
(no processed ids, no retries, no DLQ): the gateway's live event recorder, messaging's
revocation feed. They start from the topics' end (what came before is not theirs to
replay), keep only signed events of each topic's owner (counted and logged otherwise), and
when Kafka goes away they connect again after a pause."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from functools import cache
from typing import Protocol

from aiokafka import AIOKafkaConsumer

from tribune_shared.bus import (
    ProducerKeys,
    authenticity_problem,
    ensure_topics,
    kafka_options,
)
from tribune_shared.events import Envelope
from tribune_shared.events.contracts import TOPICS
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings

log = get_logger(__name__)


class Tally(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class TopicReader:
    """Subclasses say what to do with each poll's trusted envelopes (``take``).

    ``group_id``: a consumer group whose offsets ``take`` commits (a view in a store), or
    None: every process reads every partition and commits nothing (a view in memory)."""

    #: what the reader is called in its logs (``<name>.refused``, ``<name>.failed``) and
    #: in its Kafka client id
    name = "topic_reader"

    def __init__(
        self,
        settings: ServiceSettings,
        event_types: Iterable[str],
        *,
        group_id: str | None,
        refused: Tally,
        retry_seconds: float,
        batch: int,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.refused = refused
        self.retry_seconds = retry_seconds
        self.batch = batch
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.event_types = list(event_types)
        self._types = {settings.topic(t): t for t in self.event_types}
        self._keys_of: ProducerKeys = cache(settings.event_keys)
        #: set once its consumer has partitions (it reads what is published from then on)
        self.ready = asyncio.Event()
        owners = {TOPICS[t].owner for t in self.event_types} - {"*"}
        unverifiable = sorted(o for o in owners if not self._keys_of(o))
        if unverifiable:  # every event would be refused: say so at start instead
            raise ValueError(
                f"the {self.name} cannot verify events of {unverifiable}: set "
                + ", ".join(f"TRIBUNE_EVENT_SIGNING_KEYS__{p.upper()}" for p in unverifiable)
            )

    async def take(self, envelopes: list[Envelope], consumer: AIOKafkaConsumer) -> None:
        raise NotImplementedError

    def consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self._types,
            **kafka_options(self.settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            # a view follows what happens from now on: a new deployment does not read the
            # topics' whole history
            auto_offset_reset="latest",
            isolation_level="read_committed",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            client_id=f"{self.settings.service_name}-{self.name.replace('_', '-')}",
        )

    def decode(self, records: list) -> list[Envelope]:
        """The envelopes that can be trusted (``authenticity_problem``); the others are
        counted and logged with the reason."""
        kept: list[Envelope] = []
        for record in records:
            event_type = self._types.get(record.topic)
            try:
                envelope = Envelope.from_bytes(record.value or b"")
            except ValueError:
                problem: str | None = "not an event envelope"
            else:
                problem = (
                    "unknown topic"
                    if event_type is None
                    else authenticity_problem(self._keys_of, event_type, envelope, record)
                )
            if problem is None:
                kept.append(envelope)
            else:
                self.refused.inc()
                log.warning(f"{self.name}.refused", topic=record.topic, problem=problem)
        return kept

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: poll, take. A failing round (Kafka or the store away) is logged
        and read again from the last commit (or the end) after a pause."""
        while not stop.is_set():
            consumer = self.consumer()
            try:
                await ensure_topics(self.settings, self.event_types)
                await consumer.start()
                await self._loop(consumer, stop)
            except Exception as exc:
                log.warning(f"{self.name}.failed", error=repr(exc))
                self.ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=500, max_records=self.batch)
            if consumer.assignment() and not self.ready.is_set():
                for partition in consumer.assignment():  # "latest" resolved now, not later
                    await consumer.position(partition)
                self.ready.set()
            records = [r for part in polled.values() for r in part]
            if records:
                await self.take(self.decode(records), consumer)
