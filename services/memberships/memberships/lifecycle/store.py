"""All database access of the membership lifecycle.

Several workers sweep at once: every change is a conditional update (it applies only if
the membership is still as it was read) inside the batch's transaction, so a membership
changed by another sweeper, a payment or a cancellation in the meantime is left alone
(or the transaction loses the write conflict and runs again on fresh reads): each
transition, and so each event, happens once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store, subtree_filter

from memberships.domain import MembershipStatus
from memberships.lifecycle.domain import reminder_key, reminder_windows
from memberships.store import MEMBERSHIPS

S = MembershipStatus

INDEXES = [
    # the sweep: grace memberships whose grace is over (active ones: status + ends_on,
    # already in memberships.store)
    IndexSpec(MEMBERSHIPS, [("status", ASCENDING), ("grace_ends_on", ASCENDING)]),
    # the roll and the counts: a subtree (prefix) at a day, one row per person
    IndexSpec(MEMBERSHIPS, [("federation_path", ASCENDING), ("contact_id", ASCENDING)]),
]

#: the field a conditional update stamps, so a batch can tell which of its updates applied
OP_FIELD = "lifecycle_op"


@dataclass(frozen=True)
class GuardedUpdate:
    """One membership's change, applied only if ``guard`` still matches it."""

    membership_id: str
    op_id: str
    guard: dict[str, Any]
    set_fields: dict[str, Any]
    history: Sequence[dict[str, Any]] = field(default_factory=tuple)


def _day(value: date) -> str:
    return value.isoformat()


def not_cancelled_by(day: date) -> dict[str, Any]:
    """Not cancelled on or before ``day`` (a membership cancelled later was not then)."""
    return {"$or": [{"status": {"$ne": S.cancelled.value}}, {"cancelled_on": {"$gt": _day(day)}}]}


def standing_filter(day: date) -> dict[str, Any]:
    """In good standing on ``day`` (``lifecycle.domain.state_on`` is active or grace)."""
    return {
        "starts_on": {"$lte": _day(day)},
        "grace_ends_on": {"$gte": _day(day)},
        **not_cancelled_by(day),
    }


def counts_filters(day: date) -> dict[str, dict[str, Any]]:
    """One filter per state on ``day``, mirroring ``lifecycle.domain.state_on``."""
    d = _day(day)
    return {
        "active": {"starts_on": {"$lte": d}, "ends_on": {"$gte": d}, **not_cancelled_by(day)},
        "grace": {"ends_on": {"$lt": d}, "grace_ends_on": {"$gte": d}, **not_cancelled_by(day)},
        # a lapsed membership was never cancelled (a lapsed one cannot be)
        "lapsed": {"grace_ends_on": {"$lt": d}, "status": {"$ne": S.cancelled.value}},
        # no cancelled_on: cancelled by a refund that left no paid period (always was)
        "cancelled": {
            "status": S.cancelled.value,
            "$or": [{"cancelled_on": {"$lte": d}}, {"cancelled_on": None}],
        },
    }


def transition_queries(today: date) -> list[dict[str, Any]]:
    """The sweep's queries for memberships time has moved on by ``today``."""
    day = _day(today)
    return [
        {"status": S.active.value, "ends_on": {"$lt": day}},
        {"status": S.grace.value, "grace_ends_on": {"$lt": day}},
    ]


class LifecycleStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ the sweep

    async def due_transitions(
        self, today: date, limit: int, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Memberships time has moved on by ``today``: active past their paid period,
        grace past their grace days."""
        return await self._first(transition_queries(today), limit, session)

    async def due_reminders(
        self, today: date, offsets: Sequence[int], limit: int, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Active memberships whose period ends within a reminder's window and whose
        reminder for that window is not settled yet (one query; each window spans at most
        its offset's days, so the keys to exclude are few). The local store answers it
        with a scan (it never uses an index beside a ``$nin``); a query per window would
        scan once per window."""
        clauses = []
        for offset, fewest in reminder_windows(offsets):
            first, last = today + timedelta(days=fewest), today + timedelta(days=offset)
            days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
            clauses.append(
                {
                    "ends_on": {"$gte": _day(first), "$lte": _day(last)},
                    "reminded": {"$nin": [reminder_key(e, offset) for e in days]},
                }
            )
        if not clauses:
            return []
        return (
            await self.store[MEMBERSHIPS]
            .find({"status": S.active.value, "$or": clauses}, session=session)
            .sort([("ends_on", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def _first(
        self, queries: Sequence[dict[str, Any]], limit: int, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """The first ``limit`` memberships (by end, then id) matching any of the queries:
        one query each, each read through a (status, date) index. As one ``$or`` the
        local store scanned every membership, once per sweep batch (in a transaction, so
        every other transaction of the store waited for it)."""
        found: dict[str, dict[str, Any]] = {}
        for query in queries:
            cursor = (
                self.store[MEMBERSHIPS]
                .find(query, session=session)
                .sort([("ends_on", ASCENDING), ("_id", ASCENDING)])
                .limit(limit)
            )
            async for doc in cursor:
                found.setdefault(doc["_id"], doc)
        ordered = sorted(found.values(), key=lambda d: (d.get("ends_on") or "", d["_id"]))
        return ordered[:limit]

    async def apply(
        self, updates: Sequence[GuardedUpdate], session: AsyncClientSession
    ) -> set[str]:
        """Apply the updates in one bulk write; returns the ids of the memberships they
        changed (the others changed meanwhile and are left as they are)."""
        if not updates:
            return set()
        ops = []
        for u in updates:
            change: dict[str, Any] = {"$set": {**u.set_fields, OP_FIELD: u.op_id}}
            if u.history:
                change["$push"] = {"history": {"$each": list(u.history)}}
            ops.append(UpdateOne({"_id": u.membership_id, **u.guard}, change))
        result = await self.store[MEMBERSHIPS].bulk_write(ops, ordered=False, session=session)
        if result.modified_count == len(ops):
            return {u.membership_id for u in updates}
        # Some guard no longer matched: read back which updates are ours.
        stamped = self.store[MEMBERSHIPS].find(
            {
                "_id": {"$in": [u.membership_id for u in updates]},
                OP_FIELD: {"$in": [u.op_id for u in updates]},
            },
            {"_id": 1},
            session=session,
        )
        return {doc["_id"] async for doc in stamped}

    # ------------------------------------------------------------ one membership

    async def membership_doc(
        self, membership_id: str, scope: dict[str, Any], session: AsyncClientSession | None
    ) -> dict[str, Any] | None:
        return await self.store[MEMBERSHIPS].find_one(
            {"_id": membership_id, **scope}, session=session
        )

    # ------------------------------------------------------------ roll and counts

    async def roll_page(
        self, federation_path: str, day: date, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Memberships in good standing on ``day`` in the subtree, by contact id after
        ``after``: ``limit`` + 1 documents (one more says whether a next page exists)."""
        query: dict[str, Any] = {**subtree_filter(federation_path), **standing_filter(day)}
        if after is not None:
            query["contact_id"] = {"$gt": after}
        return (
            await self.store[MEMBERSHIPS]
            .find(query)
            .sort([("contact_id", ASCENDING), ("_id", ASCENDING)])
            .limit(limit + 1)
            .to_list()
        )

    async def counts(self, federation_path: str, day: date) -> dict[str, int]:
        subtree = subtree_filter(federation_path)
        return {
            state: await self.store[MEMBERSHIPS].count_documents({**subtree, **query})
            for state, query in counts_filters(day).items()
        }
