"""Event handlers of the consent service: small and idempotent (a replayed or late event
changes nothing)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import ERASED_VERSION, ContactDirectory
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import (
    Channel,
    ContactCreatedV1,
    ContactMergedV1,
    ContactState,
    ContactUpdatedV1,
    ErasureRequestedV1,
    MessageBouncedV1,
    MessageComplainedV1,
)
from tribune_shared.store import Projected
from tribune_shared.subscriptions import Batch, Handler
from tribune_shared.suppression import email_hash, phone_hash

from consent.privacy_service import PrivacyService
from consent.service import ConsentService
from consent.store import ConsentStore


def address_hashes(state: ContactState, salt: str) -> tuple[list[str], list[str]]:
    """Salted hashes of every email and phone of a contact (never the addresses)."""
    emails = [state.email, *(e.address for e in getattr(state, "emails", []) or [])]
    phones = [state.phone, *(p.number for p in getattr(state, "phones", []) or [])]
    email_hashes = [h for h in (email_hash(e, salt) for e in emails) if h]
    phone_hashes = [h for h in (phone_hash(p, salt) for p in phones) if h]
    return list(dict.fromkeys(email_hashes)), list(dict.fromkeys(phone_hashes))


def hashes_state(envelope: Envelope, salt: str) -> Projected:
    """Consent's projection of one contact event: the salted hashes of its addresses (a
    tombstone for an erased person's event, so a replay brings nothing back)."""
    event = decode_as(envelope, ContactCreatedV1, ContactUpdatedV1)
    if event.erased:
        return Projected(
            event.contact_id,
            ERASED_VERSION,
            {"erased": True, "email_hashes": [], "phone_hashes": []},
            replace=True,
        )
    emails, phones = address_hashes(event.contact, salt)
    return Projected(
        event.contact_id,
        event.contact_version,
        {
            "email_hashes": emails,
            "phone_hashes": phones,
            "federation_id": envelope.federation_id,
            "federation_path": envelope.federation_path,
        },
    )


def contact_handlers(
    store: ConsentStore, directory: ContactDirectory, salt: str
) -> dict[str, Batch]:
    """The kernel's contact directory (federation of each contact) plus consent's own
    projection of each contact's address hashes (STOP lookups, suppression checks), a
    whole batch at a time."""

    async def on_contacts(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await directory.on_contact_events(envelopes, session)
        await store.project_hashes_many([hashes_state(e, salt) for e in envelopes], session)

    batch = Batch(on_contacts)
    return {"contact-created": batch, "contact-updated": batch}


def contact_merge_handlers(service: ConsentService, privacy: PrivacyService) -> dict[str, Handler]:
    """contact-merged: the survivor takes over the merged contact's consents. A merge seen
    after its survivor was erased erases the merged contact too (same person)."""

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, ContactMergedV1)
        merged_id = event.merged_contact_id
        outcome = await service.merge_contacts(
            session, merged_id, event.surviving_contact_id, event.merged_by
        )
        if outcome.survivor_erased:
            contact = await service.contacts.get(merged_id, session)
            if contact is not None:  # not forgotten yet: its addresses are the person's
                await service.suppress_erased(
                    session,
                    merged_id,
                    federation_id=contact.get("federation_id") or "",
                    federation_path=contact["federation_path"],
                    causation=envelope,
                )
            await privacy.erase_merged(session, merged_id, outcome.survivor, outcome.keys_destroyed)

    return {"contact-merged": on_merged}


def suppression_handlers(service: ConsentService) -> dict[str, Handler]:
    """An erased person's emails and phones (those of contacts merged into them too) join
    the suppression list (as salted hashes) so they are never re-imported and messaged;
    then consent forgets their hashes. Runs
    before the privacy handlers of the same event (consent.privacy_handlers)."""

    async def on_erasure_requested(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, ErasureRequestedV1)
        await service.suppress_erased(
            session,
            event.contact_id,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            causation=envelope,
        )

    return {"erasure-requested": on_erasure_requested}


def feedback_handlers(service: ConsentService) -> dict[str, Handler]:
    """Messaging's delivery feedback: a hard bounce puts the address that bounced on the
    suppression list (a soft one changes nothing: the provider retries by itself); a
    complaint (the person reported the message as spam) is their objection to the
    message's purpose."""

    async def on_bounced(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, MessageBouncedV1)
        if event.bounce_type != "hard" or not event.address_hash:
            return
        if event.channel not in (Channel.email, Channel.sms):
            return
        await service.hard_bounce(
            session,
            event.contact_id,
            event.address_hash,
            "email" if event.channel is Channel.email else "phone",
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            causation=envelope,
        )

    async def on_complained(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, MessageComplainedV1)
        await service.complaint(
            session, event.contact_id, event.purpose, message_id=event.message_id
        )

    return {"message-bounced": on_bounced, "message-complained": on_complained}
