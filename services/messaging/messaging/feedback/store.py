"""All database access of delivery feedback: the feedback fields of the message log, and
the SMS receipts that came before their message's outcome was recorded.

An SMS provider calls back a few hundred milliseconds after it took a message, while the
dispatcher records the provider's id with the whole hand-off's outcomes only once every
message of the hand-off was handed over: a receipt routinely comes first. It waits in
``early_receipts`` (keyed by provider and provider id, so a retried receipt is one entry)
until a worker finds its message, for ``feedback_early_receipt_seconds`` at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store, set_each

from messaging.feedback.domain import Feedback, FeedbackKind
from messaging.store import MESSAGES

EARLY_RECEIPTS = "early_receipts"

#: the fields of a message that feedback reads
_FIELDS = {
    "_id": 1,
    "status": 1,
    "contact_id": 1,
    "channel": 1,
    "purpose": 1,
    "campaign_id": 1,
    "federation_id": 1,
    "federation_path": 1,
    "address_hash": 1,
    "provider": 1,
    "provider_message_id": 1,
    "delivered_at": 1,
    "bounce_type": 1,
    "complained_at": 1,
}

INDEXES = [
    # An SMS receipt names the provider's id of the message (set when it was handed over,
    # absent on emails: a sparse index holds the SMS only). The partial index it replaces
    # ({"$type": "string"}) was never used for these lookups: no query states the type,
    # so each receipt scanned every message (100 ms at 10,000 messages on the local store,
    # where a campaign's receipts then held its sends to 3 per second).
    IndexSpec(MESSAGES, [("provider_message_id", ASCENDING)], {"sparse": True}),
    IndexSpec(
        MESSAGES,
        [("provider_message_id", ASCENDING), ("provider", ASCENDING)],
        {"partialFilterExpression": {"provider_message_id": {"$type": "string"}}},
        retired=True,
    ),
    IndexSpec(EARLY_RECEIPTS, [("received_at", ASCENDING)]),
]


def provider_ids_query(provider_message_ids: Iterable[str]) -> dict[str, Any]:
    """The messages that providers know by these ids (any provider: the caller matches
    the provider), in the shape the sparse index above serves."""
    return {"provider_message_id": {"$in": sorted(set(provider_message_ids))}}


class FeedbackStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.messages = store[MESSAGES]
        self.early = store[EARLY_RECEIPTS]

    async def by_ids(
        self, message_ids: Iterable[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(message_ids))
        if not wanted:
            return {}
        docs = self.messages.find({"_id": {"$in": wanted}}, _FIELDS, session=session)
        return {d["_id"]: d async for d in docs}

    async def by_provider_ids(
        self, keys: Iterable[tuple[str, str]], session: AsyncClientSession
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Messages by (provider, the provider's id for them)."""
        wanted = set(keys)
        if not wanted:
            return {}
        docs = self.messages.find(
            provider_ids_query({pid for _, pid in wanted}), _FIELDS, session=session
        )
        found: dict[tuple[str, str], dict[str, Any]] = {}
        async for d in docs:
            key = (str(d.get("provider")), d["provider_message_id"])
            if key in wanted:
                found[key] = d
        return found

    async def apply(
        self,
        changes: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
        session: AsyncClientSession,
    ) -> None:
        """Set fields on messages still matching their guard: (message id, guard, fields).

        The changes of distinct messages go in one statement per guard (``set_each``: a
        batch of receipts is one update, not one statement per message, the costliest part
        of a receipt on the local store). Two changes of one message (delivered, then
        bounced, in one batch) go one after the other, in order."""
        if not changes:
            return
        if len({mid for mid, _, _ in changes}) < len(changes):
            await self.messages.bulk_write(
                [UpdateOne({"_id": mid, **guard}, {"$set": dict(f)}) for mid, guard, f in changes],
                ordered=True,
                session=session,
            )
            return
        by_guard: dict[str, tuple[Mapping[str, Any], dict[str, Mapping[str, Any]]]] = {}
        for mid, guard, fields in changes:
            key = repr(sorted(guard.items()))
            by_guard.setdefault(key, (guard, {}))[1][mid] = fields
        for guard, values in by_guard.values():
            await set_each(self.messages, values, where=guard, session=session)

    # ------------------------------------------------------------ early SMS receipts

    async def keep_early(
        self, receipts: Sequence[Feedback], received_at: datetime, session: AsyncClientSession
    ) -> None:
        """Keep receipts whose message is not known by its provider id yet (a retried
        receipt is the same entry)."""
        ops = [
            UpdateOne(
                {"_id": _early_id(r)},
                {
                    "$setOnInsert": {
                        "provider": r.provider,
                        "provider_message_id": r.provider_message_id,
                        "kind": r.kind.value,
                        "at": r.at,
                        "bounce_type": r.bounce_type,
                        "reason": r.reason,
                        "received_at": received_at,
                    }
                },
                upsert=True,
            )
            for r in receipts
        ]
        if ops:
            await self.early.bulk_write(ops, ordered=False, session=session)

    async def early_receipts(
        self, limit: int, *, after: str | None = None
    ) -> list[tuple[str, Feedback]]:
        """A page of the receipts waiting for their message, by entry id: (entry id,
        receipt). Pages go on ``after`` the last entry id, so receipts that never match
        do not hide the others."""
        query: dict[str, Any] = {} if after is None else {"_id": {"$gt": after}}
        docs = await self.early.find(query).sort("_id", ASCENDING).limit(limit).to_list()
        return [
            (
                d["_id"],
                Feedback(
                    FeedbackKind(d["kind"]),
                    d["at"],
                    provider=d["provider"],
                    provider_message_id=d["provider_message_id"],
                    bounce_type=d.get("bounce_type"),
                    reason=d.get("reason") or "",
                ),
            )
            for d in docs
        ]

    async def drop_early(self, entry_ids: Sequence[str], session: AsyncClientSession) -> None:
        if entry_ids:
            await self.early.delete_many({"_id": {"$in": list(entry_ids)}}, session=session)

    async def drop_early_before(self, received_before: datetime) -> int:
        result = await self.early.delete_many({"received_at": {"$lt": received_before}})
        return result.deleted_count


def _early_id(receipt: Feedback) -> str:
    return f"{receipt.provider}:{receipt.provider_message_id}:{receipt.kind.value}"
