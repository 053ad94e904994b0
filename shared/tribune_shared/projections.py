"""Rebuildable projections: a service's views of other services' facts, rebuilt from the
topics into a fresh collection and switched to atomically while the service serves.

A projection has a logical name (``contacts``): the name the service's code uses
(``store["contacts"]``). Its documents live in a physical collection: the logical name
itself at first (version 1), ``<name>__v<N>`` once rebuilt. A pointer document in the
service's ``projections`` collection says which one is active; every process of the
service loads the pointers at start and every ``projection_routes_refresh_seconds``
(``follow_routes``), and ``Store.__getitem__`` resolves the logical name through them.

A rebuild (``tribune rebuild <service> <projection>``, tribune_ops.rebuild) builds the
next version from the beginning of the projection's topics, with its own Kafka group and
its own scope of processed event ids (the live group's ids would make it skip
everything), then flips the pointer in one update. Reads never see a half-built
collection: before the flip every process reads the old one, complete up to its live
consumer; after it, the new one, complete up to the rebuild's consumer. The rebuild's
consumer keeps applying every new event to the new collection for a grace period after
the flip (longer than a refresh), so what a process wrote to the old collection before
it saw the flip is in the new one too; projections apply only newer versions, so both
writers applying one event converge. Rollback is the same flip back to the previous
collection, after catching it up from the offsets recorded at the flip.

What is not derivable from the topics (a message log, campaigns) is registered with
``why_not`` and refused.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from tribune_shared.events import TOPICS, utcnow
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import PROJECTIONS, IndexSpec, Physical, Store
from tribune_shared.subscriptions import Step

if TYPE_CHECKING:
    from tribune_shared.worker import BackgroundTask

log = get_logger(__name__)

__all__ = [
    "PROJECTIONS",
    "Lease",
    "LeaseHolder",
    "Pointer",
    "Pointers",
    "Projection",
    "ProjectionRegistry",
    "Unrebuildable",
    "physical_name",
    "routes_task",
]

#: the lease a service's rebuild holds (in the outbox relay's ``locks`` collection)
LOCKS = "locks"
LEASE_ID = "projections.rebuild"

#: builds the handlers of a projection writing into the physical collection named
StepsFactory = Callable[[Store, str], Mapping[str, Step | Sequence[Step]]]


class Unrebuildable(LookupError):
    """The projection is unknown, or not derivable from the topics."""


@dataclass(frozen=True)
class Projection:
    """One view a service keeps: its logical collection, the topics it is built from and
    the handlers that build it into a given physical collection (the same rules the
    worker applies). ``handlers`` None: not rebuildable, ``why_not`` says why."""

    name: str
    description: str
    topics: tuple[str, ...] = ()
    handlers: StepsFactory | None = None
    indexes: tuple[IndexSpec, ...] = ()
    why_not: str = ""

    def __post_init__(self) -> None:
        unknown = [t for t in self.topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"projection {self.name!r}: no topic {unknown} in the registry")
        if (self.handlers is None) == (not self.why_not):
            raise ValueError(
                f"projection {self.name!r}: give either its handlers or why it cannot be "
                "rebuilt (why_not), not both"
            )

    @property
    def rebuildable(self) -> bool:
        return self.handlers is not None

    def indexes_for(self, physical: str) -> list[IndexSpec]:
        """Its indexes on ``physical`` (a fresh version gets them before any write)."""
        return [replace(spec, collection=Physical(physical)) for spec in self.indexes]

    def steps_for(self, store: Store, physical: str) -> dict[str, Step | Sequence[Step]]:
        """Its handlers, writing into ``physical`` (never resolved through the routes)."""
        if self.handlers is None:
            raise Unrebuildable(f"{self.name}: {self.why_not}")
        steps = dict(self.handlers(store, Physical(physical)))
        if set(steps) != set(self.topics):
            raise ValueError(
                f"projection {self.name!r}: handlers for {sorted(steps)} but topics "
                f"{sorted(self.topics)}"
            )
        return steps


@dataclass(frozen=True)
class ProjectionRegistry:
    """A service's projections, and how to read its settings (a rebuild runs as the
    service: its database, its vault, its keys to verify events)."""

    service: str
    settings: Callable[[], ServiceSettings]
    projections: tuple[Projection, ...]

    def get(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        known = ", ".join(p.name for p in self.projections)
        raise Unrebuildable(f"{self.service} has no projection {name!r} (it has: {known})")

    def rebuildable(self, name: str) -> Projection:
        projection = self.get(name)
        if not projection.rebuildable:
            raise Unrebuildable(
                f"{self.service}.{name} cannot be rebuilt from the topics: {projection.why_not}"
            )
        return projection


# ---------------------------------------------------------------- pointers (pure rules)


def physical_name(name: str, version: int) -> str:
    """The collection of a projection's version: the logical name for version 1 (what
    existed before any rebuild), ``<name>__v<N>`` after."""
    if version < 1:
        raise ValueError(f"projection versions start at 1, not {version}")
    return name if version == 1 else f"{name}__v{version}"


def versions_among(name: str, collections: Sequence[str]) -> dict[str, int]:
    """Which of these collections are versions of projection ``name``, with their version."""
    pattern = re.compile(rf"^{re.escape(name)}(?:__v(\d+))?$")
    found = {}
    for collection in collections:
        if (m := pattern.match(collection)) is not None:
            found[collection] = int(m.group(1) or 1)
    return found


class NothingToRollBack(Exception):
    pass


@dataclass(frozen=True)
class Pointer:
    """Where a projection's reads and writes go (``active``), what the last flip replaced
    (``previous``, kept for a rollback), and the build in progress, if any."""

    name: str
    active: str
    version: int = 1
    #: the highest version ever made: a new build never reuses a name
    latest: int = 1
    previous: str | None = None
    previous_version: int | None = None
    building: dict[str, Any] | None = None
    flipped_at: datetime | None = None
    #: end offsets ("topic:partition" -> offset) when the last flip happened: a rollback
    #: catches the previous collection up from there
    flip_offsets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any] | None) -> Pointer:
        if not doc:
            return cls(name=name, active=name)
        return cls(
            name=name,
            active=doc.get("active") or name,
            version=int(doc.get("version") or 1),
            latest=int(doc.get("latest") or doc.get("version") or 1),
            previous=doc.get("previous"),
            previous_version=doc.get("previous_version"),
            building=doc.get("building"),
            flipped_at=doc.get("flipped_at"),
            flip_offsets={
                offsets_key(o["topic"], int(o["partition"])): int(o["offset"])
                for o in doc.get("flip_offsets") or ()
            },
        )

    def next_target(self) -> tuple[str, int]:
        """The collection and version a new build writes."""
        version = self.latest + 1
        return physical_name(self.name, version), version

    def rollback_target(self) -> tuple[str, int]:
        if self.previous is None or self.previous_version is None:
            raise NothingToRollBack(
                f"{self.name}: no previous collection to go back to (never rebuilt, or "
                "already rolled back)"
            )
        return self.previous, self.previous_version

    def flipped(
        self, target: str, version: int, offsets: Mapping[str, int], at: datetime
    ) -> dict[str, Any]:
        """The pointer document once ``target`` is active: the one replaced becomes the
        previous (a rollback goes back to it), the build is over."""
        rolling_back = target == self.previous
        return {
            "active": target,
            "version": version,
            "latest": max(self.latest, version),
            # after a rollback there is nothing left to roll back to
            "previous": None if rolling_back else self.active,
            "previous_version": None if rolling_back else self.version,
            "building": None,
            "flipped_at": at,
            # a list: topic names may hold dots, which a field name may not
            "flip_offsets": [
                {"topic": t, "partition": p, "offset": o}
                for (t, p), o in sorted((parse_offsets_key(k), o) for k, o in offsets.items())
            ],
        }

    def obsolete(self, collections: Sequence[str]) -> list[str]:
        """The versions of this projection neither active nor kept for a rollback (nor
        being built): left behind by older rebuilds, to drop."""
        keep = {self.active, self.previous}
        if self.building:
            keep.add(self.building.get("collection"))
        return sorted(c for c in versions_among(self.name, collections) if c not in keep)


def offsets_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def parse_offsets_key(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


def rebuild_group(service: str, name: str, version: int, *, rollback: bool = False) -> str:
    """A build's own logical consumer group (its Kafka group under the topic prefix, and
    its scope of processed event ids). A random run id: an interrupted build's committed
    offsets and ids never make the next attempt skip events."""
    verb = "rollback" if rollback else "rebuild"
    return f"{service}.{verb}.{name}.v{version}.{secrets.token_hex(3)}"


class Pointers:
    """The ``projections`` collection of a service's database (the store access of
    pointers: each change is one conditional update)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def collection(self):
        return self.store.db[PROJECTIONS]

    async def get(self, name: str) -> Pointer:
        return Pointer.from_doc(name, await self.collection.find_one({"_id": name}))

    async def mark_building(self, pointer: Pointer, building: dict[str, Any]) -> None:
        await self.collection.update_one(
            {"_id": pointer.name},
            {
                "$set": {"building": building},
                "$setOnInsert": {
                    "active": pointer.active,
                    "version": pointer.version,
                    "latest": pointer.latest,
                },
            },
            upsert=True,
        )

    async def clear_building(self, name: str) -> None:
        await self.collection.update_one({"_id": name}, {"$set": {"building": None}})

    async def flip(
        self, pointer: Pointer, target: str, version: int, offsets: Mapping[str, int]
    ) -> Pointer | None:
        """Make ``target`` active if the pointer still says ``pointer.active`` (one
        update: the switch every process follows). None if it changed meanwhile."""
        doc = await self.collection.find_one_and_update(
            {"_id": pointer.name, "active": pointer.active},
            {"$set": pointer.flipped(target, version, offsets, utcnow())},
            return_document=ReturnDocument.AFTER,
        )
        return Pointer.from_doc(pointer.name, doc) if doc else None

    async def collections(self) -> list[str]:
        return list(await self.store.db.list_collection_names())


# ---------------------------------------------------------------- the lease


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    what: str
    since: datetime | None
    expires_at: datetime | None


def lease_owner() -> str:
    """Who holds a lease: this host and a random id (two runs on one host differ)."""
    return f"{socket.gethostname()}:{secrets.token_hex(4)}"


class Lease:
    """One rebuild (or rollback) of a service at a time: a lease in ``locks``, renewed
    while it runs, that expires if its holder dies (so a crash never blocks the next
    rebuild for longer than ``seconds``)."""

    def __init__(self, store: Store, owner: str, seconds: float) -> None:
        self.store = store
        self.owner = owner
        self.seconds = seconds

    async def acquire(self, what: str) -> LeaseHolder | None:
        """Take or renew the lease; None when held, else who holds it."""
        now = utcnow()
        try:
            doc = await self.store.db[LOCKS].find_one_and_update(
                {"_id": LEASE_ID, "$or": [{"owner": self.owner}, {"expires_at": {"$lt": now}}]},
                {
                    "$set": {
                        "owner": self.owner,
                        "what": what,
                        "expires_at": now + timedelta(seconds=self.seconds),
                    },
                    "$setOnInsert": {"since": now},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # someone else holds a live lease
            doc = None
        if doc is not None and doc.get("owner") == self.owner:
            return None
        held = await self.store.db[LOCKS].find_one({"_id": LEASE_ID}) or {}
        return LeaseHolder(
            owner=str(held.get("owner", "?")),
            what=str(held.get("what", "?")),
            since=held.get("since"),
            expires_at=held.get("expires_at"),
        )

    async def keep(self, what: str, lost: asyncio.Event, stop: asyncio.Event) -> None:
        """Renew the lease every third of its time until ``stop``; set ``lost`` (and
        return) if it could not be renewed: the build must not flip then."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.seconds / 3)
                return
            except TimeoutError:
                pass
            try:
                holder = await self.acquire(what)
            except Exception as exc:  # the store is down: the lease may expire
                log.warning("projections.lease_renewal_failed", error=repr(exc))
                continue
            if holder is not None:
                lost.set()
                return

    async def release(self) -> None:
        await self.store.db[LOCKS].delete_one({"_id": LEASE_ID, "owner": self.owner})


# ---------------------------------------------------------------- following the pointers


def routes_task(store: Store, settings: ServiceSettings) -> BackgroundTask:
    """A worker's (or API's) background task keeping ``store.routes`` on the pointers: a
    flip reaches the process within ``projection_routes_refresh_seconds``."""
    from tribune_shared.worker import periodic  # the worker imports us

    async def load() -> None:
        if await store.load_routes():
            log.info("projections.routes_changed", routes=store.routes)

    return periodic("projections.routes", settings.projection_routes_refresh_seconds, load)
