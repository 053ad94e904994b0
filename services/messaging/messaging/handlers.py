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
    ContactUpdatedV1,
)

from messaging.domain import ConsentStatus
from messaging.store import MessagingStore


def contact_handlers(messages: MessagingStore) -> dict[str, Handler]:
    async def on_contact(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1 | ContactUpdatedV1)
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

    return {"contact-created": on_contact, "contact-updated": on_contact}


def consent_handlers(messages: MessagingStore) -> dict[str, Handler]:
    async def on_consent(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        if isinstance(event, ConsentGrantedV1):
            status, changed_at = ConsentStatus.granted, event.granted_at
        else:
            assert isinstance(event, ConsentRevokedV1)
            status, changed_at = ConsentStatus.revoked, event.revoked_at
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
