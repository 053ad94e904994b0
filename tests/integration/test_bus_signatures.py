"""Consumers accept a topic's events only from its owner, signed with the owner's key: a
forged contact-updated (unsigned, signed with a wrong key, or really signed by a service
that does not own the topic) is parked on the DLQ with the reason and never reaches
messaging's projection; the genuine one is applied."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from support import read_topic, wait_for
from tribune_shared.bus import (
    PRODUCER_HEADER,
    SIGNATURE_HEADER,
    EventConsumer,
    EventPublisher,
    ensure_topics,
    signature,
)
from tribune_shared.events import dlq_topic, new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState, ContactUpdatedV1
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

GENUINE_EMAIL = "marianne@example.fr"
ATTACKER_EMAIL = "attacker@evil.example"


def contact_event(contact_id: str, version: int, email: str, producer: str = "contacts"):
    state = ContactState(given_name="Marianne", email=email)
    if version == 1:
        event = ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=state)
    else:
        event = ContactUpdatedV1(
            contact_id=contact_id, contact_version=version, contact=state, changed_fields=["email"]
        )
    return new_envelope(event, producer=producer, federation_id="paris", federation_path="/p/")


async def test_a_forged_contact_update_is_parked_and_the_genuine_one_applied(isolated_env):
    from messaging.handlers import contact_handlers
    from messaging.settings import MessagingSettings
    from messaging.store import CONTACTS, MessagingStore

    settings = MessagingSettings()
    await ensure_topics(settings, ["contact-created", "contact-updated"])
    store = Store(settings)
    contacts = EventPublisher(settings, producer="contacts")  # the owner of contact-*
    consent = EventPublisher(settings, producer="consent")  # a real service, not the owner
    for publisher in (contacts, consent):
        await publisher.start()
    cid = f"c-{uuid.uuid4().hex[:8]}"
    topic = settings.topic("contact-updated")
    try:
        await contacts.publish(contact_event(cid, 1, GENUINE_EMAIL))
        # Forgeries, each newer than the genuine update that follows (applied, any of them
        # would win over it): written straight to the topic as an intruder on the broker
        # could, or published by consent with its own, valid, key.
        unsigned = contact_event(cid, 10, ATTACKER_EMAIL)
        await contacts.send_raw(topic, unsigned.to_bytes(), cid.encode(), [])
        wrong_key = contact_event(cid, 11, ATTACKER_EMAIL)
        value = wrong_key.to_bytes()
        await contacts.send_raw(
            topic,
            value,
            cid.encode(),
            [(PRODUCER_HEADER, b"contacts"), (SIGNATURE_HEADER, signature(value, b"k" * 40))],
        )
        await consent.publish(contact_event(cid, 12, ATTACKER_EMAIL, producer="consent"))
        # consent's signature on an envelope that claims to come from contacts
        await consent.publish(contact_event(cid, 13, ATTACKER_EMAIL, producer="contacts"))
        await contacts.publish(contact_event(cid, 2, "marianne@new.example"))

        handlers = contact_handlers(MessagingStore(store))
        consumer = EventConsumer(
            settings,
            store,
            group=f"g-signed-{uuid.uuid4().hex[:6]}",
            handlers={t: handlers[t] for t in ("contact-created", "contact-updated")},
            dlq_publisher=contacts,
        )

        async def genuine_update_applied():
            doc = await store[CONTACTS].find_one({"_id": cid})
            return doc if doc and doc.get("version") == 2 else None

        await consumer.start()
        task = asyncio.create_task(consumer.run())
        try:
            await wait_for(genuine_update_applied, timeout=60)
            parked = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), expect=4)
        finally:
            consumer.request_stop()
            await task

        doc = await store[CONTACTS].find_one({"_id": cid})
        assert doc["email"] == "marianne@new.example"  # no forgery was ever applied
        reasons = sorted(dict(r.headers)["dlq_error"].decode() for r in parked)
        assert len(reasons) == 4, reasons
        assert all(r.startswith("unauthenticated event: ") for r in reasons)
        assert any("no tribune-producer header" in r for r in reasons)
        assert any("bad signature for producer 'contacts'" in r for r in reasons)
        assert any("'consent' is not the owner of 'contact-updated'" in r for r in reasons)
        assert any(
            "signed as 'consent' but the envelope says producer 'contacts'" in r for r in reasons
        )
    finally:
        for publisher in (contacts, consent):
            await publisher.stop()
        await store.client.drop_database(settings.database_name)
        await store.close()
