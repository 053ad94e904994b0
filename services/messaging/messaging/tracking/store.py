"""All database access of open and click tracking: the markers of first opens and clicks,
and the per-person marks on the message log. The campaigns' counters are added through
``CampaignStore.count_stats`` and the consents read through ``MessagingStore``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

from messaging.store import MESSAGES

#: markers of the messages opened / clicked once: ``_id`` (a keyed hash of the kind and
#: the message id) and ``expires_at``; no contact, no time of the hit
TRACKING_SEEN = "tracking_seen"

INDEXES = [IndexSpec(TRACKING_SEEN, [("expires_at", ASCENDING)], expire_after_seconds=0)]

#: what the flush needs of a message: its A/B variant, and to record it per person and
#: publish its event
_MESSAGE_FIELDS = {
    "contact_id": 1,
    "channel": 1,
    "campaign_id": 1,
    "federation_id": 1,
    "federation_path": 1,
    "variant": 1,  # an A/B subject test's
}


class TrackingStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen = store[TRACKING_SEEN]
        self.messages = store[MESSAGES]

    async def first_seen(
        self, markers: Sequence[str], expires_at: datetime, session: AsyncClientSession
    ) -> set[str]:
        """Remember these markers; the ones not remembered before (one bulk write)."""
        if not markers:
            return set()
        result = await self.seen.bulk_write(
            [
                UpdateOne({"_id": m}, {"$setOnInsert": {"expires_at": expires_at}}, upsert=True)
                for m in markers
            ],
            ordered=False,
            session=session,
        )
        return {markers[index] for index in result.upserted_ids}

    async def messages_by_id(self, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The message log's entries among these ids (an erased person's are gone)."""
        docs = self.messages.find({"_id": {"$in": list(message_ids)}}, _MESSAGE_FIELDS)
        return {d["_id"]: d async for d in docs}

    async def mark_messages(
        self, marks: Mapping[str, Mapping[str, datetime]], session: AsyncClientSession
    ) -> None:
        """Per-person marks on messages (``{message_id: {"opened_at": t}}``): the first
        time is kept whatever order the hits are written in."""
        if marks:
            await self.messages.bulk_write(
                [UpdateOne({"_id": mid}, {"$min": dict(fields)}) for mid, fields in marks.items()],
                ordered=False,
                session=session,
            )
