"""All database access of plans per federation (memberships' own database).

``plans`` holds one document per (federation, code): the definition in force there now
(``withdrawn`` True: the code is withdrawn from that subtree), with its ``version``.
``plan_versions`` keeps every version ever written (who, when, what), never changed.
The treasurers' reports read ``payments`` (the core's collection) through the indexes
declared here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.federations import FEDERATIONS
from tribune_shared.store import IndexSpec, Store, subtree_filter

from memberships.store import PAYMENTS

PLANS = "plans"
PLAN_VERSIONS = "plan_versions"

INDEXES = [
    # the lineage of a federation is a handful of paths: one $in finds their plans
    IndexSpec(PLANS, [("federation_path", ASCENDING), ("code", ASCENDING)], {"unique": True}),
    IndexSpec(
        PLAN_VERSIONS,
        [("federation_id", ASCENDING), ("code", ASCENDING), ("version", DESCENDING)],
        {"unique": True},
    ),
    # the treasurer's list of payments whose amount differs from their plan's
    IndexSpec(
        PAYMENTS,
        [
            ("amount_check.flagged", ASCENDING),
            ("federation_path", ASCENDING),
            ("paid_at", DESCENDING),
        ],
    ),
    # the split report: a year of a subtree's dues
    IndexSpec(
        PAYMENTS, [("purpose", ASCENDING), ("federation_path", ASCENDING), ("paid_at", ASCENDING)]
    ),
]


def plan_key(federation_id: str, code: str) -> str:
    return f"{federation_id}:{code}"


class PlanStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ definitions

    async def definitions(
        self,
        paths: Sequence[str],
        limit: int,
        code: str | None = None,
        session: AsyncClientSession | None = None,
    ) -> list[dict[str, Any]]:
        """The definitions (and withdrawals) made at ``paths``, of ``code`` or of every
        code, at most ``limit``."""
        query: dict[str, Any] = {"federation_path": {"$in": list(paths)}}
        if code is not None:
            query["code"] = code
        return (
            await self.store[PLANS]
            .find(query, session=session)
            .sort([("federation_path", ASCENDING), ("code", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def current(
        self, federation_id: str, code: str, session: AsyncClientSession
    ) -> dict[str, Any] | None:
        return await self.store[PLANS].find_one(
            {"_id": plan_key(federation_id, code)}, session=session
        )

    async def count_defined(self, federation_id: str, session: AsyncClientSession) -> int:
        return await self.store[PLANS].count_documents(
            {"federation_id": federation_id}, session=session
        )

    async def write_version(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        """Make ``doc`` (with its ``version``) the one in force and keep it in the history.
        Two writers of one (federation, code) conflict on the first write: the transaction
        runner runs the loser again, which then sees the winner's version."""
        key = plan_key(doc["federation_id"], doc["code"])
        await self.store[PLANS].replace_one(
            {"_id": key}, {**doc, "_id": key}, upsert=True, session=session
        )
        await self.store[PLAN_VERSIONS].insert_one(
            {**doc, "_id": f"{key}:{doc['version']}"}, session=session
        )

    async def versions(self, federation_id: str, code: str, limit: int) -> list[dict[str, Any]]:
        """A (federation, code)'s versions, newest first."""
        return (
            await self.store[PLAN_VERSIONS]
            .find({"federation_id": federation_id, "code": code})
            .sort("version", DESCENDING)
            .limit(limit)
            .to_list()
        )

    # ------------------------------------------------------------ the federation tree

    async def federation(self, federation_id: str) -> dict[str, Any] | None:
        """A federation as memberships' projection of the tree knows it."""
        return await self.store[FEDERATIONS].find_one({"_id": federation_id})

    async def federation_names(self, federation_ids: Sequence[str]) -> dict[str, str]:
        docs = (
            await self.store[FEDERATIONS]
            .find({"_id": {"$in": list(federation_ids)}}, {"name": 1})
            .to_list()
        )
        return {d["_id"]: d.get("name", "") for d in docs}

    # ------------------------------------------------------------ reports on payments

    async def flagged_payments(
        self,
        federation_path: str,
        since: datetime | None,
        until: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Dues whose amount differs from their plan's, in a subtree, newest first; after
        the (paid_at, id) cursor ``after`` if given."""
        query: dict[str, Any] = {"amount_check.flagged": True, **subtree_filter(federation_path)}
        paid_at: dict[str, Any] = {}
        if since is not None:
            paid_at["$gte"] = since
        if until is not None:
            paid_at["$lt"] = until
        if paid_at:
            query["paid_at"] = paid_at
        if after is not None:
            at, payment_id = after
            query["$or"] = [{"paid_at": {"$lt": at}}, {"paid_at": at, "_id": {"$gt": payment_id}}]
        return (
            await self.store[PAYMENTS]
            .find(query)
            .sort([("paid_at", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def dues_by_federation(
        self, federation_path: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Accepted dues of a subtree paid in [since, until), summed per federation and
        currency, with each level's share (one aggregation: the store does the sums)."""
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "purpose": "dues",
                    **subtree_filter(federation_path),
                    "paid_at": {"$gte": since, "$lt": until},
                    "status": "accepted",
                }
            },
            {
                "$group": {
                    "_id": {
                        "federation_id": "$federation_id",
                        "federation_path": "$federation_path",
                        "currency": "$currency",
                    },
                    "payments": {"$sum": 1},
                    "collected_cents": {"$sum": "$amount_cents"},
                    "national_cents": {"$sum": "$split.levels.national.cents"},
                    "federation_cents": {"$sum": "$split.levels.federation.cents"},
                    "section_cents": {"$sum": "$split.levels.section.cents"},
                }
            },
        ]
        rows = [row async for row in await self.store[PAYMENTS].aggregate(pipeline)]
        return [{**row.pop("_id"), **row} for row in rows]
