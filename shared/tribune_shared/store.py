"""Store helpers over PyMongo's async API; each service owns one database."""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from tribune_shared import consistency
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings

log = get_logger(__name__)

__all__ = [
    "DuplicateKeyError",
    "IndexSpec",
    "Projected",
    "Store",
    "client_options",
    "insert_absent",
    "is_transient",
    "is_unreachable",
    "set_each",
    "subtree_filter",
    "upsert_if_newer",
    "upsert_many_if_newer",
]

T = TypeVar("T")

#: one pointer per rebuilt projection: {_id: logical name, active: physical collection}
PROJECTIONS = "projections"


class Physical(str):
    """A collection's own name, never resolved through ``Store.routes``: what a rebuild
    writes is the version it builds, whichever is active (the first version's name is
    also the projection's logical name)."""

    __slots__ = ()


#: MongoDB's WriteConflict: some servers report it without the transient label
WRITE_CONFLICT = 112


def is_transient(exc: BaseException) -> bool:
    """A transaction that lost a write conflict (or whose commit was cut): running it
    again is the fix, the work itself is not at fault."""
    if not isinstance(exc, PyMongoError):
        return False
    return (
        exc.has_error_label("TransientTransactionError")
        or exc.has_error_label("UnknownTransactionCommitResult")
        or getattr(exc, "code", None) == WRITE_CONFLICT
    )


def is_unreachable(exc: BaseException) -> bool:
    """The store could not be reached or did not answer in time (paused, failing over,
    cut off): nothing about the work is wrong, it can run again once the store is back.
    Exception groups (a middleware's task group) count when every error in them does."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_unreachable(inner) for inner in exc.exceptions)
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """Every store client's options: bounded waits (``store_*_timeout_seconds``), so an
    operation on a store that stopped answering fails instead of hanging."""
    return {
        "tz_aware": True,
        "uuidRepresentation": "standard",
        "serverSelectionTimeoutMS": int(settings.store_server_selection_timeout_seconds * 1000),
        "connectTimeoutMS": int(settings.store_connect_timeout_seconds * 1000),
        "socketTimeoutMS": int(settings.store_socket_timeout_seconds * 1000),
    }


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    keys: Sequence[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)
    #: an index an earlier version created and this one no longer wants: dropped if it is
    #: there (every write to the collection pays for each index it keeps)
    retired: bool = False
    #: documents whose (single, date) key is older than this many seconds are deleted by
    #: the kernel's expiry sweep (``tribune_shared.expiry``), through this index. Never a
    #: TTL index (``expireAfterSeconds``): the local store's TTL monitor reads every
    #: document of the collection each minute while holding its global lock, so every
    #: other command waited ~2 s per 200,000 documents kept (measured); MongoDB's TTL
    #: monitor is not needed either, one way for both.
    expire_after_seconds: float | None = None

    def __post_init__(self) -> None:
        if "expireAfterSeconds" in self.options:
            raise ValueError(
                f"index on {self.collection}: declare expiry with expire_after_seconds, "
                "not a TTL index (expireAfterSeconds)"
            )
        if self.expire_after_seconds is not None:
            if len(self.keys) != 1 or self.expire_after_seconds < 0:
                raise ValueError(
                    f"index on {self.collection}: expiry needs one date key and a delay >= 0"
                )

    @property
    def name(self) -> str:
        """The index's name: its ``name`` option, else the server's default for its keys
        (``<field>_expiry`` for an expiry index: never the name of the TTL index an earlier
        version made on the same key, which is dropped instead)."""
        if self.options.get("name"):
            return str(self.options["name"])
        if self.expire_after_seconds is not None:
            return f"{self.expiry_field}_expiry"
        return "_".join(f"{k}_{d}" for k, d in self.keys)

    @property
    def expiry_field(self) -> str:
        return self.keys[0][0]


def subtree_filter(federation_path: str, field_name: str = "federation_path") -> dict[str, Any]:
    """Everything in a federation's subtree: one anchored (indexable) prefix query."""
    import re

    return {field_name: {"$regex": f"^{re.escape(federation_path)}"}}


def ancestor_paths(federation_path: str) -> list[str]:
    """A federation's path and its ancestors', root first ("/a/b/" -> ["/a/", "/a/b/"]):
    what is defined at a level (consent texts, custom fields, templates) is inherited by
    every federation under it."""
    parts = [p for p in federation_path.strip("/").split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


class Store:
    """A service's database, its indexes and its transactions."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        server_timeout_ms: int | None = None,
        transaction_retry_seconds: float | None = None,
        retry_unreachable: bool = True,
    ) -> None:
        self.settings = settings
        #: whether ``run_transaction`` runs again a transaction cut by a store that did not
        #: answer (PyMongo labels those transient too): a worker waits the outage out, an
        #: API answers 503 at once rather than wait again for each attempt
        self.retry_unreachable = retry_unreachable
        #: how long ``run_transaction`` retries a lost write conflict: the settings' for
        #: workers and tools, ``request_transaction_retry_seconds`` for an API's store
        self.transaction_retry_seconds = (
            settings.transaction_retry_seconds
            if transaction_retry_seconds is None
            else transaction_retry_seconds
        )
        options = client_options(settings)
        if server_timeout_ms is not None:
            options["serverSelectionTimeoutMS"] = server_timeout_ms
        self.client: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, **options)
        self.db: AsyncDatabase = self.client[settings.database_name]
        #: a rebuildable projection's logical name -> the physical collection its reads and
        #: writes go to (``tribune_shared.projections``); a name not here is its own
        self.routes: dict[str, str] = {}
        #: (collection, date field) -> seconds after which a document expires: what
        #: ``ensure_indexes`` was given, swept by ``tribune_shared.expiry``
        self.expiry: dict[tuple[str, str], float] = {}

    def __getitem__(self, name: str):
        return self.db[self.physical(name)]

    def physical(self, name: str) -> str:
        """The collection ``store[name]`` reaches now."""
        return name if isinstance(name, Physical) else self.routes.get(name, name)

    async def load_routes(self) -> bool:
        """Read the projections' active collections (``PROJECTIONS`` pointers); True if
        a route changed. A rebuild's flip is one pointer update: every process follows it
        at its next load (``tribune_shared.projections.follow_routes``)."""
        routes = {
            d["_id"]: d["active"]
            async for d in self.db[PROJECTIONS].find({}, {"active": 1})
            if d.get("active") and d["active"] != d["_id"]
        }
        changed = routes != self.routes
        self.routes = routes
        return changed

    async def ensure_indexes(self, specs: Sequence[IndexSpec]) -> None:
        """Create the wanted indexes (a no-op for those already there), drop the retired
        ones still there and any TTL index (expiry is the kernel's sweep, see
        ``IndexSpec.expire_after_seconds``), and remember the expiry rules for the sweep."""
        by_collection: dict[str, list[IndexModel]] = {}
        for spec in specs:
            if spec.retired:
                await self._drop_index(self.physical(spec.collection), spec.name)
                continue
            options = dict(spec.options)
            if spec.expire_after_seconds is not None:
                options["name"] = spec.name
                self.expiry[(spec.collection, spec.expiry_field)] = spec.expire_after_seconds
            by_collection.setdefault(self.physical(spec.collection), []).append(
                IndexModel(list(spec.keys), **options)
            )
        for name, models in by_collection.items():
            async for index in await self.db[name].list_indexes():
                if "expireAfterSeconds" in index:  # an earlier version's TTL index
                    await self._drop_index(name, str(index["name"]))
            await self.db[name].create_indexes(models)

    async def _drop_index(self, collection: str, name: str) -> None:
        try:
            await self.db[collection].drop_index(name)
        except OperationFailure as exc:
            if exc.code not in (26, 27):  # no such collection, no such index: gone
                raise

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except Exception:  # any failure means "not ready"
            return False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A multi-document transaction: everything written with ``session`` commits or none."""
        async with self.client.start_session() as session:
            async with await session.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
            ):
                yield session

    async def run_transaction(
        self, work: Callable[[AsyncClientSession], Awaitable[T]], *, what: str = "transaction"
    ) -> T:
        """The one retrying transaction runner: ``work(session)`` runs in a transaction that
        commits or leaves nothing; when it loses a write conflict to a concurrent one (or to
        the orphaned transaction of a killed process) it runs again, with a jittered
        backoff, for up to ``transaction_retry_seconds`` (the store's). Any other error is
        raised at once (``work`` must therefore be safe to run again: it re-reads what it
        decides on); so is the conflict once that time is spent."""
        deadline = time.monotonic() + self.transaction_retry_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                with consistency.transaction_events() as written:
                    async with self.transaction() as session:
                        result = await work(session)
                # committed: the request's token may name this attempt's events as is
                consistency.confirm(written)
                return result
            except PyMongoError as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
                if not self.retry_unreachable and is_unreachable(exc):
                    raise
                if attempt in (1, 10, 100):  # a few lines, not one per attempt
                    log.info("store.transaction_retried", what=what, attempt=attempt)
                base = self.settings.transaction_retry_backoff_seconds * min(attempt, 25)
                await asyncio.sleep(base * (0.5 + random.random()))

    async def close(self) -> None:
        await self.client.close()


@dataclass(frozen=True)
class Projected:
    """One aggregate's state for a projection: applied only if ``version`` is newer.

    ``replace`` states (tombstones of erased people) replace the whole document."""

    doc_id: str
    version: int
    fields: dict[str, Any]
    replace: bool = False


#: Range reads on the local store. Its planner answers a query open on one side (``_id >
#: cursor``, sorted, limited) by reading every index key after the cursor, and an equality
#: prefix with a limit by reading every document of the prefix before the limit applies:
#: a read bounded on both sides costs what the range holds. These boundaries cut the id
#: space of random hex ids in 256 ranges by their first two characters (each holds 1/256
#: of the ids; any other string falls in one of the ranges too).
ID_BOUNDARIES: tuple[str, ...] = tuple(f"{i:02x}" for i in range(1, 256))
#: how many ranges the boundaries make
ID_RANGES = len(ID_BOUNDARIES) + 1


def next_boundary(key: str, ranges: int = 1) -> str | None:
    """The first range boundary above ``key``, or the ``ranges``-th one (the end of a
    window of that many ranges from ``key``'s); None: the window reaches the last range."""
    i = bisect.bisect_right(ID_BOUNDARIES, key) + ranges - 1
    return ID_BOUNDARIES[i] if i < len(ID_BOUNDARIES) else None


def by_id(ids: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    """An update pipeline's expression for "this document's own value": ``values[i]`` in the
    document whose ``_id`` is ``ids[i]`` (one ``update_many`` over ``{"_id": {"$in": ids}}``
    then sets each document its own value; see ``set_each``)."""
    position = {"$indexOfArray": [{"$literal": list(ids)}, "$_id"]}
    return {"$arrayElemAt": [{"$literal": list(values)}, position]}


async def set_each(
    collection,
    values: Mapping[str, Mapping[str, Any]],
    *,
    where: Mapping[str, Any] | None = None,
    session: AsyncClientSession | None = None,
) -> int:
    """Set each document's own fields (``_id`` -> fields) in a few statements, whatever
    the batch's size: the documents whose fields have the same names share one
    ``update_many`` whose update pipeline picks each document's values by its ``_id``.
    Measured on the local store, an ``UpdateOne`` per document cost a statement each, most
    of a batch's time. ``where``: a further condition a document must meet to be set (a
    message still being sent). Returns how many documents matched."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for doc_id, fields in values.items():
        groups.setdefault(tuple(sorted(fields)), []).append(doc_id)
    matched = 0
    for names, ids in groups.items():
        stage = {name: by_id(ids, [values[i][name] for i in ids]) for name in names}
        result = await collection.update_many(
            {"_id": {"$in": ids}, **(where or {})}, [{"$set": stage}], session=session
        )
        matched += result.matched_count
    return matched


async def insert_absent(
    collection, docs: Sequence[dict[str, Any]], *, session: AsyncClientSession | None = None
) -> list[int]:
    """Insert the documents whose ``_id`` is not stored yet (the first of a batch's
    documents with one ``_id``): one read and one ``insert_many`` for the batch. Returns
    the positions in ``docs`` of those inserted. An upsert per document costs the local
    store a statement each (about half the rate of this, measured on SecantusDB). In a
    transaction, a concurrent insert of the same ``_id`` loses a write conflict and the
    transaction runs again; outside one it raises DuplicateKeyError."""
    if not docs:
        return []
    seen = {
        d["_id"]
        async for d in collection.find(
            {"_id": {"$in": [d["_id"] for d in docs]}}, {"_id": 1}, session=session
        )
    }
    fresh: list[int] = []
    for position, doc in enumerate(docs):
        if doc["_id"] not in seen:
            seen.add(doc["_id"])
            fresh.append(position)
    if fresh:
        await collection.insert_many([docs[i] for i in fresh], session=session)
    return fresh


async def upsert_many_if_newer(
    collection, states: Iterable[Projected], *, session: AsyncClientSession | None = None
) -> int:
    """The batch form of ``upsert_if_newer``: one read of the stored versions and one bulk
    write for a whole batch of events. Several states of one aggregate in the batch
    collapse to the newest, so the result equals applying them one by one in any order.
    Returns how many documents were written."""
    newest: dict[str, Projected] = {}
    for state in states:
        held = newest.get(state.doc_id)
        if held is None or state.version > held.version:
            newest[state.doc_id] = state
    if not newest:
        return 0
    stored = {
        d["_id"]: d.get("version")
        async for d in collection.find(
            {"_id": {"$in": list(newest)}}, {"version": 1}, session=session
        )
    }
    # aggregates seen for the first time (an import's contacts) are inserted in one
    # statement; an upsert each cost the local store a statement per document
    absent = [
        {**state.fields, "_id": doc_id, "version": state.version}
        for doc_id, state in newest.items()
        if doc_id not in stored
    ]
    if absent:
        await collection.insert_many(absent, session=session)
    ops: list[UpdateOne | ReplaceOne] = []
    for doc_id, state in newest.items():
        if doc_id not in stored:
            continue
        current = stored[doc_id]
        if current is not None and current >= state.version:
            continue
        if state.replace:
            ops.append(
                ReplaceOne({"_id": doc_id}, {**state.fields, "version": state.version}, upsert=True)
            )
        else:
            ops.append(
                UpdateOne(
                    {"_id": doc_id},
                    {"$set": {**state.fields, "version": state.version}},
                    upsert=True,
                )
            )
    if ops:
        await collection.bulk_write(ops, ordered=False, session=session)
    return len(absent) + len(ops)


async def upsert_if_newer(
    collection,
    doc_id: str,
    version: int,
    fields: dict[str, Any],
    *,
    session: AsyncClientSession | None = None,
) -> bool:
    """Apply one projected state only if it is newer than the stored one (events across
    topics arrive in any order). True if it was applied."""
    written = await upsert_many_if_newer(
        collection, [Projected(doc_id, version, fields)], session=session
    )
    return written == 1
