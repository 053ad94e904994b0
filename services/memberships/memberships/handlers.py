"""Event handlers of the memberships service: small and idempotent."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import ContactDirectory, moved_contacts
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactMergedV1
from tribune_shared.store import Store
from tribune_shared.subscriptions import Batch, Handler

from memberships.donations.store import DonationsStore
from memberships.people import People
from memberships.privacy import MembershipsPrivacyStore, new_pseudonym
from memberships.store import MembershipsStore


def contact_merge_handlers(store: Store) -> dict[str, Handler]:
    """contact-merged: remap the old id to the survivor (or to whom the survivor was merged
    into since), then the old id is a tombstone (no late contact event brings it back). A
    replay finds nothing left to remap. A merge seen after the survivor's erasure erases
    the merged contact's records the same way (the same person)."""
    data = MembershipsStore(store)
    privacy = MembershipsPrivacyStore(store)
    directory = ContactDirectory(store)
    people = People(store)
    donations = DonationsStore(store)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, ContactMergedV1)
        merged_id = event.merged_contact_id
        survivor = (await directory.survivors([event.surviving_contact_id], session))[
            event.surviving_contact_id
        ]
        # The merged id is no person any more: its identity (names, address) goes; the
        # survivor's is the one receipts print from now on.
        await people.forget(merged_id, session)
        if await directory.is_erased(survivor, session):  # erased, not merged on
            await privacy.erase(merged_id, new_pseudonym(), session)
            await directory.forget(merged_id, session)
        else:
            await donations.guard_merge(merged_id, survivor, session)
            await data.merge_contact(merged_id, survivor, session)
            await directory.forget_merged(merged_id, event.surviving_contact_id, session)

    return {"contact-merged": on_merged}


def contact_move_handlers(store: Store) -> dict[str, Batch]:
    """contact-updated moving contacts to another federation: their payments and
    memberships follow (runs after the directory's projection of the same batch)."""
    data = MembershipsStore(store)

    async def on_updated(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await data.follow_moves(moved_contacts(envelopes), session)

    return {"contact-updated": Batch(on_updated)}
