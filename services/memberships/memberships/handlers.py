"""Event handlers of the memberships service: small and idempotent."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactMergedV1
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler

from memberships.store import MembershipsStore


def contact_merge_handlers(store: Store) -> dict[str, Handler]:
    """contact-merged: remap the old id to the survivor, then the old id is a tombstone
    (no late contact event brings it back). A replay finds nothing left to remap."""
    data = MembershipsStore(store)
    directory = ContactDirectory(store)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, ContactMergedV1)
        await data.merge_contact(event.merged_contact_id, event.surviving_contact_id, session)
        await directory.forget(event.merged_contact_id, session)

    return {"contact-merged": on_merged}
