"""The live event stream end to end (gateway.live_events): events signed by their owners on
real Kafka, recorded by the gateway worker's recorder in the real store, served by a real
gateway over HTTP to users of different roles and federations, resumed by Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway.live_events.recorder import LiveEventsRecorder
from gateway.live_events.store import LiveEventStore
from gateway.main import create_app
from gateway.settings import GatewaySettings
from support import PASSWORD, add_federation, add_user, bearer, serving, wait_for
from tribune_shared.bus import EventPublisher
from tribune_shared.events import Envelope
from tribune_shared.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def live_env(gateway_env, monkeypatch):
    monkeypatch.setenv("GATEWAY_LIVE_EVENTS_MAX_SECONDS", "20")
    monkeypatch.setenv("GATEWAY_LIVE_EVENTS_POLL_SECONDS", "0.05")
    monkeypatch.setenv("GATEWAY_LIVE_EVENTS_MAX_CONNECTIONS_PER_USER", "2")
    return gateway_env


def _event(type_: str, producer: str, fed: dict[str, Any], key: str) -> Envelope:
    return Envelope(
        type=type_,
        version=1,
        producer=producer,
        key=key,
        federation_id=fed["id"],
        federation_path=fed["path"],
        correlation_id="live-test",
        data={"contact_id": key},
    )


async def _read(
    client: httpx.AsyncClient, headers: dict[str, str], count: int, **params: Any
) -> list[dict[str, Any]]:
    """The first ``count`` events (not the stream's own messages) of a new stream."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async with client.stream(
            "GET", "/api/v1/events/stream", headers=headers, params=params
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            message: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(": ")
                    message[name] = value
                    continue
                if "id" in message:
                    got.append({"id": int(message["id"]), **json.loads(message["data"])})
                    if len(got) == count:
                        return got
                message = {}
    return got


@pytest.fixture
async def platform(live_env) -> AsyncIterator[dict[str, Any]]:
    settings = GatewaySettings()
    with TestClient(create_app(settings)) as client:
        admin = bearer(client)
        paris = add_federation(client, admin, "Paris")
        lyon = add_federation(client, admin, "Lyon")
        add_user(client, admin, "sec.paris@x.org", "secretary", paris["id"])
        add_user(client, admin, "tres.paris@x.org", "treasurer", paris["id"])
        users = {
            "admin": admin,
            "secretary": bearer(client, "sec.paris@x.org", PASSWORD),
            "treasurer": bearer(client, "tres.paris@x.org", PASSWORD),
        }
    store = Store(settings)
    recorder = LiveEventsRecorder(settings, LiveEventStore(store))
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await asyncio.wait_for(recorder.ready.wait(), 60)
    contacts = EventPublisher(settings, producer="contacts")
    memberships = EventPublisher(settings, producer="memberships")
    await contacts.start()
    await memberships.start()
    try:
        with serving(create_app(settings), "gateway") as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                yield {
                    "http": http,
                    "users": users,
                    "paris": paris,
                    "lyon": lyon,
                    "contacts": contacts,
                    "memberships": memberships,
                    "store": store,
                }
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await contacts.stop()
        await memberships.stop()
        await store.client.drop_database(settings.database_name)
        await store.close()


async def test_each_user_follows_its_subtree_and_what_its_role_may_see(platform):
    p = platform
    http, users = p["http"], p["users"]
    secretary = asyncio.create_task(_read(http, users["secretary"], 1))
    treasurer = asyncio.create_task(_read(http, users["treasurer"], 1))
    admin = asyncio.create_task(_read(http, users["admin"], 3))
    await asyncio.sleep(1.0)  # the three streams are open
    await p["contacts"].publish(_event("contact-created", "contacts", p["lyon"], "c-lyon"))
    await p["contacts"].publish(_event("contact-created", "contacts", p["paris"], "c-paris"))
    await p["memberships"].publish(_event("payment-received", "memberships", p["paris"], "c-pay"))

    seen_by_secretary = await secretary
    seen_by_treasurer = await treasurer
    seen_by_admin = await admin
    assert [(e["type"], e["key"]) for e in seen_by_secretary] == [("contact-created", "c-paris")]
    assert [(e["type"], e["key"]) for e in seen_by_treasurer] == [("payment-received", "c-pay")]
    assert sorted(e["key"] for e in seen_by_admin) == ["c-lyon", "c-paris", "c-pay"]
    ids = [e["id"] for e in seen_by_admin]
    assert ids == sorted(ids)


async def test_a_client_resumes_with_last_event_id_and_misses_nothing(platform):
    p = platform
    http, secretary = p["http"], p["users"]["secretary"]
    first = asyncio.create_task(_read(http, secretary, 1))
    await asyncio.sleep(1.0)
    await p["contacts"].publish(_event("contact-created", "contacts", p["paris"], "c-1"))
    [seen] = await first
    # while the client is away: two more of Paris and one of Lyon
    await p["contacts"].publish_many(
        [
            _event("contact-updated", "contacts", p["paris"], "c-1"),
            _event("contact-created", "contacts", p["lyon"], "c-2"),
            _event("contact-created", "contacts", p["paris"], "c-3"),
        ]
    )
    live = LiveEventStore(p["store"])

    async def recorded() -> bool:
        return await live.latest() >= seen["id"] + 3

    await wait_for(recorded, timeout=30)
    resumed = await _read(http, {**secretary, "Last-Event-ID": str(seen["id"])}, 2)
    # Kafka orders a topic, not two: the stream numbers them as the recorder read them
    assert {(e["type"], e["key"]) for e in resumed} == {
        ("contact-updated", "c-1"),
        ("contact-created", "c-3"),
    }
    assert resumed[0]["id"] < resumed[1]["id"] and resumed[0]["id"] > seen["id"]


async def test_bad_requests_and_limits_are_clear_answers(platform):
    p = platform
    http, secretary = p["http"], p["users"]["secretary"]
    r = await http.get("/api/v1/events/stream", params={"types": "nope"}, headers=secretary)
    assert r.status_code == 422 and "types" in r.text
    r = await http.get(
        "/api/v1/events/stream", params={"federation_id": p["lyon"]["id"]}, headers=secretary
    )
    assert r.status_code == 404
    r = await http.get("/api/v1/events/stream")
    assert r.status_code == 401

    async def hold() -> None:
        async with http.stream("GET", "/api/v1/events/stream", headers=secretary) as response:
            assert response.status_code == 200
            await asyncio.sleep(3)

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await asyncio.sleep(1.0)
    r = await http.get("/api/v1/events/stream", headers=secretary)
    assert r.status_code == 429 and "Retry-After" in r.headers
    await asyncio.gather(*holders)


async def test_recording_is_idempotent_and_numbers_have_no_gaps(live_env):
    settings = GatewaySettings()
    store = Store(settings)
    live = LiveEventStore(store)
    fed = {"id": "f1", "path": "/f1/"}
    try:
        from tribune_shared.events import utcnow

        batches = [
            [_event("contact-created", "contacts", fed, f"c{b}-{i}") for i in range(20)]
            for b in range(5)
        ]
        kept = await asyncio.gather(*(live.record(b, utcnow()) for b in batches))
        assert kept == [20] * 5
        assert await live.record(batches[0], utcnow()) == 0  # redelivered: nothing new
        docs = await live.after(0, 1000)
        assert [d["seq"] for d in docs] == list(range(1, 101))
        assert len({d["event_id"] for d in docs}) == 100
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()
