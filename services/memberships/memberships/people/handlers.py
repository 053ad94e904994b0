"""contact-created / contact-updated: the people projection, a whole batch at a time."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.store import Store
from tribune_shared.subscriptions import Batch

from memberships.people.domain import identity_state
from memberships.people.store import PeopleStore


def people_handlers(store: Store) -> dict[str, Batch]:
    """Registered with ``also=True`` beside the contact directory (same events, same
    transaction: a contact a payment names is known here too)."""
    people = PeopleStore(store)

    async def on_contacts(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await people.project([identity_state(e) for e in envelopes], session)

    batch = Batch(on_contacts)
    return {"contact-created": batch, "contact-updated": batch}
