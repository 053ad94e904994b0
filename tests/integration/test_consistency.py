"""Read-your-writes: a service waits for the events a client's consistency token names,
answers 503 (never a false 404) when its projection is still behind, and answers writes
with a token naming only what really committed."""

from __future__ import annotations

import asyncio
import time

import pytest
from consent.main import create_app
from consent.settings import ConsentSettings
from fastapi.testclient import TestClient
from support import identity_headers, make_identity, wait_for
from tribune_shared.auth import Role
from tribune_shared.bus import EventPublisher, ensure_topics
from tribune_shared.consistency import HEADER, known_committed, parse, recording
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
GRANT = {"channel": "email", "purpose": "news", "source": "web_form"}


def contact_created(contact_id: str):
    return new_envelope(
        ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=ContactState()),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )


def token_for(envelope) -> str:
    return f"{envelope.type}.{envelope.event_id}.{int(time.time() * 1000)}"


def deliver_with_the_worker(settings: ConsentSettings, envelope) -> None:
    """Publish the event and let consent's real worker consumers apply it."""
    from consent.worker import build_worker

    async def run() -> None:
        await ensure_topics(settings)
        # standing in for the event's producer: consumers accept only the owner's events
        publisher = EventPublisher(settings, producer=envelope.producer)
        await publisher.start()
        await publisher.publish(envelope)
        await publisher.stop()
        worker = build_worker(settings)
        for consumer in worker.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in worker.consumers]

        async def applied() -> bool:
            found = await worker.store["processed_events"].find_one(
                {"_id": f"consent:{envelope.event_id}"}
            )
            return found is not None

        try:
            await wait_for(applied, timeout=60)
        finally:
            for consumer in worker.consumers:
                consumer.request_stop()
            await asyncio.gather(*tasks)
            await worker.store.close()

    asyncio.run(run())


@pytest.fixture
def api(isolated_env, monkeypatch):
    monkeypatch.setenv("CONSENT_CONSISTENCY_WAIT_SECONDS", "0.5")
    settings = ConsentSettings()
    with TestClient(create_app(settings)) as client:
        yield client, settings


def headers(settings, **extra: str) -> dict[str, str]:
    identity = make_identity(PARIS, Role.campaign_manager)
    return {**identity_headers(identity, settings.identity_secret), **extra}


def test_a_write_named_by_the_token_is_waited_for_503_while_behind_then_served(api):
    client, settings = api
    fresh = contact_created("c-fresh")
    token = token_for(fresh)

    # Without a token the projection's lag shows as a false 404: what clients saw.
    r = client.post("/api/v1/consents/c-fresh/grant", json=GRANT, headers=headers(settings))
    assert r.status_code == 404
    # With it, the service says "not yet" instead, and writes nothing.
    r = client.post(
        "/api/v1/consents/c-fresh/grant", json=GRANT, headers=headers(settings, **{HEADER: token})
    )
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    assert r.json()["error"] == "not_yet_consistent"

    deliver_with_the_worker(settings, fresh)
    r = client.post(
        "/api/v1/consents/c-fresh/grant", json=GRANT, headers=headers(settings, **{HEADER: token})
    )
    assert r.status_code == 200, r.text
    returned = parse(r.headers[HEADER])
    # the client's token carries on, with the grant this request committed, newest first
    assert [e.event_type for e in returned] == ["consent-granted", "contact-created"]
    assert returned[1].event_id == fresh.event_id

    async def granted_is_in_the_outbox() -> bool:
        store = Store(settings)
        try:
            return await store["outbox"].find_one({"_id": returned[0].event_id}) is not None
        finally:
            await store.close()

    assert asyncio.run(granted_is_in_the_outbox())


def test_a_refused_write_names_nothing_and_events_others_consume_are_not_waited_for(api):
    client, settings = api
    # donation-received has no consumer in consent: nothing to wait for
    foreign = f"donation-received.{'a' * 32}.{int(time.time() * 1000)}"
    r = client.post(
        "/api/v1/consents/nobody/grant",
        json={**GRANT, "channel": "pigeon"},
        headers=headers(settings, **{HEADER: foreign}),
    )
    assert r.status_code == 422
    assert [e.event_type for e in parse(r.headers[HEADER])] == ["donation-received"]


def test_a_malformed_token_is_a_clear_422_naming_the_header(api):
    client, settings = api
    r = client.get(
        "/api/v1/consents/c-x", headers=headers(settings, **{HEADER: "contact-created;oops"})
    )
    assert r.status_code == 422
    [detail] = r.json()["detail"]
    assert detail["field"] == HEADER
    assert "<event-type>.<event-id>.<epoch-ms>" in detail["reason"]


def test_the_transaction_runner_vouches_only_for_what_it_committed(isolated_env):
    """A write's token names its events without looking them up once the runner saw their
    transaction commit; a transaction that failed vouches for nothing (the middleware then
    looks its events up, and finds none)."""
    settings = ConsentSettings()

    async def run() -> tuple[list[str], set[str]]:
        store = Store(settings)
        outbox = Outbox(store)

        async def commits(session) -> None:
            await outbox.add(session, contact_created("kept"))

        async def fails(session) -> None:
            await outbox.add(session, contact_created("refused"))
            raise ValueError("a rule refused the write")

        try:
            with recording() as written:
                await store.run_transaction(commits)
                with pytest.raises(ValueError):
                    await store.run_transaction(fails)
                return [w.event_id for w in written], known_committed()
        finally:
            await store.client.drop_database(settings.database_name)
            await store.close()

    written, vouched = asyncio.run(run())
    assert len(written) == 2
    assert vouched == {written[0]}
