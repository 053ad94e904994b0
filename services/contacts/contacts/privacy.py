"""Privacy in the contacts service: the person's data for an access export (DPO only),
and erasure (erasure-requested -> the person is deleted -> contact-erased and
erasure-completed, in one transaction). The person is also every contact ever merged into
them (the merge log says which): their merge records, flagged import rows and data keys go
too."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.app import IdPath
from tribune_shared.auth import CurrentIdentity
from tribune_shared.errors import NotFound
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import ContactErasedV1
from tribune_shared.outbox import Outbox
from tribune_shared.privacy import dpo_router, erasure_completed, erasure_request
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler
from tribune_shared.vault import vault_for

from contacts.meetings.service import erase_registrations
from contacts.store import CONTACTS, IMPORT_ROWS, MERGES
from contacts.submissions.store import SIGNATURES, SUBMISSIONS

SERVICE = "contacts"

#: collections holding a person's data, with the field naming them; erasure deletes
#: the person's documents from each (add new ones here)
PERSON_COLLECTIONS: list[tuple[str, str]] = [
    (CONTACTS, "_id"),
    # import rows flagged as duplicates of the person (their cells as typed) and merges
    (IMPORT_ROWS, "contact_id"),
    (MERGES, "surviving_contact_id"),
    (MERGES, "merged_contact_id"),
    # form submissions applied to the person (their answers and proof) and their
    # signatures; the forms' counters keep counting them (a number, nobody's data)
    (SUBMISSIONS, "contact_id"),
    (SIGNATURES, "contact_id"),
]


class ContactsPrivacyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def person(self, identity_scope: dict[str, Any], contact_id: str) -> dict | None:
        return await self.store[CONTACTS].find_one(
            {"_id": contact_id, **identity_scope}, {"search": 0}
        )

    async def version(self, contact_id: str, session: AsyncClientSession) -> int | None:
        doc = await self.store[CONTACTS].find_one(
            {"_id": contact_id}, {"version": 1}, session=session
        )
        return doc.get("version") if doc else None

    async def merged_ids(self, contact_id: str, session: AsyncClientSession) -> list[str]:
        """Every contact merged into the person, directly or along chains of merges."""
        seen = {contact_id}
        found: list[str] = []
        frontier = [contact_id]
        while frontier:
            docs = self.store[MERGES].find(
                {"surviving_contact_id": {"$in": frontier}},
                {"merged_contact_id": 1},
                session=session,
            )
            frontier = [
                d["merged_contact_id"] async for d in docs if d["merged_contact_id"] not in seen
            ]
            seen.update(frontier)
            found += frontier
        return found

    async def erase(self, contact_id: str, session: AsyncClientSession) -> int:
        deleted = 0
        for collection, field in PERSON_COLLECTIONS:
            result = await self.store[collection].delete_many({field: contact_id}, session=session)
            deleted += result.deleted_count
        # meeting registrations and reminder markers (their meetings' counters follow, and
        # the places they held go to the waiting lists)
        deleted += await erase_registrations(self.store, contact_id, session)
        return deleted


def erasure_handlers(store: Store) -> dict[str, Handler]:
    data = ContactsPrivacyStore(store)
    outbox = Outbox(store)
    vault = vault_for(store)

    async def on_erasure_requested(envelope: Envelope, session: AsyncClientSession) -> None:
        """Delete the person; tell the others (contact-erased) and consent (completed).
        Their events' personal fields are sealed with a key that is destroyed already;
        the published outbox rows about them are dropped too."""
        event = erasure_request(envelope)
        version = await data.version(event.contact_id, session)
        merged = await data.merged_ids(event.contact_id, session)  # before the log goes
        for contact_id in (event.contact_id, *merged):
            await data.erase(contact_id, session)
            await outbox.forget_published(contact_id, session)
        for contact_id in merged:
            # Consent destroyed these with the person's key if it saw the merges; the merge
            # log is the source of truth, so again here (idempotent, outside the transaction).
            await vault.destroy(contact_id)
        erased = new_envelope(
            ContactErasedV1(contact_id=event.contact_id, contact_version=(version or 0) + 1),
            producer=SERVICE,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            causation=envelope,
        )
        await outbox.add(session, erased, erasure_completed(envelope, SERVICE))

    return {"erasure-requested": on_erasure_requested}


router = dpo_router("/api/v1/contacts")


@router.get("/privacy/{contact_id}")
async def person_data(
    request: Request,
    identity: CurrentIdentity,
    contact_id: IdPath,
) -> dict:
    """Everything contacts holds on the person (the access export's contact part; DPO)."""
    doc = await ContactsPrivacyStore(request.app.state.store).person(identity.scope(), contact_id)
    if doc is None:
        raise NotFound("contact not found")
    return {"contact": {"id": doc.pop("_id"), **doc}}
