"""Dead-letter queues: what a parked message says, which ones an operator selects, and
which ones were replayed already. Pure: the Kafka reads and writes are tribune_ops.kafka's.

A consumer parks an event it could not apply on ``<topic>-dlq`` with the original value,
key and headers, plus ``dlq_*`` headers saying why (``EventConsumer._park``). A replay
re-publishes it to the original topic as it was (so its signature still verifies), minus
the ``dlq_*`` headers, plus ``tribune-replayed-from``. Every group reading that topic sees
it again; the groups that applied it before skip it (processed event ids), so only the
group that failed applies it.

"Replayed already" is a property of one parked message (a DLQ topic, partition and
offset): it was re-published once. If it fails again it is parked again as a new message
(a new offset, with its new error), which can be replayed in turn. The CLI records what it
replayed as an offset commit of its own consumer group (``REPLAY_GROUP``) on each DLQ
partition, so the record lives beside the DLQ, in Kafka, and any Kafka tool shows it: the
committed offset is a watermark (every message below it was replayed) and the commit's
metadata lists the replayed offsets above it (``ReplayLedger``: filtered replays leave
gaps). A replay skips what the ledger holds unless told ``--again``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tribune_ops.groups import group_matches

DLQ_SUFFIX = "-dlq"
DLQ_HEADER_PREFIX = "dlq_"
#: set on a replayed message: where it was parked (``<dlq topic>:<partition>:<offset>``)
REPLAYED_HEADER = "tribune-replayed-from"
#: the ledger's format in the commit metadata: ``v1:<ranges>``, e.g. ``v1:4-7,9``
LEDGER_VERSION = "v1:"

Headers = tuple[tuple[str, bytes], ...]


def dlq_name(topic: str) -> str:
    """The dead-letter queue of a topic (both with the platform's prefix)."""
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


def original_of(dlq: str) -> str:
    return dlq[: -len(DLQ_SUFFIX)] if dlq.endswith(DLQ_SUFFIX) else dlq


def resolve_topic(argument: str, prefix: str) -> str:
    """The DLQ an operator names: ``contact-created``, ``contact-created-dlq``, with or
    without the platform's prefix; the result has the prefix and the suffix."""
    name = argument.strip()
    if prefix and not name.startswith(prefix):
        name = prefix + name
    return dlq_name(name)


def _text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return value.decode(errors="replace") if value is not None else None


def _number(headers: dict[str, bytes], name: str) -> int | None:
    text = _text(headers, name)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Parked:
    """One message on a dead-letter queue."""

    dlq_topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers
    event_id: str | None
    event_type: str | None
    #: the Kafka group id of the consumer that parked it
    group: str | None
    attempts: int | None
    error: str
    original_topic: str
    original_partition: int | None
    original_offset: int | None

    @classmethod
    def from_record(
        cls,
        dlq_topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]],
    ) -> Parked:
        kept = tuple(headers or ())
        named = dict(kept)
        event_id, event_type = _text(named, "event_id"), _text(named, "event_type")
        if event_id is None or event_type is None:  # headers lost: the envelope may say
            event_id, event_type = _from_value(value, event_id, event_type)
        return cls(
            dlq_topic=dlq_topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            key=key,
            value=value or b"",
            headers=kept,
            event_id=event_id,
            event_type=event_type,
            group=_text(named, "dlq_consumer_group"),
            attempts=_number(named, "dlq_attempts"),
            error=_text(named, "dlq_error") or "(no dlq_error header)",
            original_topic=_text(named, "dlq_original_topic") or original_of(dlq_topic),
            original_partition=_number(named, "dlq_partition"),
            original_offset=_number(named, "dlq_offset"),
        )

    @property
    def replayed_before(self) -> str | None:
        """Where this message was parked before being replayed once already, if it was."""
        return _text(dict(self.headers), REPLAYED_HEADER)

    def as_json(self, replayed: bool) -> dict[str, Any]:
        return {
            "dlq_topic": self.dlq_topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "group": self.group,
            "attempts": self.attempts,
            "error": self.error,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "replayed": replayed,
            "replayed_before_from": self.replayed_before,
        }


def _from_value(
    value: bytes | None, event_id: str | None, event_type: str | None
) -> tuple[str | None, str | None]:
    try:
        envelope = json.loads(value or b"")
    except ValueError:
        return event_id, event_type
    if not isinstance(envelope, dict):
        return event_id, event_type
    found_id, found_type = envelope.get("event_id"), envelope.get("type")
    return (
        event_id or (found_id if isinstance(found_id, str) else None),
        event_type or (found_type if isinstance(found_type, str) else None),
    )


def replay_headers(parked: Parked) -> list[tuple[str, bytes]]:
    """The headers a replayed message carries: the original ones (identity, producer,
    signature), without the dead-letter ones, and where it was replayed from."""
    kept = [
        (name, value)
        for name, value in parked.headers
        if not name.startswith(DLQ_HEADER_PREFIX) and name != REPLAYED_HEADER
    ]
    origin = f"{parked.dlq_topic}:{parked.partition}:{parked.offset}"
    return [*kept, (REPLAYED_HEADER, origin.encode())]


@dataclass(frozen=True)
class Selection:
    """Which parked messages an operator means: ``error`` is a case-insensitive substring
    of the error, ``group`` names the group that parked them (see ``group_matches``),
    ``pending`` keeps only the ones not replayed yet."""

    error: str | None = None
    group: str | None = None
    pending: bool = False

    def matches(self, parked: Parked, replayed: bool, prefix: str) -> bool:
        if self.error and self.error.casefold() not in parked.error.casefold():
            return False
        if self.group and not (parked.group and group_matches(parked.group, self.group, prefix)):
            return False
        return not (self.pending and replayed)


# ---------------------------------------------------------------- replay ledger


@dataclass(frozen=True)
class ReplayLedger:
    """Which offsets of one DLQ partition were replayed: all below ``watermark``, and
    ``above`` (the ones past the first gap)."""

    watermark: int = 0
    above: frozenset[int] = field(default_factory=frozenset)

    def replayed(self, offset: int) -> bool:
        return offset < self.watermark or offset in self.above

    def with_replayed(self, offsets: Iterable[int], log_start: int = 0) -> ReplayLedger:
        """The ledger once ``offsets`` are replayed too. Offsets below ``log_start`` are
        gone (retention), so the watermark moves past them as well."""
        done = set(self.above) | set(offsets)
        watermark = max(self.watermark, log_start)
        while watermark in done:
            watermark += 1
        return ReplayLedger(watermark, frozenset(o for o in done if o >= watermark))

    def metadata(self) -> str:
        """The commit metadata holding ``above``: ``v1:`` and ranges of offsets."""
        return LEDGER_VERSION + ",".join(
            f"{a}" if a == b else f"{a}-{b}" for a, b in _ranges(sorted(self.above))
        )

    @classmethod
    def from_commit(cls, offset: int | None, metadata: str | None) -> ReplayLedger:
        """The ledger a commit holds (no commit: nothing replayed). Metadata it does not
        understand adds nothing: at worst a message is replayed twice, which the
        consumers' deduplication absorbs."""
        watermark = offset if offset is not None and offset >= 0 else 0
        above: set[int] = set()
        text = metadata or ""
        if text.startswith(LEDGER_VERSION):
            for part in filter(None, text[len(LEDGER_VERSION) :].split(",")):
                match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
                if match is None:
                    return cls(watermark)
                low = int(match[1])
                high = int(match[2]) if match[2] else low
                above.update(range(low, high + 1))
        return cls(watermark, frozenset(o for o in above if o >= watermark))


def _ranges(offsets: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs and offset == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs


# ---------------------------------------------------------------- summaries


def error_kind(error: str, width: int = 120) -> str:
    """An error's summary line: its first line, spaces collapsed, cut to ``width``."""
    first = " ".join((error.strip().splitlines() or [""])[0].split())
    return first if len(first) <= width else first[: width - 1] + "…"


@dataclass(frozen=True)
class GroupSummary:
    group: str
    messages: int
    pending: int
    errors: tuple[tuple[str, int], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "messages": self.messages,
            "pending": self.pending,
            "errors": [{"error": e, "count": n} for e, n in self.errors],
        }


@dataclass(frozen=True)
class DlqSummary:
    topic: str
    original_topic: str
    messages: int
    pending: int
    groups: tuple[GroupSummary, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "original_topic": self.original_topic,
            "messages": self.messages,
            "pending": self.pending,
            "replayed": self.messages - self.pending,
            "groups": [g.as_json() for g in self.groups],
        }


def summarize(topic: str, parked: Sequence[tuple[Parked, bool]], top_errors: int = 5) -> DlqSummary:
    """A DLQ's counts per group that parked (pending: not replayed) and its most frequent
    errors, from its messages with whether each was replayed."""
    by_group: dict[str, list[tuple[Parked, bool]]] = {}
    for item in parked:
        by_group.setdefault(item[0].group or "(unknown)", []).append(item)
    groups = []
    for group, items in sorted(by_group.items()):
        kinds = Counter(error_kind(p.error) for p, _ in items)
        groups.append(
            GroupSummary(
                group,
                len(items),
                sum(1 for _, replayed in items if not replayed),
                tuple(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:top_errors]),
            )
        )
    return DlqSummary(
        topic,
        original_of(topic),
        len(parked),
        sum(1 for _, replayed in parked if not replayed),
        tuple(groups),
    )
