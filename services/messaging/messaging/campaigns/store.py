"""All database access of campaigns: the campaigns, and their messages in the message log.

A campaign's message is one document of messaging's message log (``messages``), from its
intent (``queued``) to its outcome, so the person's history, the DPO's export and erasure
see campaign messages like any other."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from tribune_shared.store import ID_RANGES, IndexSpec, Store, insert_absent, set_each

from messaging.campaigns.domain import (
    CampaignStatus,
    ClaimCursor,
    QueuePosition,
    UnsentSweep,
    add_stats,
)
from messaging.domain import MessageStatus
from messaging.store import MESSAGES

CAMPAIGNS = "campaigns"
#: before any deferral (a range of dates that leaves out the messages not deferred)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: a campaign's live statistics, spread over shards: its intake (one transaction per
#: partition, several at once), its dispatchers, the feedback and tracking webhooks all
#: count at the same time, and on one counter document every transaction but the first
#: to write it loses a write conflict and runs again whole (under a send, the intake's
#: transactions of 100 took 1-17 s; with the shards and intents inserted at once,
#: 0.14-0.84 s and none retried: bench/campaign_email.py, 2026-12-03).
#: Each count goes to a random shard; a read adds them up (``_with_stats``). A shard holds
#: counts only, and is reached through its campaign (scoped there).
CAMPAIGN_STATS = "campaign_stats"
STATS_SHARDS = 16

INDEXES = [
    IndexSpec(CAMPAIGNS, [("federation_path", ASCENDING), ("_id", DESCENDING)]),
    IndexSpec(CAMPAIGNS, [("status", ASCENDING), ("scheduled_at", ASCENDING)]),
    IndexSpec(CAMPAIGN_STATS, [("campaign_id", ASCENDING)]),
    # the cancelled campaigns whose messages are still being cancelled (asked every tick)
    IndexSpec(CAMPAIGNS, [("cancelling", ASCENDING)]),
    # the dispatchers' queue: a campaign's queued messages, those due first, read in windows
    # of ids (domain.ClaimCursor)
    IndexSpec(
        MESSAGES,
        [("campaign_id", ASCENDING), ("status", ASCENDING), ("not_before", 1), ("_id", 1)],
    ),
    IndexSpec(  # (the queue's index before the windows)
        MESSAGES,
        [("campaign_id", ASCENDING), ("status", ASCENDING), ("not_before", 1)],
        retired=True,
    ),
    # stale claims of a killed worker
    IndexSpec(MESSAGES, [("status", ASCENDING), ("claimed_at", ASCENDING)]),
    # a person's recent messages, across federations (frequency caps)
    IndexSpec(MESSAGES, [("address_hash", ASCENDING), ("sent_at", DESCENDING)]),
]


#: what a dispatcher reads of a claimed message (not the whole intent)
CLAIMED_FIELDS = {
    "campaign_id": 1,
    "contact_id": 1,
    "channel": 1,
    "purpose": 1,
    "variant": 1,
    "federation_id": 1,
    "federation_path": 1,
}


async def read_queue(
    messages: AsyncCollection[Any],
    queued: Mapping[str, Any],
    cursor: ClaimCursor,
    limit: int,
    projection: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], ClaimCursor]:
    """Up to ``limit`` messages matching ``queued`` (an equality prefix of the queue's
    index), read in windows of ids from ``cursor`` (domain.ClaimCursor) for one turn of the
    id space at most, each once; and where the next read goes. ``messages``: the messages
    collection (also the bench's scratch one: its durable floor claims the same way)."""
    found: dict[str, dict[str, Any]] = {}  # (a wide window may reach the turn's start)
    covered = 0  # id ranges read through (a whole turn: nothing more is queued)
    while len(found) < limit and covered < ID_RANGES:
        wanted = limit - len(found)
        page = (
            await messages.find({**queued, "_id": cursor.ids()}, projection)
            .sort("_id", ASCENDING)
            .limit(wanted)
            .to_list()
        )
        for doc in page:
            found.setdefault(doc["_id"], doc)
        later = cursor.after([d["_id"] for d in page], wanted)
        if not later.strict:
            covered += cursor.span
        cursor = later
    return list(found.values()), cursor


class CampaignStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.campaigns = store[CAMPAIGNS]
        self.stats = store[CAMPAIGN_STATS]
        self.messages = store[MESSAGES]

    # ------------------------------------------------------------ campaigns

    async def insert(self, doc: dict[str, Any]) -> None:
        await self.campaigns.insert_one(doc)

    async def _with_stats(
        self, docs: list[dict[str, Any]], session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        """The campaigns with their statistics (``stats``: every shard added to what the
        campaign document itself counted, as it did before the shards) and the last time
        any of their messages was handed over (``last_sent_at``)."""
        if not docs:
            return docs
        by_id = {d["_id"]: d for d in docs}
        for d in docs:
            d["stats"] = add_stats({}, d.get("stats") or {})
        async for shard in self.stats.find({"campaign_id": {"$in": list(by_id)}}, session=session):
            doc = by_id[shard["campaign_id"]]
            add_stats(doc["stats"], shard.get("stats") or {})
            if (at := shard.get("last_sent_at")) is not None:
                held = doc.get("last_sent_at")
                doc["last_sent_at"] = at if held is None or at > held else held
        return docs

    async def _one(
        self, doc: dict[str, Any] | None, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return None if doc is None else (await self._with_stats([doc], session))[0]

    async def get(
        self, scope: Mapping[str, Any], campaign_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        doc = await self.campaigns.find_one({"_id": campaign_id, **scope}, session=session)
        return await self._one(doc, session)

    async def by_ids(
        self,
        campaign_ids: Sequence[str],
        session: AsyncClientSession | None = None,
        *,
        with_stats: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """Campaigns by id, whatever their federation (workers act for no user)."""
        docs = await self.campaigns.find(
            {"_id": {"$in": list(campaign_ids)}}, session=session
        ).to_list()
        if with_stats:
            docs = await self._with_stats(docs, session)
        return {d["_id"]: d for d in docs}

    async def page(
        self, scope: Mapping[str, Any], *, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first (ids are sortable by creation)."""
        query: dict[str, Any] = dict(scope)
        if before is not None:
            query["_id"] = {"$lt": before}
        docs = await self.campaigns.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        return await self._with_stats(docs[:limit]), len(docs) > limit

    async def update(
        self,
        campaign_id: str,
        *,
        expected: Iterable[CampaignStatus],
        fields: Mapping[str, Any],
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        """Change a campaign still in one of the ``expected`` states (a concurrent change
        wins otherwise): the campaign after the change, or None."""
        doc = await self.campaigns.find_one_and_update(
            {"_id": campaign_id, "status": {"$in": [s.value for s in expected]}},
            {"$set": dict(fields), "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return await self._one(doc, session)

    async def count_stats(
        self,
        counts: Mapping[str, Mapping[str, int]],
        session: AsyncClientSession,
        *,
        last_sent: Mapping[str, datetime] | None = None,
    ) -> None:
        """Add to campaigns' live statistics ({campaign_id: {"sent": 3, "refused.x": 1}}),
        in one of their shards (CAMPAIGN_STATS); ``last_sent``: when each campaign last
        handed a message over (``last_sent_at``, which the stalled-campaign gauge reads:
        messaging.monitoring)."""
        last_sent = last_sent or {}
        shard = random.randrange(STATS_SHARDS)
        ops = [
            UpdateOne(
                {"_id": f"{cid}:{shard}"},
                {
                    "$inc": {f"stats.{k}": n for k, n in fields.items() if n},
                    "$setOnInsert": {"campaign_id": cid},
                    **({"$max": {"last_sent_at": last_sent[cid]}} if cid in last_sent else {}),
                },
                upsert=True,
            )
            for cid, fields in counts.items()
            if any(fields.values())
        ]
        if ops:
            await self.stats.bulk_write(ops, ordered=False, session=session)

    async def audience_resolved(
        self, campaign_id: str, recipients: int, error: str | None, session: AsyncClientSession
    ) -> dict[str, Any] | None:
        fields: dict[str, Any] = {"audience.resolved": True, "audience.recipients": recipients}
        if error:
            fields["audience.error"] = error
        doc = await self.campaigns.find_one_and_update(
            {"_id": campaign_id},
            {"$set": fields},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return await self._one(doc, session)

    async def in_status(self, statuses: Iterable[CampaignStatus]) -> list[dict[str, Any]]:
        docs = await self.campaigns.find({"status": {"$in": [s.value for s in statuses]}}).to_list()
        return await self._with_stats(docs)

    async def last_sent(self, campaign_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of these campaigns last handed a message over (if it did)."""
        found: dict[str, datetime] = {}
        shards = self.stats.find(
            {"campaign_id": {"$in": list(campaign_ids)}, "last_sent_at": {"$ne": None}},
            {"campaign_id": 1, "last_sent_at": 1},
        )
        async for shard in shards:
            cid, at = shard["campaign_id"], shard["last_sent_at"]
            found[cid] = max(at, found.get(cid, at))
        return found

    async def due(self, now: datetime) -> list[dict[str, Any]]:
        """Scheduled campaigns whose time has come."""
        return await self.campaigns.find(
            {"status": CampaignStatus.scheduled.value, "scheduled_at": {"$lte": now}}
        ).to_list()

    # ------------------------------------------------------------ messages

    async def queue(
        self, intents: Sequence[dict[str, Any]], session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Record messages' intents (status queued); an intent already recorded (a
        redelivered recipient event) is left alone. Returns the intents recorded now."""
        if not intents:
            return []
        # one read and one insert for the batch, not an upsert (a statement) per intent
        return [intents[i] for i in await insert_absent(self.messages, intents, session=session)]

    async def claim(
        self,
        campaign_ids: Sequence[str],
        *,
        now: datetime,
        limit: int,
        token: str,
        positions: dict[str, QueuePosition] | None = None,
    ) -> list[dict[str, Any]]:
        """Take up to ``limit`` due queued messages of these campaigns: marked ``sending``
        with this claim's token before any provider sees them (the intent is on record).
        Two workers never take the same message: the update only matches queued ones.
        Each message comes with the fields a dispatcher sends it with (CLAIMED_FIELDS).
        ``positions``: where each campaign's queue is read next (``QueuePosition``, moved
        on here; a dispatcher keeps its own)."""
        if not campaign_ids or limit <= 0:
            return []
        positions = {} if positions is None else positions
        # per campaign, the messages not deferred, then those deferred to a time that has
        # come, each read in windows of the queue's index (campaign_id, status, not_before,
        # _id): an equality prefix of it and a window of ids (a range of not_before, or a
        # query with $in or $or, is read whole on the local store)
        found: list[dict[str, Any]] = []
        for campaign_id in campaign_ids:
            position = positions.setdefault(campaign_id, QueuePosition())
            queued = {"campaign_id": campaign_id, "status": MessageStatus.queued.value}
            page, position.now = await read_queue(
                self.messages,
                {**queued, "not_before": None},
                position.now,
                limit - len(found),
                CLAIMED_FIELDS,
            )
            found += page
            if len(found) < limit:
                if not position.come(now):
                    # (read whole, so only when no time followed has come)
                    position.learn(
                        await self.messages.distinct(
                            "not_before", {**queued, "not_before": {"$lte": now}}
                        )
                    )
                found += await self._deferred(
                    queued, position, position.come(now), limit - len(found), CLAIMED_FIELDS
                )
        if not found:
            return []
        ids = [d["_id"] for d in found]
        result = await self.messages.update_many(
            {"_id": {"$in": ids}, "status": MessageStatus.queued.value},
            {"$set": {"status": MessageStatus.sending.value, "claim": token, "claimed_at": now}},
        )
        for d in found:  # the claim each message was taken under (hand-offs check it)
            d["claim"] = token
        if result.modified_count == len(ids):  # none taken by another worker in between
            return found
        # another dispatcher took some of them between the read and the update: only those
        # with this claim's token are ours (read by _id: the token has no index)
        mine = {
            d["_id"]
            async for d in self.messages.find({"_id": {"$in": ids}, "claim": token}, {"_id": 1})
        }
        return [d for d in found if d["_id"] in mine]

    async def _deferred(
        self,
        queued: Mapping[str, Any],
        position: QueuePosition,
        times: Sequence[datetime],
        limit: int,
        projection: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` of the ``queued`` messages deferred to ``times`` (followed by
        ``position``), the earliest time first, each read in windows of ids on an equality of
        its time; a time whose whole turn finds nothing more is forgotten."""
        found: list[dict[str, Any]] = []
        for at in times:
            if len(found) >= limit:
                break
            wanted = limit - len(found)
            page, cursor = await read_queue(
                self.messages, {**queued, "not_before": at}, position.due[at], wanted, projection
            )
            found += page
            if len(page) < wanted:  # a whole turn: none left deferred to that time
                del position.due[at]
            else:
                position.due[at] = cursor
        return found

    # ------------------------------------------------------------ cancelled campaigns

    async def cancelling(self) -> list[str]:
        """The cancelled campaigns whose unsent messages are still being cancelled."""
        return [d["_id"] async for d in self.campaigns.find({"cancelling": True}, {"_id": 1})]

    async def unsent(
        self, campaign_id: str, sweep: UnsentSweep, limit: int
    ) -> dict[MessageStatus, list[str]]:
        """Up to ``limit`` of a campaign's messages not handed over (held for an A/B winner,
        queued, deferred or not) by status, read in windows of the queue's index from where
        ``sweep`` got to (moved on here): nothing when none is left."""
        base = {"campaign_id": campaign_id}
        held = {**base, "status": MessageStatus.held.value, "not_before": None}
        queued = {**base, "status": MessageStatus.queued.value}
        found, sweep.held = await read_queue(self.messages, held, sweep.held, limit, {"_id": 1})
        out = {MessageStatus.held: [d["_id"] for d in found]}
        if len(found) < limit:
            page, sweep.queued.now = await read_queue(
                self.messages,
                {**queued, "not_before": None},
                sweep.queued.now,
                limit - len(found),
                {"_id": 1},
            )
            found += page
            out[MessageStatus.queued] = [d["_id"] for d in page]
        if len(found) < limit:
            if not sweep.queued.due:  # (read whole: once per sweep, or when spent)
                sweep.queued.learn(
                    await self.messages.distinct(
                        "not_before", {**queued, "not_before": {"$gt": _EPOCH}}
                    )
                )
            times = sorted(sweep.queued.due)
            page = await self._deferred(queued, sweep.queued, times, limit - len(found), {"_id": 1})
            out[MessageStatus.queued] = out.get(MessageStatus.queued, []) + [d["_id"] for d in page]
        return {status: ids for status, ids in out.items() if ids}

    async def cancel_messages(
        self, ids: Mapping[MessageStatus, Sequence[str]], at: datetime, session: AsyncClientSession
    ) -> dict[str, int]:
        """Cancel these messages if they are still in the status they were read in (another
        worker's sweep may have been first): how many of each status."""
        cancelled: dict[str, int] = {}
        for status, some in ids.items():
            result = await self.messages.update_many(
                {"_id": {"$in": list(some)}, "status": status.value},
                {"$set": {"status": MessageStatus.cancelled.value, "cancelled_at": at}},
                session=session,
            )
            cancelled[status.value] = result.modified_count
        return cancelled

    async def release_stale(self, claimed_before: datetime, keep: Sequence[str] = ()) -> int:
        """Messages claimed by a worker that died before recording their outcome go back
        to the queue (they may have been handed over already: the in-flight window);
        those under the claims in ``keep`` (the sweeping worker's own) stay."""
        query: dict[str, Any] = {
            "status": MessageStatus.sending.value,
            "claimed_at": {"$lt": claimed_before},
        }
        if keep:
            query["claim"] = {"$nin": list(keep)}
        result = await self.messages.update_many(
            query, {"$set": {"status": MessageStatus.queued.value, "claim": None, "resent": True}}
        )
        return result.modified_count

    async def still_claimed(self, ids: Sequence[str], token: str) -> set[str]:
        """Which of these messages are still being sent under this claim: one whose claim
        outlived campaign_claim_timeout_seconds may have been put back in the queue (and
        claimed again) by any worker's sweep."""
        query = {"_id": {"$in": list(ids)}, "claim": token, "status": MessageStatus.sending.value}
        return {d["_id"] async for d in self.messages.find(query, {"_id": 1})}

    async def record_outcomes(
        self,
        outcomes: Sequence[tuple[str, Mapping[str, Any]]],
        session: AsyncClientSession,
        claim: str | None = None,
    ) -> int:
        """Set each claimed message's outcome (its new status and fields), in a few
        statements for the whole hand-off (``set_each``), while it is still being sent
        under ``claim``, or was put back in the queue by a sweep and not claimed again
        (what happened to it is known here: recording it keeps it from going twice).
        Returns how many matched."""
        if not outcomes:
            return 0
        where: dict[str, Any] = {"status": MessageStatus.sending.value}
        if claim is not None:
            where = {
                "status": {"$in": [MessageStatus.sending.value, MessageStatus.queued.value]},
                "claim": {"$in": [claim, None]},
            }
        return await set_each(self.messages, dict(outcomes), where=where, session=session)

    async def release_held(
        self, campaign_id: str, variant: str, session: AsyncClientSession
    ) -> int:
        """An A/B test is decided: the rest of the audience gets the winning variant."""
        result = await self.messages.update_many(
            {"campaign_id": campaign_id, "status": MessageStatus.held.value},
            {"$set": {"status": MessageStatus.queued.value, "variant": variant}},
            session=session,
        )
        return result.modified_count

    async def unfinished(self, campaign_id: str) -> int:
        """Messages of the campaign still queued or being sent."""
        return await self.messages.count_documents(
            {
                "campaign_id": campaign_id,
                "status": {
                    "$in": [
                        MessageStatus.queued.value,
                        MessageStatus.sending.value,
                        MessageStatus.held.value,
                    ]
                },
            }
        )

    async def sent_since(
        self, address_hashes: Sequence[str], since: datetime
    ) -> dict[str, list[tuple[str, datetime, str]]]:
        """The marketing messages sent to each address since ``since``, whichever
        federation's contact it was (the frequency cap is per person): (message id, when,
        channel)."""
        docs = self.messages.find(
            {
                "address_hash": {"$in": list(address_hashes)},
                "status": MessageStatus.sent.value,
                "transactional": {"$ne": True},
                "sent_at": {"$gte": since},
            },
            {"address_hash": 1, "sent_at": 1, "channel": 1},
        )
        out: dict[str, list[tuple[str, datetime, str]]] = {}
        async for d in docs:
            out.setdefault(d["address_hash"], []).append((d["_id"], d["sent_at"], d["channel"]))
        return out

    async def asked_for_consent(self, contact_ids: Sequence[str], purpose: str) -> set[str]:
        """The contacts already sent the consent request (the rented-file rule)."""
        docs = self.messages.find(
            {
                "contact_id": {"$in": list(contact_ids)},
                "purpose": purpose,
                "status": MessageStatus.sent.value,
            },
            {"contact_id": 1},
        )
        return {d["contact_id"] async for d in docs}
