"""All database access of donations: the legal totals, their guards, and elections."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.events import utcnow
from tribune_shared.store import IndexSpec, Store, ancestor_paths

from memberships.store import PAYMENTS

#: one document per (person, calendar year) and per (person, election): every payment
#: that counts towards a ceiling writes it first, so two transactions for one person
#: conflict there and the loser, run again, sees the winner's payment
GUARDS = "donation_guards"
ELECTIONS = "elections"

#: what a total needs of a payment
_TOTAL_FIELDS = {
    "amount_cents": 1,
    "purpose": 1,
    "status": 1,
    "elected_official": 1,
    "election_id": 1,
}

INDEXES = [
    # The person's payments of a year are read through the service's own
    # (contact_id, paid_at) index of payments (memberships.store.INDEXES); a campaign's
    # gifts by this one.
    IndexSpec(PAYMENTS, [("contact_id", ASCENDING), ("election_id", ASCENDING)]),
    # May an election be deleted: has it any gift?
    IndexSpec(PAYMENTS, [("election_id", ASCENDING)]),
    IndexSpec(ELECTIONS, [("federation_path", ASCENDING), ("starts_on", DESCENDING)]),
]


def party_guard_id(contact_id: str, year: int) -> str:
    return f"{contact_id}:year:{year}"


def campaign_guard_id(contact_id: str, election_id: str) -> str:
    return f"{contact_id}:election:{election_id}"


class DonationsStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ totals

    async def guard(self, guard_id: str, session: AsyncClientSession) -> None:
        """Write the guard document in the recording transaction (see ``GUARDS``)."""
        await self.store[GUARDS].update_one(
            {"_id": guard_id},
            {"$inc": {"payments": 1}, "$set": {"at": utcnow()}},
            upsert=True,
            session=session,
        )

    async def guard_merge(
        self, merged_id: str, survivor_id: str, session: AsyncClientSession
    ) -> None:
        """contact-merged, before the merged contact's payments move: write the survivor's
        guards of every year and election those payments count in, so a gift recorded for
        the survivor at the same time conflicts with the merge and, run again, sees them.
        A payment's year is its local day's: the years a day either side cover any zone."""
        moved = (
            await self.store[PAYMENTS]
            .find(
                {"contact_id": merged_id, "status": "accepted"},
                {"paid_at": 1, "election_id": 1},
                session=session,
            )
            .to_list()
        )
        guards = {
            party_guard_id(survivor_id, (p["paid_at"] + timedelta(days=shift)).year)
            for p in moved
            for shift in (-1, 1)
        } | {
            campaign_guard_id(survivor_id, p["election_id"]) for p in moved if p.get("election_id")
        }
        if guards:
            now = utcnow()
            await self.store[GUARDS].bulk_write(
                [
                    UpdateOne(
                        {"_id": guard_id},
                        {"$inc": {"payments": 0}, "$set": {"at": now}},
                        upsert=True,
                    )
                    for guard_id in sorted(guards)
                ],
                ordered=False,
                session=session,
            )

    async def guard_many(self, counts: dict[str, int], session: AsyncClientSession) -> None:
        """``guard`` for a batch of payments: each guard written once, counting its
        payments. A few statements whatever the batch's size (one upsert each cost the
        store a statement per person): the guards that exist are read, the missing ones
        inserted together, the others updated by one ``update_many`` per count (almost
        always one). Every guard is still written in the transaction, so concurrent
        recordings of one person still conflict."""
        if not counts:
            return
        now = utcnow()
        guards = self.store[GUARDS]
        ids = sorted(counts)
        existing = {
            d["_id"] async for d in guards.find({"_id": {"$in": ids}}, {"_id": 1}, session=session)
        }
        missing = [{"_id": g, "payments": counts[g], "at": now} for g in ids if g not in existing]
        if missing:
            await guards.insert_many(missing, ordered=True, session=session)
        by_count: dict[int, list[str]] = {}
        for g in sorted(existing):
            by_count.setdefault(counts[g], []).append(g)
        for n, same in sorted(by_count.items()):
            await guards.update_many(
                {"_id": {"$in": same}},
                {"$inc": {"payments": n}, "$set": {"at": now}},
                session=session,
            )

    async def payments_of_many(
        self,
        contact_ids: list[str],
        start: datetime,
        end: datetime,
        session: AsyncClientSession,
    ) -> list[dict[str, Any]]:
        """The payments of these people paid in [start, end), every status, with the
        person and the date (a batch's totals are grouped by person and year)."""
        if not contact_ids:
            return []
        return (
            await self.store[PAYMENTS]
            .find(
                {"contact_id": {"$in": contact_ids}, "paid_at": {"$gte": start, "$lt": end}},
                {**_TOTAL_FIELDS, "contact_id": 1, "paid_at": 1},
                session=session,
            )
            .to_list()
        )

    async def campaign_payments_of_many(
        self, contact_ids: list[str], election_ids: list[str], session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        if not contact_ids or not election_ids:
            return []
        return (
            await self.store[PAYMENTS]
            .find(
                {"contact_id": {"$in": contact_ids}, "election_id": {"$in": election_ids}},
                {**_TOTAL_FIELDS, "contact_id": 1},
                session=session,
            )
            .to_list()
        )

    async def elections_by_ids(
        self, election_ids: list[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        if not election_ids:
            return {}
        docs = self.store[ELECTIONS].find({"_id": {"$in": election_ids}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def payments_between(
        self,
        contact_id: str,
        start: datetime,
        end: datetime,
        session: AsyncClientSession | None = None,
    ) -> list[dict[str, Any]]:
        """The person's payments paid in [start, end), every status (the rules choose)."""
        return (
            await self.store[PAYMENTS]
            .find(
                {"contact_id": contact_id, "paid_at": {"$gte": start, "$lt": end}},
                _TOTAL_FIELDS,
                session=session,
            )
            .to_list()
        )

    async def campaign_payments(
        self, contact_id: str, election_id: str, session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        return (
            await self.store[PAYMENTS]
            .find(
                {"contact_id": contact_id, "election_id": election_id},
                _TOTAL_FIELDS,
                session=session,
            )
            .to_list()
        )

    async def election_has_gifts(self, election_id: str) -> bool:
        return (
            await self.store[PAYMENTS].find_one({"election_id": election_id}, {"_id": 1})
            is not None
        )

    # ------------------------------------------------------------ elections

    async def election(
        self, election_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """Any election (a provider's webhook names one without a caller)."""
        return await self.store[ELECTIONS].find_one({"_id": election_id}, session=session)

    async def visible_election(
        self, identity: Identity, election_id: str, *, with_ancestors: bool = False
    ) -> dict[str, Any] | None:
        """The election if it is in the caller's subtree (or, ``with_ancestors``, defined
        by a federation above the caller's: a national election a local treasurer takes
        gifts for)."""
        query: dict[str, Any] = {"_id": election_id, **identity.scope()}
        if with_ancestors:
            query = {
                "_id": election_id,
                "$or": [
                    identity.scope(),
                    {"federation_path": {"$in": ancestor_paths(identity.federation_path)}},
                ],
            }
        return await self.store[ELECTIONS].find_one(query)

    async def elections(self, identity: Identity, limit: int) -> list[dict[str, Any]]:
        return (
            await self.store[ELECTIONS]
            .find(identity.scope())
            .sort([("starts_on", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def insert_election(self, doc: dict[str, Any]) -> None:
        await self.store[ELECTIONS].insert_one(doc)

    async def update_election(
        self, identity: Identity, election_id: str, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        return await self.store[ELECTIONS].find_one_and_update(
            {"_id": election_id, **identity.scope()},
            {"$set": changes},
            return_document=ReturnDocument.AFTER,
        )

    async def delete_election(self, identity: Identity, election_id: str) -> bool:
        result = await self.store[ELECTIONS].delete_one({"_id": election_id, **identity.scope()})
        return result.deleted_count == 1
