"""Event handlers of the consent service: small and idempotent (a replayed or late event
changes nothing)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.bus import Handler
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import (
    ContactCreatedV1,
    ContactMergedV1,
    ContactState,
    ContactUpdatedV1,
    ErasureRequestedV1,
)
from tribune_shared.suppression import email_hash, phone_hash

from consent.service import ConsentService
from consent.store import ConsentStore


def address_hashes(state: ContactState, salt: str) -> tuple[list[str], list[str]]:
    """Salted hashes of every email and phone of a contact (never the addresses)."""
    emails = [state.email, *(e.address for e in getattr(state, "emails", []) or [])]
    phones = [state.phone, *(p.number for p in getattr(state, "phones", []) or [])]
    email_hashes = [h for h in (email_hash(e, salt) for e in emails) if h]
    phone_hashes = [h for h in (phone_hash(p, salt) for p in phones) if h]
    return list(dict.fromkeys(email_hashes)), list(dict.fromkeys(phone_hashes))


def contact_handlers(
    store: ConsentStore, directory: ContactDirectory, salt: str
) -> dict[str, Handler]:
    """The kernel's contact directory (federation of each contact) plus consent's own
    projection of each contact's address hashes (STOP lookups, suppression checks)."""

    async def on_contact(envelope: Envelope, session: AsyncClientSession) -> None:
        await directory.on_contact_event(envelope, session)
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1 | ContactUpdatedV1)
        if getattr(event, "erased", False):  # a replayed event of an erased person
            await store.forget_hashes(event.contact_id, session)
            return
        emails, phones = address_hashes(event.contact, salt)
        await store.project_hashes(
            event.contact_id,
            event.contact_version,
            email_hashes=emails,
            phone_hashes=phones,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            session=session,
        )

    return {"contact-created": on_contact, "contact-updated": on_contact}


def contact_merge_handlers(service: ConsentService) -> dict[str, Handler]:
    """contact-merged: the survivor takes over the merged contact's consents."""

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactMergedV1)
        await service.merge_contacts(
            session, event.merged_contact_id, event.surviving_contact_id, event.merged_by
        )

    return {"contact-merged": on_merged}


def suppression_handlers(service: ConsentService) -> dict[str, Handler]:
    """An erased person's emails and phones join the suppression list (as salted hashes)
    so they are never re-imported and messaged; then consent forgets their hashes. Runs
    before the privacy handlers of the same event (consent.privacy_handlers)."""

    async def on_erasure_requested(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ErasureRequestedV1)
        await service.suppress_contact(
            session,
            event.contact_id,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            reason="erasure",
            causation=envelope,
        )
        await service.consents.forget_hashes(event.contact_id, session)

    return {"erasure-requested": on_erasure_requested}
