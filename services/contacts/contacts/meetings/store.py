"""All database access of meetings: the meetings, their registrations (check-ins
included), the reminder markers, and the attendance summary on the contact document."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError
from tribune_shared.store import IndexSpec, Store

from contacts.meetings.domain import reminder_marker
from contacts.store import CONTACTS

MEETINGS = "meetings"
REGISTRATIONS = "meeting_registrations"
REMINDERS = "meeting_reminders"
DUPLICATE_KEY = 11000

INDEXES = [
    # Listing a subtree's meetings by date; the reminder job's upcoming scheduled ones.
    IndexSpec(MEETINGS, [("federation_path", ASCENDING), ("starts_at", ASCENDING)]),
    IndexSpec(MEETINGS, [("status", ASCENDING), ("starts_at", ASCENDING)]),
    # A meeting's registrations (waiting list in order of arrival), a person's history.
    IndexSpec(
        REGISTRATIONS,
        [("meeting_id", ASCENDING), ("status", ASCENDING), ("registered_at", ASCENDING)],
    ),
    IndexSpec(REGISTRATIONS, [("contact_id", ASCENDING), ("starts_at", DESCENDING)]),
    IndexSpec(REMINDERS, [("contact_id", ASCENDING)]),
    # "Came to at least N meetings since D" (contacts.filter_language's attended node):
    # the subtree prefix is applied beside it.
    IndexSpec(
        CONTACTS,
        [("attendance.k", ASCENDING), ("attendance.n", ASCENDING), ("attendance.at", ASCENDING)],
    ),
]

#: what a registration list shows of a person: who they are, not how to reach them
NAME_FIELDS = {"given_name": 1, "family_name": 1}


class MeetingStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.meetings = store[MEETINGS]
        self.registrations = store[REGISTRATIONS]
        self.reminders = store[REMINDERS]
        self.contacts = store[CONTACTS]

    # ------------------------------------------------------------ meetings

    async def get(
        self,
        meeting_id: str,
        scope: dict[str, Any],
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        """A meeting of the scope (a federation_path filter such as ``identity.scope()``),
        or None: a form checks its meeting_id with it."""
        return await self.meetings.find_one({"_id": meeting_id, **scope}, session=session)

    async def registered_count(self, meeting_id: str) -> dict[str, Any] | None:
        """A public page's figures: capacity, registered, waitlisted (None: no meeting)."""
        return await self.meetings.find_one(
            {"_id": meeting_id},
            {"capacity": 1, "registered": 1, "waitlisted": 1, "status": 1, "starts_at": 1},
        )

    async def by_ids(
        self, ids: Sequence[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        docs = self.meetings.find({"_id": {"$in": list(ids)}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def insert(self, doc: dict[str, Any]) -> None:
        await self.meetings.insert_one(doc)

    async def page(
        self,
        scope: dict[str, Any],
        conditions: dict[str, Any],
        *,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[dict[str, Any]]:
        """Meetings in start order (then id), after the cursor; one more than ``limit``."""
        clauses: list[dict[str, Any]] = [scope, conditions]
        if after is not None:
            at, last_id = after
            clauses.append(
                {"$or": [{"starts_at": {"$gt": at}}, {"starts_at": at, "_id": {"$gt": last_id}}]}
            )
        cursor = (
            self.meetings.find({"$and": clauses})
            .sort([("starts_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit + 1)
        )
        return await cursor.to_list()

    async def update(
        self,
        meeting_id: str,
        expected_version: int,
        changes: dict[str, Any],
        session: AsyncClientSession,
    ) -> dict[str, Any] | None:
        """Apply changes if the meeting is still at ``expected_version`` (None otherwise)."""
        return await self.meetings.find_one_and_update(
            {"_id": meeting_id, "version": expected_version},
            {"$set": changes, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def count_in(
        self, meeting_id: str, registered: int, waitlisted: int, session: AsyncClientSession
    ) -> None:
        """Move the meeting's counters: every registration's transaction writes the meeting,
        so two of them racing for the last place conflict and one runs again."""
        await self.meetings.update_one(
            {"_id": meeting_id},
            {"$inc": {"registered": registered, "waitlisted": waitlisted}},
            session=session,
        )

    async def upcoming(self, now: datetime, until: datetime) -> list[dict[str, Any]]:
        """Scheduled meetings starting in (now, until]: the reminder job's candidates."""
        cursor = self.meetings.find(
            {"status": "scheduled", "starts_at": {"$gt": now, "$lte": until}}
        ).sort("starts_at", ASCENDING)
        return await cursor.to_list()

    # ------------------------------------------------------------ registrations

    async def registrations_by_ids(
        self, ids: Sequence[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        docs = self.registrations.find({"_id": {"$in": list(ids)}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def registration(
        self, registration_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.registrations.find_one({"_id": registration_id}, session=session)

    async def insert_registrations(
        self, docs: Sequence[dict[str, Any]], session: AsyncClientSession
    ) -> None:
        if docs:
            await self.registrations.insert_many(list(docs), ordered=True, session=session)

    async def set_registration(
        self, registration_id: str, changes: dict[str, Any], session: AsyncClientSession
    ) -> None:
        await self.registrations.update_one(
            {"_id": registration_id}, {"$set": changes}, session=session
        )

    async def delete_registration(
        self, registration_id: str, session: AsyncClientSession
    ) -> dict[str, Any] | None:
        return await self.registrations.find_one_and_delete(
            {"_id": registration_id}, session=session
        )

    async def first_waiting(
        self, meeting_id: str, limit: int, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        cursor = (
            self.registrations.find(
                {"meeting_id": meeting_id, "status": "waitlisted"}, {"_id": 1}, session=session
            )
            .sort([("registered_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return await cursor.to_list()

    async def promote(self, ids: Sequence[str], at: datetime, session: AsyncClientSession) -> None:
        if ids:
            await self.registrations.update_many(
                {"_id": {"$in": list(ids)}, "status": "waitlisted"},
                {"$set": {"status": "registered", "promoted_at": at}},
                session=session,
            )

    async def registrations_page(
        self,
        meeting_id: str,
        *,
        status: str | None,
        limit: int,
        after: str | None,
    ) -> list[dict[str, Any]]:
        """A meeting's registrations in id order after the cursor; one more than ``limit``."""
        query: dict[str, Any] = {"meeting_id": meeting_id}
        if status is not None:
            query["status"] = status
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.registrations.find(query).sort("_id", ASCENDING).limit(limit + 1)
        return await cursor.to_list()

    async def registrant_ids(self, meeting_id: str) -> list[str]:
        docs = self.registrations.find({"meeting_id": meeting_id}, {"contact_id": 1})
        return [d["contact_id"] async for d in docs]

    async def reschedule(
        self, meeting_id: str, changes: dict[str, Any], session: AsyncClientSession
    ) -> None:
        """Keep the registrations' copy of the meeting's kind and start (a person's history
        is read in date order from the registrations alone)."""
        await self.registrations.update_many(
            {"meeting_id": meeting_id}, {"$set": changes}, session=session
        )

    async def checked_in_ids(self, meeting_id: str, session: AsyncClientSession) -> list[str]:
        docs = self.registrations.find(
            {"meeting_id": meeting_id, "checked_in_at": {"$ne": None}},
            {"contact_id": 1},
            session=session,
        )
        return [d["contact_id"] async for d in docs]

    async def history(
        self, contact_id: str, limit: int, session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        """A person's registrations, most recent meeting first."""
        cursor = (
            self.registrations.find({"contact_id": contact_id}, session=session)
            .sort([("starts_at", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return await cursor.to_list()

    async def attended(
        self, contact_id: str, session: AsyncClientSession
    ) -> list[tuple[str, datetime]]:
        """(kind, starts_at) of every meeting the person was checked in at."""
        docs = self.registrations.find(
            {"contact_id": contact_id, "checked_in_at": {"$ne": None}},
            {"kind": 1, "starts_at": 1},
            session=session,
        )
        return [(d["kind"], d["starts_at"]) async for d in docs]

    # ------------------------------------------------------------ contacts

    async def contact(
        self, contact_id: str, scope: dict[str, Any], session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """A contact of the scope (id, names, federation), or None."""
        return await self.contacts.find_one(
            {"_id": contact_id, **scope},
            {**NAME_FIELDS, "federation_id": 1, "federation_path": 1},
            session=session,
        )

    async def names(
        self,
        ids: Sequence[str],
        search: dict[str, Any] | None = None,
        limit: int = 0,
    ) -> dict[str, dict[str, Any]]:
        """Names of contacts by id (those matching ``search`` if given)."""
        if not ids:
            return {}
        query: dict[str, Any] = {"_id": {"$in": list(ids)}}
        if search:
            query = {"$and": [query, search]}
        cursor = self.contacts.find(query, NAME_FIELDS).sort("_id", ASCENDING).limit(limit)
        return {d["_id"]: d async for d in cursor}

    async def set_attendance(
        self, contact_id: str, summary: list[dict[str, Any]], session: AsyncClientSession
    ) -> None:
        """The attendance summary is the meetings' annotation of the contact: its version
        and updated_at stay (attendance is not an edit of the person, and no other service
        needs it: contact-updated is not emitted for it)."""
        update: dict[str, Any] = (
            {"$set": {"attendance": summary}} if summary else {"$unset": {"attendance": ""}}
        )
        await self.contacts.update_one({"_id": contact_id}, update, session=session)

    # ------------------------------------------------------------ reminders

    async def registered_page(
        self, meeting_id: str, *, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The registered people (places, not the waiting list) of a meeting, in id order."""
        query: dict[str, Any] = {"meeting_id": meeting_id, "status": "registered"}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = (
            self.registrations.find(query, {"contact_id": 1}).sort("_id", ASCENDING).limit(limit)
        )
        return await cursor.to_list()

    async def reminded(self, meeting_id: str, contact_ids: Sequence[str]) -> dict[str, set[int]]:
        """The offsets already settled for each of these people of a meeting."""
        if not contact_ids:
            return {}
        docs = self.reminders.find(
            {"meeting_id": meeting_id, "contact_id": {"$in": list(contact_ids)}},
            {"contact_id": 1, "hours_before": 1},
        )
        settled: dict[str, set[int]] = {}
        async for d in docs:
            settled.setdefault(d["contact_id"], set()).add(d["hours_before"])
        return settled

    async def mark_reminded(
        self, markers: Sequence[dict[str, Any]], session: AsyncClientSession
    ) -> None:
        """Markers have the (meeting, person, offset) as their id: a second job settling
        the same reminder fails on the key and its transaction (with its events) is void."""
        if not markers:
            return
        try:
            await self.reminders.insert_many(list(markers), ordered=True, session=session)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if errors and all(e.get("code") == DUPLICATE_KEY for e in errors):
                raise DuplicateKeyError("a reminder marker exists already") from exc
            raise

    # ------------------------------------------------------------ erasure

    async def erase_person(
        self, contact_id: str, session: AsyncClientSession
    ) -> tuple[int, list[str]]:
        """Delete the person's registrations (their meetings' counters follow) and reminder
        markers: (documents deleted, the meetings where they held a place, which the
        waiting list may now take: meetings.service.erase_registrations)."""
        docs = await self.registrations_of(contact_id, session)
        await self.uncount(docs, session)
        deleted = await self.registrations.delete_many({"contact_id": contact_id}, session=session)
        markers = await self.reminders.delete_many({"contact_id": contact_id}, session=session)
        freed = [d["meeting_id"] for d in docs if d["status"] == "registered"]
        return deleted.deleted_count + markers.deleted_count, freed

    async def registrations_of(
        self, contact_id: str, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Every registration of a person (all meetings, past ones too)."""
        return await self.registrations.find({"contact_id": contact_id}, session=session).to_list()

    async def uncount(self, docs: Sequence[dict[str, Any]], session: AsyncClientSession) -> None:
        """Take registrations out of their meetings' counters (before they are deleted)."""
        changes: dict[str, dict[str, int]] = {}
        for doc in docs:
            if doc["status"] in ("registered", "waitlisted"):
                counts = changes.setdefault(doc["meeting_id"], {})
                counts[doc["status"]] = counts.get(doc["status"], 0) - 1
        if changes:
            await self.meetings.bulk_write(
                [UpdateOne({"_id": m}, {"$inc": inc}) for m, inc in changes.items()],
                ordered=False,
                session=session,
            )

    async def replace_registrations(
        self,
        removed: Sequence[str],
        added: Sequence[dict[str, Any]],
        session: AsyncClientSession,
    ) -> None:
        if removed:
            await self.registrations.delete_many({"_id": {"$in": list(removed)}}, session=session)
        if added:
            await self.registrations.insert_many(list(added), ordered=True, session=session)

    async def move_markers(
        self, merged_id: str, survivor_id: str, session: AsyncClientSession
    ) -> None:
        """The merged contact's reminder markers become the survivor's, so a merge never
        makes a reminder go out twice (a marker the survivor has already is kept)."""
        docs = await self.reminders.find({"contact_id": merged_id}, session=session).to_list()
        if not docs:
            return
        moved = [
            {
                **d,
                "_id": reminder_marker(d["meeting_id"], survivor_id, d["hours_before"]),
                "contact_id": survivor_id,
            }
            for d in docs
        ]
        have = {
            d["_id"]
            async for d in self.reminders.find(
                {"_id": {"$in": [m["_id"] for m in moved]}}, {"_id": 1}, session=session
            )
        }
        fresh = [m for m in moved if m["_id"] not in have]
        await self.reminders.delete_many({"contact_id": merged_id}, session=session)
        if fresh:
            await self.reminders.insert_many(fresh, ordered=True, session=session)
