"""``form-submission-applied``: the person's ticked boxes become consents with their own
proof (consent.forms.service), a partition batch at a time (a viral petition's drain)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.subscriptions import Batch

from consent.forms.service import FormConsents
from consent.service import ConsentService


def form_handlers(consent: ConsentService) -> dict[str, Batch]:
    forms = FormConsents(consent)

    async def on_applied(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await forms.apply_many(envelopes, session)

    return {"form-submission-applied": Batch(on_applied)}
