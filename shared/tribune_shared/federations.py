"""Each service's own projection of the federation tree (from federation-* events),
used to place documents in a federation the caller may act on, and the re-pathing of
what a service holds when a federation moves.

A move (gateway: ``PATCH /api/v1/federations/{id}``) changes the path of the federation
and of all its descendants. Every stored document carries ``federation_path`` (a
subtree is a prefix query), so each service rewrites that prefix in every collection it
declares (``path_fields``):

- the federation-updated handler, in the consumer's transaction, applies only a newer
  ``version`` (a replay or an older event changes nothing), rewrites the projection's own
  subtree (the moved federation and its descendants at once, so the descendants' own
  events find nothing left to do) and records a move job (``FEDERATION_MOVES``);
- the worker runs the jobs (``run_moves``) in chunks of ids, one bulk write of ``$set``
  per distinct path (no update pipelines: SecantusDB need not support them). A chunk is
  idempotent (it only touches documents still under the old prefix) and the job resumes
  where the data stands after a crash. A job keeps sweeping the old prefix for
  ``federation_repath_settle_seconds`` after it is recorded: work that read the old path
  before the move (a request in flight, a running import) may still write it.

Why a job and not the handler's transaction: a federation's data (its message log
above all) can be millions of documents, far beyond what one transaction may hold or how
long it may last; the consumer's partition would also stall behind it.

Events keep the paths they were produced with (Kafka history cannot be rewritten), so a
consumer must not trust an envelope's path once the federation moved: ``current_paths``
gives every event the path the projection holds for its federation (the kernel consumer
applies it before the handlers run).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from tribune_shared.auth import Identity
from tribune_shared.errors import NotFound
from tribune_shared.events import Envelope, decode_as, utcnow
from tribune_shared.events.contracts import FederationCreatedV1, FederationUpdatedV1
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store
from tribune_shared.subscriptions import Handler

if TYPE_CHECKING:
    from tribune_shared.worker import BackgroundTask

log = get_logger(__name__)

FEDERATIONS = "federations"
#: one document per re-path a federation-updated asked for (its progress: ops view)
FEDERATION_MOVES = "federation_moves"
PATH_FIELD = "federation_path"

INDEXES = [IndexSpec(FEDERATION_MOVES, [("state", ASCENDING), ("seq", ASCENDING)])]


@dataclass(frozen=True)
class PathField:
    """A collection whose documents carry a federation path in ``field``."""

    collection: str
    field: str = PATH_FIELD


# ---------------------------------------------------------------- pure rules


def moved_path(path: str, old_prefix: str, new_prefix: str) -> str | None:
    """Where ``path`` is once the federation at ``old_prefix`` is at ``new_prefix``; None
    when ``path`` is not in that subtree (paths end with "/", so "/a0/b1/" never takes
    "/a0/b10/" along)."""
    if not path.startswith(old_prefix):
        return None
    return new_prefix + path[len(old_prefix) :]


def path_fields(
    *index_lists: Iterable[IndexSpec], extra: Iterable[PathField] = ()
) -> tuple[PathField, ...]:
    """The collections a service re-paths: every one it indexes by ``federation_path``
    (a subtree is read through that index: what is not indexed so is not scoped by it),
    plus ``extra``; never the federation projection itself (its field is ``path``: the
    handler re-paths it)."""
    found: dict[PathField, None] = {}
    for specs in index_lists:
        for spec in specs:
            if spec.collection != FEDERATIONS and any(k == PATH_FIELD for k, _ in spec.keys):
                found[PathField(spec.collection)] = None
    for field in extra:
        found[field] = None
    return tuple(found)


def version_of(event: FederationCreatedV1 | FederationUpdatedV1) -> int:
    """Events made before versions existed: a creation is version 1 (an update always
    carries its version)."""
    return event.version if event.version is not None else 1


def _prefix_query(field: str, prefix: str) -> dict[str, Any]:
    return {field: {"$regex": f"^{re.escape(prefix)}"}}


# ---------------------------------------------------------------- the projection


class FederationDirectory:
    """``repath``: the collections this service re-paths when a federation moves (the
    worker's directory; an API's only resolves federations)."""

    def __init__(
        self,
        store: Store,
        repath: Sequence[PathField] = (),
        settings: ServiceSettings | None = None,
    ) -> None:
        self.store = store
        self.repath = tuple(repath)
        self._settings = settings

    @property
    def settings(self) -> ServiceSettings:
        # read when a move runs, not at construction: an API (or a unit test without a
        # store) only resolves federations
        return self._settings or self.store.settings

    @property
    def batch_size(self) -> int:
        return self.settings.federation_repath_batch_size

    @property
    def settle_seconds(self) -> float:
        return self.settings.federation_repath_settle_seconds

    @property
    def interval_seconds(self) -> float:
        return self.settings.federation_repath_interval_seconds

    async def on_federation_event(self, envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, FederationCreatedV1, FederationUpdatedV1)
        federations = self.store[FEDERATIONS]
        version = version_of(event)
        held = await federations.find_one(
            {"_id": event.federation_id}, {"path": 1, "version": 1}, session=session
        )
        if held is not None and held.get("version", 0) >= version:
            return  # a replay, or older than what the projection holds
        # what this service holds is where its projection says (a descendant's path has
        # already followed its moved ancestor's); the event's previous path only when the
        # federation is not projected yet
        old = held["path"] if held else getattr(event, "previous_path", None)
        old_paths = [old] if old and old != event.path else []
        for old in old_paths:
            await self._move_projection(old, event.path, session)
        await federations.update_one(
            {"_id": event.federation_id},
            {
                "$set": {
                    "name": event.name,
                    "path": event.path,
                    "parent_id": event.parent_id,
                    "version": version,
                }
            },
            upsert=True,
            session=session,
        )
        if old_paths and self.repath:
            now = utcnow()
            await self.store[FEDERATION_MOVES].insert_many(
                [
                    {
                        "_id": f"{event.federation_id}.v{version}.{i}",
                        "federation_id": event.federation_id,
                        "from_path": old,
                        "to_path": event.path,
                        "state": "running",
                        # jobs run in the order the moves were applied
                        "seq": time.time_ns() + i,
                        "created_at": now,
                        "sweep_until": now + timedelta(seconds=self.settle_seconds),
                        "moved": {},
                        "moved_total": 0,
                    }
                    for i, old in enumerate(old_paths)
                ],
                session=session,
            )
            log.info(
                "federation.move_recorded",
                federation_id=event.federation_id,
                from_paths=old_paths,
                to_path=event.path,
            )

    async def _move_projection(self, old: str, new: str, session: AsyncClientSession) -> None:
        """The projection's subtree under ``old``: the federation and its descendants (a
        handful of documents) move in the handler's transaction, so events of any of them
        are placed at the new path from now on."""
        federations = self.store[FEDERATIONS]
        docs = federations.find(_prefix_query("path", old), {"path": 1}, session=session)
        ops = [
            UpdateOne({"_id": d["_id"]}, {"$set": {"path": moved_path(d["path"], old, new)}})
            async for d in docs
        ]
        if ops:
            await federations.bulk_write(ops, ordered=False, session=session)

    def handlers(self) -> dict[str, Handler]:
        return {
            "federation-created": self.on_federation_event,
            "federation-updated": self.on_federation_event,
        }

    async def resolve(self, identity: Identity, federation_id: str | None) -> tuple[str, str]:
        """(id, path) of the target federation: the caller's own or one in its subtree."""
        if federation_id is None or federation_id == identity.federation_id:
            return identity.federation_id, identity.federation_path
        doc = await self.store[FEDERATIONS].find_one({"_id": federation_id})
        if doc is None or not identity.can_see(doc["path"]):
            raise NotFound("federation not found", field="federation_id")
        return federation_id, doc["path"]

    # ------------------------------------------------------------ re-path jobs

    async def run_moves(self) -> int:
        """One round over the running move jobs, oldest first: each re-paths everything
        still under its old prefix, chunk by chunk; a job that left nothing under it past
        its ``sweep_until`` is done. The number of documents re-pathed."""
        moves = self.store[FEDERATION_MOVES]
        total = 0
        async for job in moves.find({"state": "running"}).sort("seq", ASCENDING):
            moved, clean = await self._run_move(job)
            total += moved
            if clean and utcnow() >= job["sweep_until"]:
                await moves.update_one(
                    {"_id": job["_id"], "state": "running"},
                    {"$set": {"state": "done", "finished_at": utcnow()}},
                )
                log.info(
                    "federation.move_done",
                    federation_id=job["federation_id"],
                    to_path=job["to_path"],
                    moved=job.get("moved_total", 0),
                )
        return total

    async def _run_move(self, job: dict[str, Any]) -> tuple[int, bool]:
        """(documents re-pathed, whether the last look found nothing left anywhere)."""
        moved = 0
        clean = True
        for target in self.repath:
            while True:
                found, n = await self._move_chunk(target, job["from_path"], job["to_path"])
                if found == 0:
                    break
                if n == 0:  # all changed under us: the next round looks again
                    clean = False
                    break
                moved += n
                await self.store[FEDERATION_MOVES].update_one(
                    {"_id": job["_id"]},
                    {
                        "$inc": {f"moved.{target.collection}": n, "moved_total": n},
                        "$set": {"updated_at": utcnow()},
                    },
                )
                log.info(
                    "federation.move_progress",
                    federation_id=job["federation_id"],
                    collection=target.collection,
                    moved=n,
                )
        return moved, clean

    async def _move_chunk(self, target: PathField, old: str, new: str) -> tuple[int, int]:
        """Up to a batch of documents still under ``old``: one read of ids and paths, one
        bulk write of ``$set`` per distinct path. Each update checks the path is still the
        one read, so a concurrent write wins and a rerun is harmless. (found, re-pathed)"""
        collection = self.store[target.collection]
        docs = (
            await collection.find(_prefix_query(target.field, old), {target.field: 1})
            .limit(self.batch_size)
            .to_list()
        )
        by_path: dict[str, list[Any]] = {}
        for doc in docs:
            by_path.setdefault(doc[target.field], []).append(doc["_id"])
        ops = [
            UpdateMany(
                {"_id": {"$in": ids}, target.field: path},
                {"$set": {target.field: moved_path(path, old, new)}},
            )
            for path, ids in by_path.items()
        ]
        if not ops:
            return 0, 0
        result = await collection.bulk_write(ops, ordered=False)
        # what a concurrent write changed first is not counted
        return len(docs), int(result.modified_count)

    def task(self) -> BackgroundTask:
        """The worker's background task running the move jobs."""
        from tribune_shared.worker import periodic  # the worker imports the consumer, us

        return periodic("federation.moves", self.interval_seconds, self.run_moves)

    async def moves(self, federation_id: str | None = None) -> list[dict[str, Any]]:
        """The move jobs (ops view), newest first."""
        query = {"federation_id": federation_id} if federation_id else {}
        return await self.store[FEDERATION_MOVES].find(query).sort("seq", -1).to_list()


async def current_paths(
    store: Store, envelopes: list[Envelope], session: AsyncClientSession | None = None
) -> list[Envelope]:
    """The envelopes with the path the projection holds now for their federation (one
    read per batch): an event produced before a move (or replayed from Kafka's history)
    must not put anything back under the old path. Federation events and federations this
    service does not know yet keep theirs."""
    ids = {e.federation_id for e in envelopes if not e.type.startswith("federation-")}
    if not ids:
        return envelopes
    paths = {
        d["_id"]: d["path"]
        async for d in store[FEDERATIONS].find(
            {"_id": {"$in": list(ids)}}, {"path": 1}, session=session
        )
    }
    if not paths:
        return envelopes
    return [
        e.model_copy(update={"federation_path": paths[e.federation_id]})
        if not e.type.startswith("federation-")
        and paths.get(e.federation_id, e.federation_path) != e.federation_path
        else e
        for e in envelopes
    ]
