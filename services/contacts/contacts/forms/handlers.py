"""consent-text-published -> contacts' copy of the consent texts (``consent_texts``), so a
public form shows the exact text the person agrees to, and its hash, without asking
consent at each page view. Consent stays the owner of texts and of the proof."""

from __future__ import annotations

from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ConsentTextPublishedV1
from tribune_shared.store import Store
from tribune_shared.subscriptions import Batch, Step

from contacts.forms.store import FormStore


def text_state(envelope: Envelope) -> dict:
    event = decode_as(envelope, ConsentTextPublishedV1)
    return {
        "_id": event.text_id,
        "federation_id": envelope.federation_id,
        "federation_path": envelope.federation_path,
        "version": event.version,
        "title": event.title,
        "body": event.body,
        "language": event.language,
        "sha256": event.sha256,
        "withdrawn": event.withdrawn,
        "revision": event.revision,
        # the revision orders the states; the time breaks ties of producers without one
        "order": [event.revision, envelope.occurred_at.isoformat()],
    }


def text_handlers(store: Store) -> dict[str, Step]:
    forms = FormStore(store)

    async def on_texts(envelopes: list[Envelope], session) -> None:
        await forms.project_texts([text_state(e) for e in envelopes], session)

    return {"consent-text-published": Batch(on_texts)}
