"""Event handlers of the consent service: small, idempotent, given their dependencies."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.bus import Handler
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1

from consent.store import ConsentStore


def contact_handlers(consents: ConsentStore) -> dict[str, Handler]:
    async def on_contact(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1 | ContactUpdatedV1)
        await consents.project_contact(
            event.contact_id,
            event.contact_version,
            envelope.federation_id,
            envelope.federation_path,
            session,
        )

    return {"contact-created": on_contact, "contact-updated": on_contact}
