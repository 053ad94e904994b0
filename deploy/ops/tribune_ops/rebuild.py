"""`tribune rebuild <service> <projection>`: a fresh version of a projection, built from
the topics, switched to atomically while the service keeps serving
(tribune_shared.projections says how the switch works).

One run, holding the service's rebuild lease all along (a second run is refused):

1. the next version's collection is made, empty, with the projection's indexes;
2. a consumer of its own (Kafka group and processed ids ``<service>.rebuild.<projection>.
   v<N>.<run>``) applies the projection's topics to it from their beginning, with the
   worker's machinery (signatures checked, personal fields opened by the service's vault:
   an erased person's fields stay unreadable);
3. once it has caught up with the end offsets taken at the start, the pointer flips (one
   update) if nothing stands in the way: an event it had to park on a DLQ (the new
   version would miss it), a federation moved meanwhile (its re-pathing swept only the old
   collection), or the lease lost;
4. it goes on for the grace period (every process follows the flip within its refresh),
   catches up again, and stops; its processed ids and the versions older than the one
   just replaced are dropped (that one is kept for ``--rollback``).

A rollback flips back to the previous version after catching it up from the offsets
recorded at the flip (what happened since reaches it too).

Run it where the service's package and settings are (its image): it reads the
service's database, vault and keys as the service does.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.protocol.admin import DeleteGroupsRequest
from rich.table import Table
from tribune_shared.bus import EventConsumer, EventPublisher, ensure_topics
from tribune_shared.events import utcnow
from tribune_shared.federations import FEDERATION_MOVES
from tribune_shared.logging import get_logger
from tribune_shared.projections import (
    Lease,
    LeaseHolder,
    NothingToRollBack,
    Pointer,
    Pointers,
    Projection,
    ProjectionRegistry,
    lease_owner,
    offsets_key,
    parse_offsets_key,
    rebuild_group,
    routes_task,
)
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

from tribune_ops.kafka import Kafka
from tribune_ops.lag import Partition
from tribune_ops.settings import OpsSettings

log = get_logger(__name__)

#: how often a run looks at its consumer's committed offsets
POLL_SECONDS = 0.5
#: Kafka's GROUP_ID_NOT_FOUND: deleted already
GROUP_ID_NOT_FOUND = 69

#: (done, total) events of the current phase
Progress = Callable[[int, int], None]


class RebuildRefused(Exception):
    """The run could not (or must not) go on: said in the message; nothing switched."""


def registry_of(service: str) -> ProjectionRegistry:
    """The service's projections (``<service>.projections.REGISTRY``)."""
    try:
        module = importlib.import_module(f"{service}.projections")
    except ModuleNotFoundError as exc:
        if exc.name == f"{service}.projections":
            raise RebuildRefused(f"{service} has no rebuildable projections") from exc
        raise RebuildRefused(
            f"no service {service!r} here (package {exc.name} not installed): run "
            "`tribune rebuild` where the service runs (its image)"
        ) from exc
    registry = getattr(module, "REGISTRY", None)
    if not isinstance(registry, ProjectionRegistry):
        raise RebuildRefused(f"{module.__name__} has no REGISTRY of projections")
    return registry


# ---------------------------------------------------------------- pure rules


def caught_up(
    starts: Mapping[Partition, int],
    ends: Mapping[Partition, int],
    committed: Mapping[Partition, int],
) -> tuple[int, int, bool]:
    """(events done, events to do, every partition at its end). A partition the group
    has not committed yet stands at its log start (nothing of it applied)."""
    done = total = 0
    complete = True
    for part, end in ends.items():
        start = starts.get(part, 0)
        at = max(committed.get(part, start), start)
        total += max(0, end - start)
        done += max(0, min(at, end) - start)
        complete = complete and at >= end
    return done, total, complete


def stamp_offsets(ends: Mapping[Partition, int], prefix: str) -> dict[str, int]:
    """End offsets as a pointer records them: topics without the platform's prefix."""
    return {
        offsets_key(topic[len(prefix) :] if prefix else topic, p): o
        for (topic, p), o in ends.items()
    }


def unstamp_offsets(recorded: Mapping[str, int], prefix: str) -> dict[Partition, int]:
    out = {}
    for key, offset in recorded.items():
        topic, partition = parse_offsets_key(key)
        out[(prefix + topic, partition)] = offset
    return out


@dataclass
class Outcome:
    """What a run did (or, dry, would do): the command's JSON document."""

    service: str
    projection: str
    mode: str
    dry_run: bool
    topics: list[str]
    partitions: int
    #: events on the topics when it started (what a build reads; compacted or expired
    #: ones excepted)
    events: int
    active_before: str
    target: str
    version: int
    group: str | None = None
    flipped: bool = False
    active_after: str | None = None
    previous: str | None = None
    parked: int = 0
    applied_after_flip: int = 0
    duration_seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)
    group_deleted: bool = False
    #: what went wrong once the switch was done (it stays done)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------- the run


class _BuildConsumer(EventConsumer):
    """The worker's consumer, counting what it parks: an event the new version misses
    forbids the flip."""

    parked = 0

    async def _park(
        self, tp: TopicPartition, record: ConsumerRecord, error: str, attempts: int
    ) -> None:
        self.parked += 1
        await super()._park(tp, record, error, attempts)


class Rebuild:
    def __init__(
        self,
        ops: OpsSettings,
        registry: ProjectionRegistry,
        name: str,
        *,
        rollback: bool = False,
        settings: ServiceSettings | None = None,
    ) -> None:
        self.ops = ops
        self.registry = registry
        self.projection: Projection = registry.rebuildable(name)
        self.settings = settings or registry.settings()
        self.rollback = rollback
        self.owner = lease_owner()

    @property
    def mode(self) -> str:
        return "rollback" if self.rollback else "rebuild"

    @property
    def grace_seconds(self) -> float:
        s = self.settings
        return max(s.projection_flip_grace_seconds, 2 * s.projection_routes_refresh_seconds)

    def _topics(self) -> list[str]:
        return [self.settings.topic(t) for t in self.projection.topics]

    async def run(self, *, dry_run: bool = False, progress: Progress | None = None) -> Outcome:
        store = Store(self.settings)
        lease = Lease(store, self.owner, self.settings.projection_rebuild_lease_seconds)
        what = f"{self.mode} {self.registry.service}.{self.projection.name}"
        try:
            holder = None if dry_run else await lease.acquire(what)
            if holder is not None:
                raise RebuildRefused(_busy(holder))
            try:
                return await self._run(store, lease, what, dry_run, progress or _quiet)
            finally:
                if not dry_run:
                    await lease.release()
        finally:
            await store.close()

    async def _run(
        self, store: Store, lease: Lease, what: str, dry_run: bool, progress: Progress
    ) -> Outcome:
        started = time.monotonic()
        await store.load_routes()
        pointers = Pointers(store)
        pointer = await pointers.get(self.projection.name)
        if pointer.building and not dry_run:
            # the lease is ours, so whoever marked it died: its leftovers go
            log.warning("projections.stale_build", building=pointer.building)
        try:
            target, version = pointer.rollback_target() if self.rollback else pointer.next_target()
        except NothingToRollBack as exc:
            raise RebuildRefused(str(exc)) from exc
        await ensure_topics(self.settings, self.projection.topics)
        async with Kafka(self.ops) as kafka:
            parts = await self._partitions(kafka)
            starts, ends = await kafka.bounds(parts)
            if self.rollback:
                recorded = unstamp_offsets(pointer.flip_offsets, self.settings.topic_prefix)
                # the previous version is complete up to the flip: only what came since
                starts = {p: max(starts[p], recorded.get(p, starts[p])) for p in parts}
            outcome = Outcome(
                service=self.registry.service,
                projection=self.projection.name,
                mode=self.mode,
                dry_run=dry_run,
                topics=list(self.projection.topics),
                partitions=len(parts),
                events=sum(max(0, ends[p] - starts[p]) for p in parts),
                active_before=pointer.active,
                target=target,
                version=version,
            )
            if dry_run:
                return outcome
            if not self.rollback:
                await store.db.drop_collection(target)  # a crashed attempt's leftovers
                await store.ensure_indexes(self.projection.indexes_for(target))
            group = rebuild_group(
                self.registry.service, self.projection.name, version, rollback=self.rollback
            )
            outcome.group = group
            if self.rollback:
                await kafka.reset_group(self.settings.topic(group), starts)
            began = utcnow()
            await pointers.mark_building(
                pointer,
                {
                    "collection": target,
                    "version": version,
                    "group": group,
                    "mode": self.mode,
                    "owner": self.owner,
                    "started_at": began,
                },
            )
            try:
                await self._build(
                    store,
                    kafka,
                    lease,
                    what,
                    pointer,
                    outcome,
                    parts,
                    starts,
                    ends,
                    began,
                    progress,
                )
            finally:
                if not outcome.flipped:  # (once flipped, the target is what everyone reads)
                    await pointers.clear_building(self.projection.name)
                    if not self.rollback:
                        await store.db.drop_collection(target)
                outcome.group_deleted = await _delete_group(kafka, self.settings.topic(group))
        try:
            await _forget_processed(store, group)
            after = await pointers.get(self.projection.name)
            outcome.active_after = after.active
            outcome.previous = after.previous
            obsolete = after.obsolete(await pointers.collections())
            for name in obsolete:
                await store.db.drop_collection(name)
            outcome.dropped = obsolete
        except Exception as exc:  # the switch is done: a cleanup left for later is no failure
            outcome.warnings.append(f"cleanup after the switch failed: {exc!r}")
        outcome.duration_seconds = round(time.monotonic() - started, 3)
        return outcome

    async def _partitions(self, kafka: Kafka) -> list[Partition]:
        known = await kafka.topics()
        return sorted((t, p) for t in self._topics() for p in known.get(t, ()))

    async def _build(
        self,
        store: Store,
        kafka: Kafka,
        lease: Lease,
        what: str,
        pointer: Pointer,
        outcome: Outcome,
        parts: list[Partition],
        starts: dict[Partition, int],
        ends: dict[Partition, int],
        began: datetime,
        progress: Progress,
    ) -> None:
        """Build, flip (``outcome.flipped``), follow for the grace period."""
        assert outcome.group is not None
        publisher = EventPublisher(self.settings)
        consumer = _BuildConsumer(
            self.settings,
            store,
            group=outcome.group,
            handlers=self.projection.steps_for(store, outcome.target),
            dlq_publisher=publisher,
            from_beginning=True,
        )
        stop, lost = asyncio.Event(), asyncio.Event()
        keeper = asyncio.create_task(lease.keep(what, lost, stop))
        # the handlers read the other views (the contacts a consent is of) where the
        # service reads them
        routes = asyncio.create_task(routes_task(store, self.settings)(stop))
        await publisher.start()
        await consumer.start()
        running = asyncio.create_task(consumer.run())
        group_id = self.settings.topic(outcome.group)
        try:
            await self._follow(kafka, group_id, parts, starts, ends, running, progress)
            await self._may_flip(store, consumer, lost, began)
            _, flip_ends = await kafka.bounds(parts)
            done = await Pointers(store).flip(
                pointer,
                outcome.target,
                outcome.version,
                stamp_offsets(flip_ends, self.settings.topic_prefix),
            )
            if done is None:
                raise RebuildRefused(
                    f"{self.projection.name}: its pointer changed during the {self.mode} "
                    "(someone else switched it); nothing switched"
                )
            outcome.flipped = True
            log.info("projections.flipped", projection=self.projection.name, to=outcome.target)
            try:
                # every process follows the flip within its refresh: until then what it
                # writes goes to the old version, and this consumer applies it to the new
                await asyncio.sleep(self.grace_seconds)
                _, now_ends = await kafka.bounds(parts)
                await self._follow(kafka, group_id, parts, flip_ends, now_ends, running, _quiet)
                outcome.applied_after_flip = sum(now_ends[p] - flip_ends[p] for p in parts)
            except Exception as exc:
                outcome.warnings.append(
                    f"switched, but the grace period was cut short ({exc!r}): what a process "
                    "wrote to the old version just before it saw the switch may be missing; "
                    "run the rebuild again"
                )
        finally:
            consumer.request_stop()
            stop.set()
            await asyncio.gather(running, keeper, routes, return_exceptions=True)
            await publisher.stop()
            outcome.parked = consumer.parked

    async def _follow(
        self,
        kafka: Kafka,
        group_id: str,
        parts: list[Partition],
        starts: Mapping[Partition, int],
        ends: Mapping[Partition, int],
        running: asyncio.Task,
        progress: Progress,
    ) -> None:
        """Wait until the build's consumer has committed ``ends`` on every partition."""
        while True:
            if running.done():
                error = running.exception()
                raise RebuildRefused(f"the {self.mode}'s consumer stopped: {error!r}")
            offsets = await kafka.committed(group_id, parts)
            done, total, complete = caught_up(
                starts, ends, {p: meta.offset for p, meta in offsets.items()}
            )
            progress(done, total)
            if complete:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _may_flip(
        self, store: Store, consumer: _BuildConsumer, lost: asyncio.Event, began: datetime
    ) -> None:
        if lost.is_set():
            raise RebuildRefused("the rebuild lease was lost (the store was unreachable?)")
        if consumer.parked:
            raise RebuildRefused(
                f"{consumer.parked} event(s) could not be applied and were parked on their "
                f"DLQ (group {consumer.group}): see `tribune dlq list`; the new version "
                "would miss them, so nothing switched"
            )
        moved = await store[FEDERATION_MOVES].count_documents({"created_at": {"$gte": began}})
        if moved:
            raise RebuildRefused(
                f"{moved} federation move(s) happened during the {self.mode}: their "
                "re-pathing did not reach the new version; nothing switched, run it again"
            )


def _quiet(done: int, total: int) -> None:
    pass


def _busy(holder: LeaseHolder) -> str:
    since = f" since {holder.since.isoformat()}" if holder.since else ""
    return (
        f"another rebuild is running ({holder.what}, by {holder.owner}{since}); "
        "one at a time per service"
    )


async def _delete_group(kafka: Kafka, group_id: str) -> bool:
    """Delete a finished build's Kafka group, so `tribune lag` does not show it lagging
    forever (aiokafka's admin client has no call for it: the DeleteGroups request, sent
    to the group's coordinator). The broker refuses while members remain (a consumer
    leaving takes a moment): a few tries, then False (the broker expires it after
    ``offsets.retention.minutes``)."""
    for attempt in range(5):
        try:
            node = await kafka.admin.find_coordinator(group_id)
            response = await kafka.admin._send_request(DeleteGroupsRequest([group_id]), node)
            codes = [code for _, code in response.results]
        except Exception as exc:  # best effort: the switch is done whatever happens here
            log.warning("projections.group_not_deleted", group=group_id, error=repr(exc))
            return False
        if all(code in (0, GROUP_ID_NOT_FOUND) for code in codes):
            return True
        await asyncio.sleep(0.5 * (attempt + 1))
    log.warning("projections.group_not_deleted", group=group_id, codes=codes)
    return False


async def _forget_processed(store: Store, group: str) -> None:
    """A finished build's processed event ids are of no use to anyone."""
    prefix = re.escape(f"{group}:")
    await store["processed_events"].delete_many({"_id": {"$regex": f"^{prefix}"}})


async def status(registry: ProjectionRegistry, settings: ServiceSettings) -> list[dict[str, Any]]:
    """Every projection of the service: rebuildable or why not, its active version, the
    one kept for a rollback, a build in progress."""
    store = Store(settings)
    try:
        pointers = Pointers(store)
        rows = []
        for projection in registry.projections:
            pointer = await pointers.get(projection.name)
            rows.append(
                {
                    "projection": projection.name,
                    "description": projection.description,
                    "rebuildable": projection.rebuildable,
                    "why_not": projection.why_not or None,
                    "topics": list(projection.topics),
                    "active": pointer.active,
                    "version": pointer.version,
                    "previous": pointer.previous,
                    "flipped_at": pointer.flipped_at,
                    "building": pointer.building,
                }
            )
        return rows
    finally:
        await store.close()


# ---------------------------------------------------------------- what the command shows


def projections_table(service: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{service}: projections", title_justify="left")
    for column in ("projection", "rebuildable", "active", "previous", "building", "topics"):
        table.add_column(column)
    for row in rows:
        building = row["building"] or {}
        table.add_row(
            row["projection"],
            "yes" if row["rebuildable"] else f"no: {row['why_not']}",
            f"{row['active']} (v{row['version']})",
            row["previous"] or "-",
            f"{building.get('collection')} ({building.get('owner')})" if building else "-",
            ", ".join(row["topics"]) or "-",
        )
    return table


def summary(outcome: Outcome) -> str:
    """The few lines an operator reads after a run."""
    name = f"{outcome.service}.{outcome.projection}"
    if outcome.dry_run:
        return (
            f"{name}: a {outcome.mode} would read {outcome.events:,} event(s) of "
            f"{', '.join(outcome.topics)} ({outcome.partitions} partitions) into "
            f"{outcome.target} (v{outcome.version}); active now: {outcome.active_before}. "
            "Nothing changed."
        )
    kept = f"; {outcome.previous} kept for --rollback" if outcome.previous else ""
    dropped = f"; dropped {', '.join(outcome.dropped)}" if outcome.dropped else ""
    warnings = "".join(f"\nwarning: {w}" for w in outcome.warnings)
    return (
        f"{name}: switched from {outcome.active_before} to {outcome.active_after} after "
        f"{outcome.duration_seconds:.1f} s ({outcome.events:,} event(s) read, "
        f"{outcome.applied_after_flip:,} more during the grace period){kept}{dropped}."
        f"{warnings}"
    )
