"""Database access of privacy requests, retention clocks and the person's consent data."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.store import IndexSpec, Store, insert_absent

from consent.privacy import RequestKind, RequestStatus, RetentionRule, retention_cutoff
from consent.store import CURRENT, LEDGER

PRIVACY_REQUESTS = "privacy_requests"
RETENTION_CLOCKS = "retention_clocks"  # per contact: dates only (no personal data)

#: collections of the consent database holding a person's data, by their contact field;
#: erasure deletes the person's documents from each
PERSON_COLLECTIONS: list[tuple[str, str]] = [(LEDGER, "contact_id"), (CURRENT, "contact_id")]

PRIVACY_INDEXES = [
    IndexSpec(PRIVACY_REQUESTS, [("federation_path", ASCENDING), ("received_at", DESCENDING)]),
    IndexSpec(PRIVACY_REQUESTS, [("status", ASCENDING), ("deadline", ASCENDING)]),
    IndexSpec(PRIVACY_REQUESTS, [("contact_id", ASCENDING)]),
    # At most one erasure in progress per person (set while in progress, unset when done).
    IndexSpec(
        PRIVACY_REQUESTS,
        [("active_erasure", ASCENDING)],
        {
            "name": "one_active_erasure_per_contact",
            "unique": True,
            "partialFilterExpression": {"active_erasure": {"$type": "string"}},
        },
    ),
    IndexSpec(RETENTION_CLOCKS, [("first_message_at", ASCENDING)]),
    IndexSpec(RETENTION_CLOCKS, [("last_activity_at", ASCENDING)]),
]


@dataclass(frozen=True)
class ClockTouch:
    """What one event does to a person's retention clocks."""

    contact_id: str
    federation_id: str
    federation_path: str
    set_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    earliest: dict[str, datetime] = dataclasses.field(default_factory=dict)
    latest: dict[str, datetime] = dataclasses.field(default_factory=dict)
    inc: dict[str, int] = dataclasses.field(default_factory=dict)

    def update(self) -> UpdateOne:
        update: dict[str, Any] = {
            "$set": {
                "federation_id": self.federation_id,
                "federation_path": self.federation_path,
                **self.set_fields,
            }
        }
        if self.earliest:
            update["$min"] = self.earliest
        if self.latest:
            update["$max"] = self.latest
        if self.inc:
            update["$inc"] = self.inc
        return UpdateOne({"_id": self.contact_id}, update, upsert=True)

    def document(self) -> dict[str, Any]:
        """The clocks of a person not seen before: what ``update`` makes of no document."""
        return {
            "_id": self.contact_id,
            "federation_id": self.federation_id,
            "federation_path": self.federation_path,
            **self.set_fields,
            **self.earliest,
            **self.latest,
            **self.inc,
        }


class PrivacyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def requests(self):
        return self.store[PRIVACY_REQUESTS]

    # ------------------------------------------------------------ requests
    async def insert_request(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        """Raises DuplicateKeyError if an erasure of the person is already in progress."""
        await self.requests.insert_one(doc, session=session)

    async def active_erasure(self, contact_id: str) -> dict[str, Any] | None:
        return await self.requests.find_one({"active_erasure": contact_id})

    async def request(
        self,
        request_id: str,
        identity: Identity | None = None,
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": request_id}
        if identity is not None:
            query.update(identity.scope())
        return await self.requests.find_one(query, session=session)

    async def list_requests(
        self,
        identity: Identity,
        *,
        now: datetime,
        overdue: bool | None,
        kind: str | None,
        status: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        done = RequestStatus.completed.value
        clauses: list[dict[str, Any]] = [identity.scope()]
        if kind:
            clauses.append({"kind": kind})
        if status:
            clauses.append({"status": status})
        if overdue is True:
            clauses += [{"deadline": {"$lt": now}}, {"status": {"$ne": done}}]
        elif overdue is False:
            clauses.append({"$or": [{"deadline": {"$gte": now}}, {"status": done}]})
        query = {"$and": clauses}
        return (
            await self.requests.find(query)
            .sort([("deadline", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def requests_of(self, contact_id: str) -> list[dict[str, Any]]:
        return await self.requests.find({"contact_id": contact_id}).sort("received_at").to_list()

    async def add_destroyed_keys(
        self, contact_id: str, subjects: Iterable[str], session: AsyncClientSession
    ) -> None:
        """The person's erasure requests (and receipts) list these destroyed keys too."""
        each = {"$each": list(subjects)}
        if not each["$each"]:
            return
        erasures = {"contact_id": contact_id, "kind": RequestKind.erasure.value}
        await self.requests.update_many(
            erasures, {"$addToSet": {"keys_destroyed": each}}, session=session
        )
        await self.requests.update_many(
            {**erasures, "receipt": {"$type": "object"}},
            {"$addToSet": {"receipt.keys_destroyed": each}},
            session=session,
        )

    async def erasure_receipts(self) -> list[dict[str, Any]]:
        """Every erasure request: its person and the keys it destroyed (ids only)."""
        return (
            await self.requests.find(
                {"kind": RequestKind.erasure.value},
                {"contact_id": 1, "keys_destroyed": 1, "receipt.keys_destroyed": 1},
            )
            .sort("_id")
            .to_list()
        )

    async def update_request(
        self, request_id: str, update: dict[str, Any], session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.requests.find_one_and_update(
            {"_id": request_id}, update, session=session, return_document=ReturnDocument.AFTER
        )

    # ------------------------------------------------------------ the person's data
    async def ledger(self, contact_id: str) -> list[dict[str, Any]]:
        return (
            await self.store[LEDGER].find({"contact_id": contact_id}).sort("recorded_at").to_list()
        )

    async def current(self, contact_id: str) -> list[dict[str, Any]]:
        return await self.store[CURRENT].find({"contact_id": contact_id}).to_list()

    async def erase_person(self, contact_id: str, session: AsyncClientSession) -> dict[str, int]:
        """Delete the person's documents from every collection holding some."""
        deleted = {}
        for collection, field in PERSON_COLLECTIONS:
            result = await self.store[collection].delete_many({field: contact_id}, session=session)
            deleted[collection] = result.deleted_count
        return deleted

    # ------------------------------------------------------------ retention clocks
    async def touch_clocks(self, touches: list[ClockTouch], session: AsyncClientSession) -> None:
        """Move people's clocks, a batch in one bulk write; $min/$max/$inc make the result
        independent of the events' order."""
        if not touches:
            return
        clocks = self.store[RETENTION_CLOCKS]
        # people seen for the first time (an import's contacts) in one insert; the others,
        # and a batch's later touches of a new person, as updates in the batch's order
        inserted = set(
            await insert_absent(clocks, [t.document() for t in touches], session=session)
        )
        updates = [t.update() for i, t in enumerate(touches) if i not in inserted]
        if updates:
            await clocks.bulk_write(updates, ordered=True, session=session)

    async def clock(self, contact_id: str) -> dict[str, Any] | None:
        return await self.store[RETENTION_CLOCKS].find_one({"_id": contact_id})

    async def mark_clock_erased(
        self, contact_id: str, at: datetime, session: AsyncClientSession
    ) -> None:
        await self.store[RETENTION_CLOCKS].update_one(
            {"_id": contact_id},
            {"$set": {"erased": True}, "$min": {"erased_at": at}},
            upsert=True,
            session=session,
        )

    async def due_clocks(
        self, rule: RetentionRule, now: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """Clocks that may have run out under ``rule`` (``retention_due`` decides)."""
        cutoff = retention_cutoff(rule, now)
        query: dict[str, Any] = {"erased": {"$ne": True}}
        if rule.origins:
            query["origin_kind"] = {"$in": rule.origins}
        if rule.clock == "unanswered_prospect":
            query["first_message_at"] = {"$lte": cutoff}
            query["consented_at"] = None
        else:
            query["$or"] = [
                {"last_activity_at": {"$lte": cutoff}},
                {"last_activity_at": None, "created_at": {"$lte": cutoff}},
            ]
        return await self.store[RETENTION_CLOCKS].find(query).limit(limit).to_list()
