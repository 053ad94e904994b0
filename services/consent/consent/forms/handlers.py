"""``form-submission-applied``: the person's ticked boxes become consents with their own
proof (consent.forms.service)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.subscriptions import Handler

from consent.forms.service import FormConsents
from consent.service import ConsentService


def form_handlers(consent: ConsentService) -> dict[str, Handler]:
    forms = FormConsents(consent)

    async def on_applied(envelope: Envelope, session: AsyncClientSession) -> None:
        await forms.apply(envelope, session)

    return {"form-submission-applied": on_applied}
