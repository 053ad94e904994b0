"""All database access of public forms: the definitions, the copy of consent texts, and
the intake's queued submissions (with their form-submitted events)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.outbox import Outbox
from tribune_shared.store import IndexSpec, Store, ancestor_paths

FORMS = "forms"
#: one document per accepted submission (status "queued" until contacts.submissions
#: applies it)
SUBMISSIONS = "form_submissions"
#: contacts' copy of consent's texts (consent-text-published), by text id
TEXTS = "consent_texts"

INDEXES = [
    # Listing a subtree's forms in id order (cursor pagination).
    IndexSpec(FORMS, [("federation_path", ASCENDING), ("_id", ASCENDING)]),
    # A form's boxes resolve a version against the federation and its ancestors.
    IndexSpec(TEXTS, [("version", ASCENDING), ("federation_path", ASCENDING)]),
]


class FormStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.forms = store[FORMS]
        self.texts = store[TEXTS]
        self.submissions = store[SUBMISSIONS]
        self.outbox = Outbox(store)

    # ------------------------------------------------------------ definitions

    async def insert(self, doc: dict[str, Any]) -> None:
        await self.forms.insert_one(doc)

    async def get(self, form_id: str, scope: dict[str, Any]) -> dict[str, Any] | None:
        return await self.forms.find_one({"_id": form_id, **scope})

    async def public(self, form_id: str) -> dict[str, Any] | None:
        """A form as the public side sees it: any federation's, archived ones never."""
        return await self.forms.find_one({"_id": form_id, "status": {"$ne": "archived"}})

    async def page(
        self,
        scope: dict[str, Any],
        *,
        limit: int,
        after: str | None,
        statuses: Sequence[str],
        kind: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = {**scope, "status": {"$in": list(statuses)}}
        if kind is not None:
            query["kind"] = kind
        if after is not None:
            query["_id"] = {"$gt": after}
        found = await self.forms.find(query).sort("_id", ASCENDING).limit(limit + 1).to_list()
        return found[:limit], len(found) > limit

    async def replace(self, doc: dict[str, Any], expected_version: int) -> bool:
        result = await self.forms.replace_one({"_id": doc["_id"], "version": expected_version}, doc)
        return result.matched_count == 1

    # ------------------------------------------------------------ consent texts (copy)

    async def texts_for(self, federation_path: str, versions: Sequence[str]) -> list[dict]:
        """The copies of these text versions defined for the federation or its ancestors
        (withdrawn ones included: the caller decides)."""
        if not versions:
            return []
        return await self.texts.find(
            {
                "version": {"$in": list(dict.fromkeys(versions))},
                "federation_path": {"$in": ancestor_paths(federation_path)},
            }
        ).to_list()

    async def project_texts(
        self, states: Sequence[dict[str, Any]], session: AsyncClientSession
    ) -> int:
        """Keep the newest state of each text (by ``order``: revision, then time), in one
        read and one bulk write; an older or repeated state changes nothing."""
        newest: dict[str, dict[str, Any]] = {}
        for state in states:
            held = newest.get(state["_id"])
            if held is None or state["order"] > held["order"]:
                newest[state["_id"]] = state
        if not newest:
            return 0
        stored = {
            d["_id"]: d.get("order")
            async for d in self.texts.find(
                {"_id": {"$in": list(newest)}}, {"order": 1}, session=session
            )
        }
        ops = [
            UpdateOne({"_id": text_id}, {"$set": state}, upsert=True)
            for text_id, state in newest.items()
            if stored.get(text_id) is None or stored[text_id] < state["order"]
        ]
        if ops:
            await self.texts.bulk_write(ops, ordered=False, session=session)
        return len(ops)

    # ------------------------------------------------------------ intake

    async def queue(self, docs: Sequence[dict[str, Any]], envelopes: Sequence[Envelope]) -> None:
        """Store a batch of accepted submissions and their form-submitted events in one
        transaction: one insert_many and one packed outbox row for the whole batch."""
        packed = await self.outbox.pack(envelopes)

        async def work(session: AsyncClientSession) -> None:
            await self.submissions.insert_many(list(docs), ordered=False, session=session)
            await self.outbox.add_packed(session, dict(packed))

        await self.store.run_transaction(work, what="forms.queue")
