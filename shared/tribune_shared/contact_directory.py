"""Each service's own projection of which federation every contact belongs to (from
contact-created / contact-updated), so it can scope its data without asking contacts."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession

from tribune_shared.auth import Identity
from tribune_shared.bus import Handler
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1
from tribune_shared.store import IndexSpec, Store, upsert_if_newer

CONTACT_DIRECTORY = "contacts"
#: the version of an erased contact's tombstone: no contact event is ever newer
ERASED_VERSION = 2**62


class ContactDirectory:
    indexes = (IndexSpec(CONTACT_DIRECTORY, [("federation_path", ASCENDING)]),)

    def __init__(self, store: Store) -> None:
        self.store = store
        self.collection = store[CONTACT_DIRECTORY]

    async def on_contact_event(self, envelope: Envelope, session: AsyncClientSession) -> None:
        """Only newer contact versions apply: contact-updated may overtake contact-created."""
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1 | ContactUpdatedV1)
        if event.erased:  # a replayed event of an erased person: they stay erased
            await self.forget(event.contact_id, session)
            return
        await upsert_if_newer(
            self.collection,
            event.contact_id,
            event.contact_version,
            {"federation_id": envelope.federation_id, "federation_path": envelope.federation_path},
            session=session,
        )

    async def forget(self, contact_id: str, session: AsyncClientSession | None = None) -> None:
        """Erasure: the contact becomes a tombstone (its id only), invisible to reads, that
        no late or replayed contact event can bring back."""
        await self.collection.replace_one(
            {"_id": contact_id},
            {"erased": True, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )

    async def is_erased(self, contact_id: str, session: AsyncClientSession | None = None) -> bool:
        doc = await self.collection.find_one({"_id": contact_id}, {"erased": 1}, session=session)
        return bool(doc and doc.get("erased"))

    def handlers(self) -> dict[str, Handler]:
        return {"contact-created": self.on_contact_event, "contact-updated": self.on_contact_event}

    async def visible(self, identity: Identity, contact_id: str) -> dict[str, Any] | None:
        """The contact if it is in the caller's subtree (else None: answer 404)."""
        return await self.collection.find_one({"_id": contact_id, **identity.scope()})

    async def get(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """Any contact, for callers that are not users (provider webhooks); not an erased one."""
        return await self.collection.find_one(
            {"_id": contact_id, "erased": {"$ne": True}}, session=session
        )
