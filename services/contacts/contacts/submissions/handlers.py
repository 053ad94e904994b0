"""``form-submitted``: apply the queued submissions of a partition batch to people, in
the consumer's transaction (contacts.submissions.service)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.store import Store
from tribune_shared.subscriptions import Batch

from contacts.settings import ContactsSettings
from contacts.submissions.service import SubmissionsService


def submission_handlers(settings: ContactsSettings, store: Store) -> dict[str, Batch]:
    service = SubmissionsService(settings, store)

    async def on_submitted(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await service.apply(envelopes, session)

    return {"form-submitted": Batch(on_submitted)}
