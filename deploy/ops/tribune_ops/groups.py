"""Consumer group names: which service and lane a group is, what it should consume, and
how an operator names groups on the command line.

A service's worker reads through one Kafka group per lane (tribune_shared.bus
EventConsumer): ``<prefix><service>`` for the bulk lane, ``<prefix><service>.<lane>`` for
the others. Pure: no I/O.
"""

from __future__ import annotations

from tribune_shared.events import TOPICS
from tribune_shared.events.contracts import Lane


def group_matches(group: str, wanted: str, prefix: str) -> bool:
    """Whether ``group`` (a Kafka group id) is one ``wanted`` names: the exact id, the id
    without the topic prefix, or a service name, which names every lane of it
    (``memberships`` is ``<prefix>memberships`` and ``<prefix>memberships.urgent``)."""
    if group in (wanted, prefix + wanted):
        return True
    return any(group == f"{prefix}{wanted}.{lane.value}" for lane in Lane if lane is not Lane.bulk)


def expected_topics(service: str, lane: Lane) -> list[str]:
    """The event types (unprefixed topics) the registry says ``service`` consumes on
    ``lane``: what its worker's group of that lane subscribes to."""
    return [t for t, spec in TOPICS.items() if service in spec.consumers and spec.lane is lane]


def worker_groups(prefix: str) -> dict[str, list[str]]:
    """Every worker group the registry implies (group id -> its unprefixed topics)."""
    services = sorted({s for spec in TOPICS.values() for s in spec.consumers})
    groups: dict[str, list[str]] = {}
    for service in services:
        for lane in Lane:
            topics = expected_topics(service, lane)
            if topics:
                suffix = "" if lane is Lane.bulk else f".{lane.value}"
                groups[f"{prefix}{service}{suffix}"] = topics
    return groups
