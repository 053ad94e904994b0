"""Each service's own projection of which federation every contact belongs to (from
contact-created / contact-updated), so it can scope its data without asking contacts."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession

from tribune_shared.auth import Identity
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1
from tribune_shared.store import IndexSpec, Projected, Store, upsert_many_if_newer
from tribune_shared.subscriptions import Batch

CONTACT_DIRECTORY = "contacts"
#: the version of an erased contact's tombstone: no contact event is ever newer
ERASED_VERSION = 2**62


def tombstone(contact_id: str) -> Projected:
    """An erased contact: its id only, at a version no contact event ever reaches."""
    return Projected(contact_id, ERASED_VERSION, {"erased": True}, replace=True)


def placement(envelope: Envelope) -> Projected:
    """Where a contact event puts its contact (a tombstone for an erased person's event:
    a replay never brings them back)."""
    event = decode_as(envelope, ContactCreatedV1, ContactUpdatedV1)
    if event.erased:
        return tombstone(event.contact_id)
    return Projected(
        event.contact_id,
        event.contact_version,
        {"federation_id": envelope.federation_id, "federation_path": envelope.federation_path},
    )


class ContactDirectory:
    indexes = (IndexSpec(CONTACT_DIRECTORY, [("federation_path", ASCENDING)]),)

    def __init__(self, store: Store) -> None:
        self.store = store
        self.collection = store[CONTACT_DIRECTORY]

    async def on_contact_events(
        self, envelopes: list[Envelope], session: AsyncClientSession
    ) -> None:
        """Only newer contact versions apply (contact-updated may overtake contact-created);
        a batch costs one read and one bulk write."""
        await upsert_many_if_newer(
            self.collection, [placement(e) for e in envelopes], session=session
        )

    async def on_contact_event(self, envelope: Envelope, session: AsyncClientSession) -> None:
        await self.on_contact_events([envelope], session)

    async def forget(self, contact_id: str, session: AsyncClientSession | None = None) -> None:
        """Erasure: the contact becomes a tombstone (its id only), invisible to reads, that
        no late or replayed contact event can bring back."""
        await self.collection.replace_one(
            {"_id": contact_id},
            {"erased": True, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )  # unconditional, unlike tombstone(): erasure wins over any stored version

    async def is_erased(self, contact_id: str, session: AsyncClientSession | None = None) -> bool:
        doc = await self.collection.find_one({"_id": contact_id}, {"erased": 1}, session=session)
        return bool(doc and doc.get("erased"))

    def handlers(self) -> dict[str, Batch]:
        batch = Batch(self.on_contact_events)
        return {"contact-created": batch, "contact-updated": batch}

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
