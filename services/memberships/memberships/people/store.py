"""All database access of the people projection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import ERASED_VERSION
from tribune_shared.store import IndexSpec, Projected, Store, upsert_many_if_newer

PEOPLE = "people"  # contact id -> name and postal address (personal data: erasure forgets)

#: looked up by _id only
INDEXES: list[IndexSpec] = []


class PeopleStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.collection = store[PEOPLE]

    async def project(self, states: Sequence[Projected], session: AsyncClientSession) -> None:
        """One read and one bulk write for a batch; only newer versions apply."""
        await upsert_many_if_newer(self.collection, states, session=session)

    async def find(
        self, contact_ids: Iterable[str], session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys(contact_ids))
        if not ids:
            return []
        return await self.collection.find(
            {"_id": {"$in": ids}, "erased": {"$ne": True}}, session=session
        ).to_list()

    async def forget(self, contact_id: str, session: AsyncClientSession | None = None) -> None:
        """Erasure: a tombstone no contact event is newer than (a replay brings nothing
        back)."""
        await self.collection.replace_one(
            {"_id": contact_id},
            {"erased": True, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )
