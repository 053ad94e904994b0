"""Event handlers of the memberships service: small, idempotent, given their dependencies."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.bus import Handler
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1

from memberships.store import MembershipsStore


def contact_handlers(repo: MembershipsStore) -> dict[str, Handler]:
    """Project who exists and in which federation; only newer contact versions apply
    (contact-updated may arrive before contact-created)."""

    async def on_contact(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1 | ContactUpdatedV1)
        await repo.project_contact(
            event.contact_id,
            event.contact_version,
            envelope.federation_id,
            envelope.federation_path,
            session,
        )

    return {"contact-created": on_contact, "contact-updated": on_contact}
