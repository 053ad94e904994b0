"""What a backup is and what a restore decides from it. Pure: no I/O.

A backup is a folder: ``manifest.json`` and one gzip file per collection
(``<role>/<collection>.bson.gz``: concatenated BSON documents, mongodump's own format, so
``mongorestore --gzip`` reads them too). The manifest says when it was taken, with which
tool, every database (by role: a service's name, or ``vault``), every collection with its
document count, size, SHA-256 and indexes, and the Kafka positions taken BEFORE the first
document was copied: each topic's end offsets and each consumer group's committed offsets.

Why the group offsets: a worker commits an offset only after its batch is written, so at
the moment they are read everything below them is in the databases, and the copy, which
starts later, holds it. What comes after them may or may not be in the copy; the restore
sends every group back to them and the workers apply it again: their writes are
idempotent (processed event ids, upserts that keep the newest version), so what the copy
already held changes nothing and what it missed is applied. The erasures among those
events erase their people again.

Topics and databases are named without the platform's prefixes, so a backup restores
into another prefix (a rehearsal next to production, a test).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FORMAT = "tribune-backup/1"
MANIFEST = "manifest.json"
#: the role of the vault's database (the others are named by their service)
VAULT = "vault"
#: copied first in every database, in this order (see ``copy_order``)
FIRST = ("processed_events", "outbox")
#: the event whose records after the backup name the people to erase again
ERASURE_TOPIC = "erasure-requested"

#: a (topic, partition) pair
Partition = tuple[str, int]


class ManifestError(Exception):
    """The backup cannot be trusted (missing, altered, truncated): nothing is restored."""


def copy_order(collections: Iterable[str]) -> list[str]:
    """The order a database's collections are copied in: processed event ids first, then
    the outbox, then the rest by name.

    Why: each consumer transaction writes its processed ids with its effects, and each
    state change its outbox row. A processed id copied first implies its effects were
    written before the effects were copied; an event whose id was not copied is applied
    again at restore. An outbox row copied before the state it belongs to means the
    state is in the copy too; a state change whose row was not copied was published by
    the running relay, so it is on Kafka after the recorded offsets."""
    names = [c for c in collections if not c.startswith("system.")]
    first = [c for c in FIRST if c in names]
    return first + sorted(c for c in names if c not in FIRST)


def file_name(role: str, collection: str) -> str:
    return f"{role}/{collection}.bson.gz"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CollectionCopy:
    name: str
    file: str
    documents: int
    #: size of the gzip file and its SHA-256 (what the restore checks first)
    bytes: int
    sha256: str
    #: index definitions (``_id_`` apart) as the store lists them, in extended JSON
    indexes: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "documents": self.documents,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "indexes": self.indexes,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CollectionCopy:
        return cls(
            name=str(doc["name"]),
            file=str(doc["file"]),
            documents=int(doc["documents"]),
            bytes=int(doc["bytes"]),
            sha256=str(doc["sha256"]),
            indexes=list(doc.get("indexes") or []),
        )


@dataclass(frozen=True)
class DatabaseCopy:
    #: a service's name, or ``vault``
    role: str
    #: its name when it was copied (the restore names it as the target platform does)
    name: str
    collections: list[CollectionCopy]

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "collections": [c.as_json() for c in self.collections],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DatabaseCopy:
        return cls(
            role=str(doc["role"]),
            name=str(doc["name"]),
            collections=[CollectionCopy.from_json(c) for c in doc["collections"]],
        )


#: unprefixed topic -> partition -> offset
TopicOffsets = dict[str, dict[int, int]]


@dataclass(frozen=True)
class KafkaPositions:
    """Kafka as it was just before the copy (names without the topic prefix)."""

    ends: TopicOffsets
    #: unprefixed group id -> its committed offsets
    groups: dict[str, TopicOffsets]

    def as_json(self) -> dict[str, Any]:
        def offsets(o: TopicOffsets) -> dict[str, dict[str, int]]:
            return {t: {str(p): n for p, n in sorted(ps.items())} for t, ps in sorted(o.items())}

        return {
            "end_offsets": offsets(self.ends),
            "group_offsets": {g: offsets(o) for g, o in sorted(self.groups.items())},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KafkaPositions:
        def offsets(o: Mapping[str, Mapping[str, int]]) -> TopicOffsets:
            return {t: {int(p): int(n) for p, n in ps.items()} for t, ps in o.items()}

        return cls(
            ends=offsets(doc["end_offsets"]),
            groups={g: offsets(o) for g, o in doc["group_offsets"].items()},
        )


def positions(
    prefix: str,
    ends: Mapping[Partition, int],
    committed: Mapping[str, Mapping[Partition, int]],
) -> KafkaPositions:
    """The positions as read (prefixed names) -> as recorded (unprefixed)."""

    def strip(name: str) -> str:
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name

    def by_topic(offsets: Mapping[Partition, int]) -> TopicOffsets:
        out: TopicOffsets = {}
        for (topic, partition), offset in offsets.items():
            if prefix and not topic.startswith(prefix):
                continue  # another platform's topic on a shared broker
            out.setdefault(strip(topic), {})[partition] = offset
        return out

    return KafkaPositions(
        ends=by_topic(ends),
        groups={strip(g): by_topic(o) for g, o in committed.items()},
    )


@dataclass(frozen=True)
class Manifest:
    started_at: datetime
    finished_at: datetime
    tool_version: str
    topic_prefix: str
    database_prefix: str
    kafka: KafkaPositions
    databases: list[DatabaseCopy]

    @property
    def documents(self) -> int:
        return sum(c.documents for d in self.databases for c in d.collections)

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "tool_version": self.tool_version,
            "topic_prefix": self.topic_prefix,
            "database_prefix": self.database_prefix,
            "kafka": self.kafka.as_json(),
            "databases": [d.as_json() for d in self.databases],
        }

    def to_text(self) -> str:
        """The manifest file: its body and the body's SHA-256 (a manifest edited or cut
        short is refused)."""
        body = self.body()
        return json.dumps({**body, "sha256": _digest(body)}, indent=2) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Manifest:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{MANIFEST} is not JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ManifestError(f"{MANIFEST} is not a {FORMAT} manifest")
        claimed = doc.pop("sha256", None)
        if claimed != _digest(doc):
            raise ManifestError(f"{MANIFEST} was altered: its checksum does not match")
        try:
            return cls(
                started_at=datetime.fromisoformat(doc["started_at"]),
                finished_at=datetime.fromisoformat(doc["finished_at"]),
                tool_version=str(doc["tool_version"]),
                topic_prefix=str(doc["topic_prefix"]),
                database_prefix=str(doc["database_prefix"]),
                kafka=KafkaPositions.from_json(doc["kafka"]),
                databases=[DatabaseCopy.from_json(d) for d in doc["databases"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{MANIFEST} misses or garbles {exc}") from exc


def _digest(body: Mapping[str, Any]) -> str:
    return sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def check_file(copy: CollectionCopy, found: tuple[int, str] | None) -> str | None:
    """Why a collection's file cannot be restored (None: it is the one backed up);
    ``found``: the file's (size, SHA-256), None if it is missing."""
    if found is None:
        return f"{copy.file}: missing"
    size, sha = found
    if size != copy.bytes:
        return f"{copy.file}: {size:,} bytes, the manifest says {copy.bytes:,}"
    if sha != copy.sha256:
        return f"{copy.file}: checksum mismatch (the file was altered or damaged)"
    return None


# ---------------------------------------------------------------- restore decisions


@dataclass(frozen=True)
class GroupReset:
    """Where one consumer group resumes after the restore."""

    group: str
    offsets: dict[Partition, int]
    #: records between the backup's position and the log start now, deleted by retention
    #: before the restore could replay them (their effects are lost): partition -> count
    lost: dict[Partition, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(self.offsets.items())},
            "lost_to_retention": {f"{t}[{p}]": n for (t, p), n in sorted(self.lost.items())},
        }


def group_resets(
    kafka: KafkaPositions,
    groups: Mapping[str, Sequence[str]],
    partitions_now: Mapping[str, Sequence[int]],
    starts_now: Mapping[Partition, int],
    prefix: str,
) -> list[GroupReset]:
    """Where each worker group resumes: at its committed offset of the backup on every
    partition of the topics it reads now; where it had none (a topic or partition born
    since, or a group that had not committed there), at the log start (everything there
    is after the backup). Never below the log start: the records retention deleted since
    are counted as lost.

    ``groups``: unprefixed worker group -> unprefixed topics it reads (the registry);
    ``partitions_now`` and ``starts_now``: prefixed topics, as Kafka says now."""
    resets = []
    for group in sorted(groups):
        before = kafka.groups.get(group, {})
        offsets: dict[Partition, int] = {}
        lost: dict[Partition, int] = {}
        for topic in groups[group]:
            name = prefix + topic
            for partition in partitions_now.get(name, ()):
                start = starts_now.get((name, partition), 0)
                wanted = before.get(topic, {}).get(partition, 0)
                if wanted < start:
                    lost[(name, partition)] = start - wanted
                offsets[(name, partition)] = max(wanted, start)
        resets.append(GroupReset(prefix + group, offsets, lost))
    return resets


def erasure_scan_from(
    kafka: KafkaPositions, consumers: Iterable[str], partitions_now: Iterable[int]
) -> dict[int, int]:
    """Per partition of erasure-requested, the first offset whose erasures the restore
    must apply again: the lowest of the backup's end offset and of the committed offsets
    of the groups that read it (an erasure a lagging group had not applied yet is not in
    its copy); 0 for a partition born since."""
    ends = kafka.ends.get(ERASURE_TOPIC, {})
    out: dict[int, int] = {}
    for partition in partitions_now:
        candidates = [ends.get(partition, 0)]
        for group in consumers:
            committed = kafka.groups.get(group, {}).get(ERASURE_TOPIC, {})
            candidates.append(committed.get(partition, 0))
        out[partition] = min(candidates)
    return out


def busy_groups(states: Mapping[str, tuple[str, int | None]]) -> list[str]:
    """The groups with members (their workers run): a restore must not start, the broker
    would refuse to move them and they would write into the databases being replaced."""
    return sorted(g for g, (state, members) in states.items() if members or state == "Stable")
