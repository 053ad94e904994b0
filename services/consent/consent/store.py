"""All database access of the consent service."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events.contracts import Channel
from tribune_shared.store import IndexSpec, Store

from consent.domain import ConsentStatus, LedgerEntry

LEDGER = "consent_ledger"  # append-only
CURRENT = "consents"  # derived current state per contact x channel x purpose

INDEXES = [
    *ContactDirectory.indexes,
    IndexSpec(LEDGER, [("contact_id", ASCENDING), ("recorded_at", ASCENDING)]),
    IndexSpec(CURRENT, [("contact_id", ASCENDING)]),
    IndexSpec(CURRENT, [("federation_path", ASCENDING)]),
]


class ConsentStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def history(self, contact_id: str) -> list[LedgerEntry]:
        docs = (
            await self.store[LEDGER]
            .find({"contact_id": contact_id})
            .sort("recorded_at", ASCENDING)
            .to_list()
        )
        return [LedgerEntry.model_validate(d) for d in docs]

    async def current(
        self, contact_id: str, channel: Channel, purpose: str, session: AsyncClientSession | None
    ) -> ConsentStatus | None:
        doc = await self.store[CURRENT].find_one(
            {"_id": f"{contact_id}:{channel}:{purpose}"}, session=session
        )
        return ConsentStatus(doc["status"]) if doc else None

    async def current_all(self, contact_id: str) -> list[dict[str, Any]]:
        return await self.store[CURRENT].find({"contact_id": contact_id}).to_list()

    async def append(
        self, entry: LedgerEntry, contact: dict[str, Any], session: AsyncClientSession
    ) -> None:
        await self.store[LEDGER].insert_one(
            {**entry.model_dump(mode="python"), "federation_path": contact["federation_path"]},
            session=session,
        )
        await self.store[CURRENT].update_one(
            {"_id": f"{entry.contact_id}:{entry.channel}:{entry.purpose}"},
            {
                "$set": {
                    "contact_id": entry.contact_id,
                    "channel": entry.channel.value,
                    "purpose": entry.purpose,
                    "status": entry.status.value,
                    "updated_at": entry.recorded_at,
                    "federation_path": contact["federation_path"],
                }
            },
            upsert=True,
            session=session,
        )
