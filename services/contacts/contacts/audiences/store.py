"""All database access of audience resolution: the jobs, and the contacts they page through."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

from contacts.store import CONTACTS, SEGMENTS, select

AUDIENCES = "campaign_audiences"

INDEXES = [
    # The worker's queue: pending jobs, and running ones whose lease expired.
    IndexSpec(AUDIENCES, [("status", ASCENDING), ("lease_until", ASCENDING)]),
]


class AudienceStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs = store[AUDIENCES]

    async def record(self, job: dict[str, Any], session: AsyncClientSession) -> None:
        """A job per campaign: a redelivered ``campaign-launched`` changes nothing."""
        await self.jobs.update_one(
            {"_id": job["_id"]}, {"$setOnInsert": job}, upsert=True, session=session
        )

    async def claim(
        self, owner: str, now: datetime, lease_until: datetime
    ) -> dict[str, Any] | None:
        """Take a pending job, or a running one whose worker died (its lease ran out)."""
        return await self.jobs.find_one_and_update(
            {
                "$or": [
                    {"status": "pending"},
                    {"status": "running", "lease_until": {"$lt": now}},
                ]
            },
            {"$set": {"status": "running", "owner": owner, "lease_until": lease_until}},
            sort=[("created_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    async def segment(self, segment_id: str) -> dict[str, Any] | None:
        """A saved segment by id, whatever its federation: the job checks that it is the
        campaign's to use (``domain.audience_scope``)."""
        return await self.store[SEGMENTS].find_one(
            {"_id": segment_id}, {"filter": 1, "federation_path": 1}
        )

    async def page(
        self,
        scope: dict[str, Any],
        conditions: list[dict[str, Any]],
        *,
        after: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """The next ``limit`` matching contacts in id order: their id and federation only."""
        clauses = [*conditions, *([{"_id": {"$gt": after}}] if after is not None else [])]
        cursor = (
            self.store[CONTACTS]
            .find(select(scope, clauses), {"federation_id": 1, "federation_path": 1})
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        return await cursor.to_list()

    async def advance(
        self,
        job_id: str,
        owner: str,
        *,
        cursor: str,
        selected: int,
        lease_until: datetime,
        session: AsyncClientSession,
    ) -> bool:
        """Move the job past a page (in the page's transaction); False if the job is no
        longer this worker's (its lease was taken over): the page is then rolled back."""
        result = await self.jobs.update_one(
            {"_id": job_id, "owner": owner, "status": "running"},
            {
                "$set": {"cursor": cursor, "lease_until": lease_until},
                "$inc": {"selected": selected},
            },
            session=session,
        )
        return result.matched_count == 1

    async def release(self, job_id: str, owner: str) -> None:
        """Hand a job back (shutdown): the next worker resumes it at its cursor."""
        await self.jobs.update_one(
            {"_id": job_id, "owner": owner, "status": "running"},
            {"$set": {"status": "pending", "owner": None, "lease_until": None}},
        )

    async def finish(
        self,
        job_id: str,
        owner: str,
        *,
        error: str | None,
        at: datetime,
        session: AsyncClientSession,
    ) -> dict[str, Any] | None:
        """Close the job (done or failed); the job as it ends, or None if not this worker's."""
        return await self.jobs.find_one_and_update(
            {"_id": job_id, "owner": owner, "status": "running"},
            {"$set": {"status": "failed" if error else "done", "error": error, "finished_at": at}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
