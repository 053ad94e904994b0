"""Consumer lag: how far each group's committed offsets are behind the end of each
partition. Pure: the Kafka reads are tribune_ops.kafka's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: a (topic, partition) pair, the topic with its prefix
Partition = tuple[str, int]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    #: the group's committed offset (the next record it will read); None: none committed
    committed: int | None
    end: int
    lag: int


@dataclass(frozen=True)
class GroupLag:
    group: str
    #: the broker's view of the group (Stable, Empty, ...); "absent": the broker has no
    #: such group yet (a worker the registry expects never ran)
    state: str
    #: None: the broker's description could not be read ("unknown" state)
    members: int | None
    partitions: tuple[PartitionLag, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "total_lag": self.total,
            "partitions": [vars(p) for p in self.partitions],
        }


def partition_lag(committed: int | None, start: int, end: int) -> int:
    """Records between where the group resumes and the end. Without a commit (or with one
    below the log start, its records deleted by retention) a worker starts at the log
    start (``EventConsumer`` reads from the beginning), so all of what is left is lag."""
    position = start if committed is None or committed < start else committed
    return max(0, end - position)


@dataclass(frozen=True)
class GroupInfo:
    state: str
    members: int | None


def build_report(
    committed: Mapping[str, Mapping[Partition, int]],
    expected: Mapping[str, Sequence[str]],
    partitions_of: Mapping[str, Sequence[int]],
    starts: Mapping[Partition, int],
    ends: Mapping[Partition, int],
    info: Mapping[str, GroupInfo],
) -> list[GroupLag]:
    """One entry per group, sorted by name.

    ``committed``: the groups the broker knows, with their commits; ``expected``: topics a
    group should read (the registry's worker groups; its partitions without a commit count
    from the log start); ``partitions_of``: the existing topics' partitions; a topic that
    does not exist is left out, and so is an expected group with no existing topic."""
    report = []
    for group in sorted(set(committed) | set(expected)):
        offsets = dict(committed.get(group, {}))
        for topic in expected.get(group, ()):
            for partition in partitions_of.get(topic, ()):
                offsets.setdefault((topic, partition), -1)
        rows = []
        for (topic, partition), offset in sorted(offsets.items()):
            if (topic, partition) not in ends:
                continue  # a topic deleted since the group committed on it
            start, end = starts.get((topic, partition), 0), ends[(topic, partition)]
            known = offset if offset >= 0 else None
            rows.append(
                PartitionLag(topic, partition, known, end, partition_lag(known, start, end))
            )
        if not rows and group not in committed:
            continue
        state = info.get(group, GroupInfo("absent", 0))
        report.append(GroupLag(group, state.state, state.members, tuple(rows)))
    return report
