"""All database access of form submissions: the queued documents the public intake
writes (``contacts.forms``), the one signature per (form, person), the per-form counters,
and the back office's list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import DESCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

#: one document per submission, written "queued" by the public intake (contacts.forms)
SUBMISSIONS = "form_submissions"
#: one per (form, person): ``_id`` = "<form_id>:<contact_id>" (duplicates counted once)
SIGNATURES = "form_signatures"
#: one per form: ``signatures`` (people counted once), ``submissions`` (applied ones)
COUNTERS = "form_counters"
#: the form definitions (contacts.forms owns them; read here for the list's scope only)
FORMS = "forms"

INDEXES = [
    # The back office's list: a form's submissions, newest first (status filter beside).
    IndexSpec(SUBMISSIONS, [("form_id", 1), ("received_at", DESCENDING), ("_id", DESCENDING)]),
    IndexSpec(
        SUBMISSIONS,
        [("form_id", 1), ("status", 1), ("received_at", DESCENDING), ("_id", DESCENDING)],
    ),
    # Erasure: the person's submissions and signatures.
    IndexSpec(SUBMISSIONS, [("contact_id", 1)]),
    IndexSpec(SIGNATURES, [("contact_id", 1)]),
]


def signature_id(form_id: str, contact_id: str) -> str:
    return f"{form_id}:{contact_id}"


class SubmissionStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.submissions = store[SUBMISSIONS]
        self.signature_docs = store[SIGNATURES]
        self.counters = store[COUNTERS]

    # ------------------------------------------------------------ the public counter
    async def signatures(self, form_id: str) -> int:
        """People who submitted the form, each counted once (the petition's counter)."""
        doc = await self.counters.find_one({"_id": form_id}, {"signatures": 1})
        return int(doc.get("signatures", 0)) if doc else 0

    # ------------------------------------------------------------ the worker's batch
    async def queued(
        self, submission_ids: Sequence[str], session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """The batch's submissions still queued (applied ones are skipped: redelivery)."""
        if not submission_ids:
            return []
        found = await self.submissions.find(
            {"_id": {"$in": list(dict.fromkeys(submission_ids))}, "status": "queued"},
            session=session,
        ).to_list()
        order = {sid: i for i, sid in enumerate(submission_ids)}
        return sorted(found, key=lambda d: order.get(d["_id"], len(order)))

    async def signed(
        self, pairs: Sequence[tuple[str, str]], session: AsyncClientSession
    ) -> set[tuple[str, str]]:
        """Which (form, contact) pairs already have their signature."""
        if not pairs:
            return set()
        ids = [signature_id(f, c) for f, c in dict.fromkeys(pairs)]
        docs = self.signature_docs.find(
            {"_id": {"$in": ids}}, {"form_id": 1, "contact_id": 1}, session=session
        )
        return {(d["form_id"], d["contact_id"]) async for d in docs}

    async def record(
        self,
        session: AsyncClientSession,
        *,
        applied: Sequence[tuple[str, dict[str, Any]]],
        rejected: Sequence[tuple[str, str]],
        signatures: Sequence[dict[str, Any]],
        counts: dict[str, tuple[int, int]],
        now: datetime,
    ) -> None:
        """Mark submissions applied (with what they did) or rejected, add the new
        signatures and move the counters (new signatures only), in the caller's
        transaction: one bulk write per collection."""
        ops = [
            UpdateOne(
                {"_id": sid, "status": "queued"},
                {"$set": {**values, "status": "applied", "applied_at": now}},
            )
            for sid, values in applied
        ]
        ops += [
            UpdateOne(
                {"_id": sid, "status": "queued"},
                {"$set": {"status": "rejected", "reason": reason[:1000], "applied_at": now}},
            )
            for sid, reason in rejected
        ]
        if ops:
            await self.submissions.bulk_write(ops, ordered=False, session=session)
        if signatures:
            await self.signature_docs.bulk_write(
                [InsertOne(doc) for doc in signatures], ordered=False, session=session
            )
        if counts:
            await self.counters.bulk_write(
                [
                    UpdateOne(
                        {"_id": form_id},
                        {
                            "$inc": {"signatures": people, "submissions": applied_count},
                            "$set": {"updated_at": now},
                        },
                        upsert=True,
                    )
                    for form_id, (people, applied_count) in counts.items()
                ],
                ordered=False,
                session=session,
            )

    # ------------------------------------------------------------ the back office
    async def form(self, form_id: str, scope: dict[str, Any]) -> dict[str, Any] | None:
        """The form if it is in the caller's subtree (only its scope fields)."""
        return await self.store[FORMS].find_one(
            {"_id": form_id, **scope}, {"federation_id": 1, "federation_path": 1}
        )

    async def page(
        self,
        form_id: str,
        *,
        status: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the form's submissions, newest first; (items, more after them)."""
        query: dict[str, Any] = {"form_id": form_id}
        if status is not None:
            query["status"] = status
        if after is not None:
            at, last_id = after
            query["$or"] = [
                {"received_at": {"$lt": at}},
                {"received_at": at, "_id": {"$lt": last_id}},
            ]
        found = (
            await self.submissions.find(query, {"answers": 0})
            .sort([("received_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit + 1)
            .to_list()
        )
        return found[:limit], len(found) > limit
