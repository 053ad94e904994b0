"""Database access of the campaign gauges: the sending campaigns, and whether each has a
message due. Each question is one indexed read: campaigns by status, then per campaign
the first due message of the dispatchers' own queue index (never a count of the queue)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tribune_shared.store import Store

from messaging.campaigns.domain import CampaignStatus
from messaging.campaigns.store import CAMPAIGNS, CampaignStore
from messaging.domain import MessageStatus
from messaging.store import MESSAGES

FIELDS = {"_id": 1, "launched_at": 1, "last_sent_at": 1, "audit.resume": 1, "audience": 1}


class CampaignWatchStore:
    def __init__(self, store: Store) -> None:
        self.campaigns = store[CAMPAIGNS]
        self.counts = CampaignStore(store)
        self.messages = store[MESSAGES]

    async def sending(self, limit: int) -> list[dict[str, Any]]:
        """Campaigns in the sending state, oldest first, at most ``limit``."""
        query = {"status": CampaignStatus.sending.value}
        docs = await self.campaigns.find(query, FIELDS).sort("_id", 1).limit(limit).to_list()
        # counted in the campaign's statistics shards (a campaign of before them: on itself)
        last = await self.counts.last_sent([d["_id"] for d in docs])
        for d in docs:
            if (at := last.get(d["_id"])) is not None:
                d["last_sent_at"] = max(at, d.get("last_sent_at") or at)
        return docs

    async def with_due_messages(self, campaign_ids: Sequence[str], now: datetime) -> set[str]:
        """Which of these campaigns have a queued message due now (as a dispatcher would
        claim it: not deferred past ``now``)."""

        async def due(campaign_id: str) -> bool:
            # the undeferred, then the deferred now due: each an equality prefix of the
            # queue's index (campaign_id, status, not_before), as the claim asks; one query
            # with $or scans every message of every campaign on the local store
            for when in (None, {"$lte": now}):
                queued = {
                    "campaign_id": campaign_id,
                    "status": MessageStatus.queued.value,
                    "not_before": when,
                }
                if await self.messages.find_one(queued, {"_id": 1}) is not None:
                    return True
            return False

        answers = await asyncio.gather(*(due(cid) for cid in campaign_ids))
        return {cid for cid, yes in zip(campaign_ids, answers, strict=True) if yes}
