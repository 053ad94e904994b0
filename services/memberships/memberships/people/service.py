"""The people projection's one use: who these contacts are (receipts, legal lists)."""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import Store

from memberships.people.domain import PersonIdentity, identity_from_doc
from memberships.people.store import PeopleStore


class People:
    def __init__(self, store: Store) -> None:
        self.repo = PeopleStore(store)

    async def identities(
        self, contact_ids: Iterable[str], session: AsyncClientSession | None = None
    ) -> dict[str, PersonIdentity]:
        """Contact id -> identity, one read for all; unknown and erased ids are absent."""
        return {d["_id"]: identity_from_doc(d) for d in await self.repo.find(contact_ids, session)}

    async def forget(self, contact_id: str, session: AsyncClientSession | None = None) -> None:
        await self.repo.forget(contact_id, session)
