"""Event handlers of the messaging service: small and idempotent (a replayed or late
event changes nothing), so any number of worker processes may run them."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.bus import Handler
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import (
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactMergedV1,
    ContactUpdatedV1,
    SuppressionAddedV1,
)

from messaging.domain import ConsentStatus
from messaging.privacy import MessagingPrivacyStore
from messaging.service import MessagingService
from messaging.store import MessagingStore


def contact_handlers(messages: MessagingStore) -> dict[str, Handler]:
    async def on_contact(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1 | ContactUpdatedV1)
        if event.erased:  # a late or replayed event of an erased person: stays erased
            await MessagingPrivacyStore(messages.store).forget_contact(event.contact_id, session)
            return
        await messages.project_contact(
            event.contact_id,
            event.contact_version,
            email=event.contact.email,
            given_name=event.contact.given_name,
            family_name=event.contact.family_name,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            session=session,
        )

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactMergedV1)
        await messages.merge_contact(event.merged_contact_id, event.surviving_contact_id, session)

    return {
        "contact-created": on_contact,
        "contact-updated": on_contact,
        "contact-merged": on_merged,
    }


def consent_handlers(messages: MessagingStore) -> dict[str, Handler]:
    async def on_consent(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        if isinstance(event, ConsentGrantedV1):
            status, changed_at = ConsentStatus.granted, event.granted_at
        else:
            assert isinstance(event, ConsentRevokedV1)
            status, changed_at = ConsentStatus.revoked, event.revoked_at
        if await MessagingPrivacyStore(messages.store).is_erased(event.contact_id, session):
            return  # the person was erased: nothing about them is kept
        await messages.project_consent(
            event.contact_id,
            event.channel,
            event.purpose,
            status,
            changed_at,
            source=event.source,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            event_id=envelope.event_id,
            session=session,
        )

    return {"consent-granted": on_consent, "consent-revoked": on_consent}


def suppression_handlers(messages: MessagingStore) -> dict[str, Handler]:
    """suppression-added: the hash joins messaging's own list; nothing is ever sent to an
    address on it (campaigns, single messages, confirmations)."""

    async def on_suppression(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, SuppressionAddedV1)
        await messages.project_suppression(
            event.address_hash, event.kind, event.suppressed_at, session
        )

    return {"suppression-added": on_suppression}


def confirmation_handlers(service: MessagingService) -> dict[str, Handler]:
    """consent-confirmation-requested: the double opt-in email (transactional)."""
    return {"consent-confirmation-requested": service.send_confirmation}
