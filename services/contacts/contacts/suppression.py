"""Contacts' view of the suppression list (from suppression-added: salted hashes only).

A contact created with an email or phone on it (the person objected to everything or was
erased) is kept but flagged ``suppressed``: consent refuses every grant for them and
messaging never sends to the address.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import SuppressionAddedV1
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler
from tribune_shared.suppression import email_hash, phone_hash

SUPPRESSED = "suppressed"  # _id = address hash (never the address)


class SuppressionList:
    def __init__(self, store: Store, salt: str) -> None:
        self.store = store
        self.salt = salt

    async def matches(
        self,
        emails: Iterable[str],
        phones: Iterable[str],
        session: AsyncClientSession | None = None,
    ) -> bool:
        """Whether one of these addresses is on the suppression list."""
        hashes = [h for h in (email_hash(e, self.salt) for e in emails) if h]
        hashes += [h for h in (phone_hash(p, self.salt) for p in phones) if h]
        if not hashes:
            return False
        found = await self.store[SUPPRESSED].find_one({"_id": {"$in": hashes}}, session=session)
        return found is not None


def suppression_handlers(store: Store) -> dict[str, Handler]:
    async def on_suppression(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, SuppressionAddedV1)
        await store[SUPPRESSED].update_one(
            {"_id": event.address_hash},
            {"$setOnInsert": {"kind": event.kind, "suppressed_at": event.suppressed_at}},
            upsert=True,
            session=session,
        )

    return {"suppression-added": on_suppression}
