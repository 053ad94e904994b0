"""Database access of privacy requests, retention clocks and the person's consent data."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.store import IndexSpec, Store, by_id, insert_absent

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


_V = TypeVar("_V")


def _combined(
    first: dict[str, _V], later: dict[str, _V], pick: Callable[[_V, _V], _V]
) -> dict[str, _V]:
    both = {**first, **later}
    return {k: pick(first[k], v) if k in first and k in later else v for k, v in both.items()}


def merged_touches(touches: Sequence[ClockTouch]) -> list[ClockTouch]:
    """One touch per person, in the order people first appear, each what that person's
    touches make one after the other."""
    merged: dict[str, ClockTouch] = {}
    for touch in touches:
        seen = merged.get(touch.contact_id)
        merged[touch.contact_id] = touch if seen is None else seen.then(touch)
    return list(merged.values())


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

    def then(self, later: ClockTouch) -> ClockTouch:
        """This touch and a later one of the same person, as one: what the two updates
        make one after the other (later fields set win; earliest and latest dates and
        counts combine)."""
        return ClockTouch(
            self.contact_id,
            later.federation_id,
            later.federation_path,
            set_fields={**self.set_fields, **later.set_fields},
            earliest=_combined(self.earliest, later.earliest, min),
            latest=_combined(self.latest, later.latest, max),
            inc=_combined(self.inc, later.inc, lambda a, b: a + b),
        )

    def shape(self) -> tuple[tuple[str, ...], ...]:
        """The fields it moves, and how: touches of one shape share one statement."""
        return (
            tuple(sorted(self.set_fields)),
            tuple(sorted(self.earliest)),
            tuple(sorted(self.latest)),
            tuple(sorted(self.inc)),
        )

    def document(self) -> dict[str, Any]:
        """The clocks of a person not seen before: what this touch makes of no document."""
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
        # and a batch's later touches of a new person, merged per person and updated in
        # one statement per shape of touch (a campaign's message-sent events: one for the
        # batch; an update per event cost the local store a statement each)
        inserted = set(
            await insert_absent(clocks, [t.document() for t in touches], session=session)
        )
        rest = merged_touches([t for i, t in enumerate(touches) if i not in inserted])
        groups: dict[tuple[tuple[str, ...], ...], list[ClockTouch]] = {}
        for touch in rest:
            groups.setdefault(touch.shape(), []).append(touch)
        for (set_names, earliest, latest, inc), group in groups.items():
            ids = [t.contact_id for t in group]
            stage: dict[str, Any] = {
                "federation_id": by_id(ids, [t.federation_id for t in group]),
                "federation_path": by_id(ids, [t.federation_path for t in group]),
            }
            for name in set_names:
                stage[name] = by_id(ids, [t.set_fields[name] for t in group])
            # ($min and $max of an expression leave out a missing or null field)
            for name in earliest:
                stage[name] = {"$min": [f"${name}", by_id(ids, [t.earliest[name] for t in group])]}
            for name in latest:
                stage[name] = {"$max": [f"${name}", by_id(ids, [t.latest[name] for t in group])]}
            for name in inc:
                was = {"$ifNull": [f"${name}", 0]}
                stage[name] = {"$add": [was, by_id(ids, [t.inc[name] for t in group])]}
            await clocks.update_many({"_id": {"$in": ids}}, [{"$set": stage}], session=session)

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
