"""All database access of audience resolution: the jobs, and the contacts they page through."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

from contacts.audiences.domain import Position, next_boundary
from contacts.store import CONTACTS, SEGMENTS

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

    async def paths(self, scope: dict[str, Any]) -> list[str]:
        """Every federation path holding contacts in the audience's subtree, sorted (one
        read of the subtree per job: the ranges below are read path by path)."""
        found = await self.store[CONTACTS].distinct("federation_path", scope)
        return sorted(p for p in found if isinstance(p, str))

    @staticmethod
    def query(position: Position) -> dict[str, Any]:
        """``position``'s federation path and the rest of its id range: a read bounded on
        both sides in the (federation_path, _id) index (``domain``'s reading order says
        why)."""
        ids: dict[str, Any] = {"$gt" if position.strict else "$gte": position.key}
        upper = next_boundary(position.key)
        if upper is not None:
            ids["$lt"] = upper
        return {"federation_path": position.path, "_id": ids}

    async def read(self, position: Position, *, limit: int) -> list[dict[str, Any]]:
        """The next ``limit`` contacts at ``position``, in id order."""
        cursor = self.store[CONTACTS].find(self.query(position)).sort("_id", ASCENDING).limit(limit)
        return await cursor.to_list()

    async def advance(
        self,
        job_id: str,
        owner: str,
        *,
        cursor: Position,
        selected: int,
        lease_until: datetime,
        session: AsyncClientSession,
    ) -> bool:
        """Move the job past a page (in the page's transaction); False if the job is no
        longer this worker's (its lease was taken over): the page is then rolled back."""
        result = await self.jobs.update_one(
            {"_id": job_id, "owner": owner, "status": "running"},
            {
                "$set": {"cursor": cursor.to_document(), "lease_until": lease_until},
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
