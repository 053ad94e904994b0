"""Every Kafka read and write of the CLI, with the platform's connection settings
(``tribune_shared.bus.kafka_options``: bootstrap servers, TLS, SASL)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from tribune_shared.bus import kafka_options

from tribune_ops.dlq import DLQ_SUFFIX, Parked, ReplayLedger, replay_headers
from tribune_ops.lag import GroupInfo, Partition
from tribune_ops.settings import OpsSettings

#: called after each record read or sent (a progress bar advances)
Tick = Callable[[int], None]


class KafkaOpsError(Exception):
    """Kafka did not answer as needed (the message says what was asked)."""


def _no_tick(_: int) -> None:
    return None


R = TypeVar("R")


async def _patiently(call: Callable[[], Awaitable[R]], seconds: float) -> R:
    """``call()``, again while Kafka answers with a retriable error (a coordinator still
    loading, a leader moving, a connection dropped: what a broker that just started or
    restarted says) for up to ``seconds``. Only reads go through here: they are safe to
    repeat."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = 0.1
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)


class Kafka:
    """One admin client and one group-less reader, opened for a command."""

    def __init__(self, settings: OpsSettings) -> None:
        self.settings = settings
        self._options = kafka_options(settings)
        self._timeout_ms = int(settings.request_timeout_seconds * 1000)

    async def __aenter__(self) -> Kafka:
        # made here, in the running loop, and stopped even when the other fails to start
        self.admin = AIOKafkaAdminClient(
            **self._options, request_timeout_ms=self._timeout_ms, client_id="tribune-ops"
        )
        # read_committed, like the services' consumers: the end offsets they see
        self.reader = AIOKafkaConsumer(
            **self._options,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=self._timeout_ms,
            client_id="tribune-ops-reader",
        )
        try:
            await self.admin.start()
            await self.reader.start()
        except BaseException:
            await self.reader.stop()
            await self.admin.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.reader.stop()
        await self.admin.close()

    async def _read(self, call: Callable[[], Awaitable[R]]) -> R:
        return await _patiently(call, self.settings.request_timeout_seconds)

    # ------------------------------------------------------------ topics and offsets

    async def topics(self) -> dict[str, list[int]]:
        """The platform's topics (under its prefix) and their partitions."""
        prefix = self.settings.topic_prefix
        names = [
            n
            for n in await self._read(self.admin.list_topics)
            if n.startswith(prefix) and not n.startswith("__")
        ]
        if not names:
            return {}
        described = await self._read(lambda: self.admin.describe_topics(names))
        found: dict[str, list[int]] = {}
        for topic in sorted(described, key=lambda t: str(t["topic"])):
            partitions = topic.get("partitions") or []
            found[str(topic["topic"])] = sorted(
                int(p.get("partition", p.get("partition_index"))) for p in partitions
            )
        return found

    async def dlq_topics(self) -> dict[str, list[int]]:
        return {t: p for t, p in (await self.topics()).items() if t.endswith(DLQ_SUFFIX)}

    async def bounds(
        self, partitions: Iterable[Partition]
    ) -> tuple[dict[Partition, int], dict[Partition, int]]:
        """(log start, end) offsets of these partitions."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return {}, {}
        starts = await self._read(lambda: self.reader.beginning_offsets(tps))
        ends = await self._read(lambda: self.reader.end_offsets(tps))
        return (
            {(tp.topic, tp.partition): o for tp, o in starts.items()},
            {(tp.topic, tp.partition): o for tp, o in ends.items()},
        )

    # ------------------------------------------------------------ consumer groups

    async def groups(self) -> list[str]:
        """The consumer groups of this platform (their ids start with the topic prefix),
        the CLI's own replay ledger excepted."""
        prefix = self.settings.topic_prefix
        listed = await self._read(self.admin.list_consumer_groups)
        return sorted(
            {
                str(row[0])
                for row in listed
                if str(row[0]).startswith(prefix) and str(row[0]) != self.settings.replay_group
            }
        )

    async def group_info(self, groups: Sequence[str]) -> dict[str, GroupInfo]:
        """Each group's state and member count, as far as the broker's answer can be read.

        One group per request, one attempt: aiokafka 0.14 fails to decode some groups'
        member descriptions (``Buffer underrun decoding string``, seen with two active
        groups on one coordinator) and drops the connection; such a group shows as
        "unknown" rather than costing the whole report."""
        info: dict[str, GroupInfo] = {}
        for group in groups:
            try:
                responses = await self.admin.describe_consumer_groups([group])
            except KafkaError:
                info[group] = GroupInfo("unknown", None)
                continue
            for response in responses:
                for described in getattr(response, "groups", ()):
                    # (error_code, group, state, protocol_type, protocol, members, ...)
                    info[str(described[1])] = GroupInfo(str(described[2]), len(described[5]))
        return info

    async def committed(
        self, group: str, partitions: Sequence[Partition] | None = None
    ) -> dict[Partition, OffsetAndMetadata]:
        """The group's committed offsets (with their metadata), all or of ``partitions``."""
        wanted = [TopicPartition(t, p) for t, p in partitions] if partitions is not None else None
        offsets = await self._read(
            lambda: self.admin.list_consumer_group_offsets(group, partitions=wanted)
        )
        return {(tp.topic, tp.partition): meta for tp, meta in offsets.items() if meta.offset >= 0}

    # ------------------------------------------------------------ dead-letter queues

    async def read(
        self,
        partitions: Mapping[Partition, tuple[int, int]],
        tick: Tick = _no_tick,
    ) -> list[Parked]:
        """Every message of these partitions between their (start, end) offsets, in offset
        order per partition. Gives up when nothing arrives for the Kafka timeout."""
        todo = {TopicPartition(t, p): bounds for (t, p), bounds in partitions.items()}
        todo = {tp: (s, e) for tp, (s, e) in todo.items() if e > s}
        if not todo:
            return []
        self.reader.assign(list(todo))
        for tp, (start, _) in todo.items():
            self.reader.seek(tp, start)
        out: list[Parked] = []
        loop = asyncio.get_running_loop()
        last = loop.time()
        remaining = set(todo)
        try:
            while remaining:
                polled = await self.reader.getmany(*remaining, timeout_ms=500, max_records=1000)
                for tp, records in polled.items():
                    end = todo[tp][1]
                    wanted = [r for r in records if r.offset < end]
                    out.extend(
                        Parked.from_record(
                            tp.topic,
                            tp.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            r.headers,
                        )
                        for r in wanted
                    )
                    if wanted:
                        tick(len(wanted))
                        last = loop.time()
                for tp in list(remaining):
                    if await self.reader.position(tp) >= todo[tp][1]:
                        remaining.discard(tp)
                if remaining and loop.time() - last > self.settings.request_timeout_seconds:
                    names = sorted(f"{tp.topic}[{tp.partition}]" for tp in remaining)
                    raise KafkaOpsError(f"reading {', '.join(names)} stalled before its end")
        finally:
            self.reader.unsubscribe()
        out.sort(key=lambda p: (p.dlq_topic, p.partition, p.offset))
        return out

    async def ledgers(self, partitions: Sequence[Partition]) -> dict[Partition, ReplayLedger]:
        """What the CLI replayed from these DLQ partitions (its group's commits)."""
        commits = await self.committed(self.settings.replay_group, partitions)
        return {
            part: ReplayLedger.from_commit(
                commits[part].offset if part in commits else None,
                commits[part].metadata if part in commits else None,
            )
            for part in partitions
        }

    async def republish(self, messages: Sequence[Parked], tick: Tick = _no_tick) -> None:
        """Send each message to its original topic, as it was published (value, key,
        original headers: its signature still verifies) and to its original partition when
        that still exists, with ``tribune-replayed-from``. Returns once every message is
        acknowledged by all in-sync replicas."""
        producer = AIOKafkaProducer(
            **self._options,
            enable_idempotence=True,
            acks="all",
            client_id="tribune-ops-replay",
            request_timeout_ms=self._timeout_ms,
        )
        await producer.start()
        try:
            counts: dict[str, int] = {}
            for topic in {m.original_topic for m in messages}:
                counts[topic] = len(await producer.partitions_for(topic))
            pending: list[asyncio.Future[Any]] = []
            for message in messages:
                partition = message.original_partition
                if partition is None or not 0 <= partition < counts[message.original_topic]:
                    partition = None  # the key chooses, as it did at first publication
                future = await producer.send(
                    message.original_topic,
                    message.value,
                    key=message.key,
                    headers=replay_headers(message),
                    partition=partition,
                )
                future.add_done_callback(lambda _f: tick(1))
                pending.append(future)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    async def commit_ledgers(self, ledgers: Mapping[Partition, ReplayLedger]) -> None:
        """Record the ledgers as the replay group's commits (one request for them all)."""
        if not ledgers:
            return
        committer = AIOKafkaConsumer(
            **self._options,
            group_id=self.settings.replay_group,
            enable_auto_commit=False,
            client_id="tribune-ops-ledger",
        )
        await committer.start()
        try:
            tps = {TopicPartition(t, p): ledger for (t, p), ledger in ledgers.items()}
            committer.assign(list(tps))
            await committer.commit(
                {tp: (ledger.watermark, ledger.metadata()) for tp, ledger in tps.items()}
            )
        finally:
            await committer.stop()

    async def reset_group(self, group: str, offsets: Mapping[Partition, int]) -> None:
        """Commit ``offsets`` as the group's positions (a restore sends the services' groups
        back to where the backup was taken). The broker accepts such a commit only while
        the group has no member, so this fails while its workers run."""
        if not offsets:
            return
        committer = AIOKafkaConsumer(
            **self._options,
            group_id=group,
            enable_auto_commit=False,
            client_id="tribune-ops-restore",
            request_timeout_ms=self._timeout_ms,
        )
        await committer.start()
        try:
            tps = {TopicPartition(t, p): offset for (t, p), offset in offsets.items()}
            committer.assign(list(tps))
            await committer.commit(dict(tps))
        finally:
            await committer.stop()
