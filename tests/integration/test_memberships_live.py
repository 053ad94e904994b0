"""Live figures over the real Kafka and store: payments go through the real memberships
webhook, the real memberships worker's outbox relay publishes their events, and the faust
app (memberships.live) keeps the figures; they must equal a recount by a query on the
memberships store, for every federation of the tree, before and after a restart (faust
reads its changelog topics back)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from memberships.live.main import create_app as create_live_app
from memberships.live.main import live_settings
from memberships.live.store import LiveStore
from memberships.main import create_app as create_api
from memberships.settings import MembershipsSettings
from memberships.worker import build_worker
from support import deliver, identity_headers, make_identity, seed_federations, wait_for
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.store import Store
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

SECRET = "whsec-live-integration-0123456789abcdef"
TREE = ("/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/")
PLACES = ("/root/paris/", "/root/paris/p11/", "/root/lyon/")
FIGURES = (
    "members_in_good_standing",
    "members_in_grace",
    "members_lapsed",
    "members_cancelled",
    "dues_cents",
    "donations_cents",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MEMBERSHIPS_WORKER_PORT", str(free_port()))
    settings = MembershipsSettings()
    seed_federations(settings, *TREE)
    return settings


@asynccontextmanager
async def running(app) -> AsyncIterator[httpx.AsyncClient]:
    """An app with its lifespan, called in this loop; shut down even when the test fails
    (a lifespan an exception is thrown into skips its shutdown: faust would keep running)."""
    failure: BaseException | None = None
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            try:
                yield client
            except BaseException as exc:  # re-raised once the app is shut down
                failure = exc
    if failure is not None:
        raise failure


@asynccontextmanager
async def memberships_worker(settings: MembershipsSettings) -> AsyncIterator[None]:
    worker = build_worker(settings)
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=60)


async def seed_contacts(settings: MembershipsSettings, count: int) -> dict[str, str]:
    """contact id -> federation path, projected as the memberships worker would."""
    store = Store(settings)
    placed = {f"c{i:04d}": PLACES[(i // 3) % len(PLACES)] for i in range(count)}
    try:
        handlers = ContactDirectory(store).handlers()
        for contact_id, path in placed.items():
            envelope = new_envelope(
                ContactCreatedV1(
                    contact_id=contact_id, contact_version=1, contact=ContactState(given_name="A")
                ),
                producer="contacts",
                federation_id=path.rstrip("/").rsplit("/", 1)[-1],
                federation_path=path,
            )
            await deliver(store, handlers, envelope)
    finally:
        await store.close()
    return placed


def body(contact_id: str, n: int, paid_at: datetime, purpose: str, cents: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "provider": "stripe",
        "provider_payment_id": f"pi_{contact_id}_{n}",
        "contact_id": contact_id,
        "amount_cents": cents,
        "currency": "EUR",
        "method": "card",
        "purpose": purpose,
        "paid_at": paid_at.isoformat(),
        "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
    }
    return out


async def pay(api: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    raw = json.dumps(payload).encode()
    return await api.post(
        "/api/v1/webhooks/payments",
        content=raw,
        headers={"Content-Type": "application/json", **signature_headers(SECRET, raw)},
    )


async def drive(api: httpx.AsyncClient, contacts: dict[str, str]) -> int:
    """A few hundred payments and the transitions they cause: dues two years ago (active,
    then past grace), dues now for a third of them (the old membership lapses, a new one
    is active), renewals, donations this year and earlier, and provider retries."""
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=800)
    sent = 0
    for i, contact_id in enumerate(contacts):
        payloads = [body(contact_id, 1, long_ago, "dues", 3000)]
        if i % 3 == 0:
            payloads.append(body(contact_id, 2, now - timedelta(minutes=5), "dues", 3000))
            payloads.append(body(contact_id, 3, now - timedelta(minutes=1), "dues", 2500))
        if i % 2 == 0:
            payloads.append(body(contact_id, 4, now - timedelta(minutes=2), "donation", 1000 + i))
        if i % 5 == 0:
            payloads.append(body(contact_id, 5, long_ago, "donation", 700))
        if i % 7 == 0:
            payloads.append(payloads[-1])  # the provider retries: recorded once
        for payload in payloads:
            r = await pay(api, payload)
            assert r.status_code in (200, 201), r.text
            sent += 1
    return sent


async def compare(settings, live: httpx.AsyncClient, year: int) -> dict[str, Any]:
    """faust's figures and the store's recount for every federation of the tree."""
    store = Store(settings)
    try:
        recount = LiveStore(store)
        headers = identity_headers(make_identity("/root/", Role.admin), settings.identity_secret)
        out = {}
        for path in TREE:
            fid = path.rstrip("/").rsplit("/", 1)[-1]
            r = await live.get(
                "/api/v1/live/memberships",
                params={"federation_id": fid, "year": year},
                headers=headers,
            )
            assert r.status_code == 200, r.text
            faust_figures = {k: r.json()[k] for k in FIGURES}
            out[path] = (faust_figures, await recount.recount(path, year, settings.zone))
        return out
    finally:
        await store.close()


def equal(pairs: dict[str, Any]) -> bool:
    return all(mine == theirs for mine, theirs in pairs.values())


def test_faust_figures_equal_a_recount_from_the_store_and_survive_a_restart(settings):
    async def scenario() -> None:
        contacts = await seed_contacts(settings, 120)
        this_year = datetime.now(settings.zone).year
        two_years_ago = (datetime.now(UTC) - timedelta(days=800)).astimezone(settings.zone).year
        live_config = live_settings(settings)
        async with memberships_worker(settings), running(create_api(settings)) as api:
            async with running(create_live_app(live_config)) as live:
                sent = await drive(api, contacts)
                assert sent > 300
                repaid = [path for i, path in enumerate(contacts.values()) if i % 3 == 0]

                async def settled() -> dict[str, Any] | None:
                    pairs = await compare(settings, live, this_year)
                    return pairs if equal(pairs) else None

                try:
                    pairs = await wait_for(settled, timeout=90, interval=0.5)
                except TimeoutError:
                    pairs = await compare(settings, live, this_year)
                    raise AssertionError(f"faust vs recount: {pairs}") from None
                root, _ = pairs["/root/"]
                # the scenario moved every figure it can (not a comparison of zeros); the
                # lifecycle sweep may lapse more of the old memberships, never fewer
                assert root["members_lapsed"] >= len(repaid)
                assert root["members_in_good_standing"] >= len(repaid)
                assert root["dues_cents"] == len(repaid) * 5500
                assert root["donations_cents"] == sum(1000 + i for i in range(0, 120, 2))
                # a federation counts its whole subtree
                for path in PLACES:
                    below = sum(1 for p in repaid if p.startswith(path))
                    assert pairs[path][0]["dues_cents"] == below * 5500, path
                assert (
                    pairs["/root/paris/"][0]["dues_cents"]
                    > pairs["/root/paris/p11/"][0]["dues_cents"]
                )
                old = await compare(settings, live, two_years_ago)
                assert equal(old), old
                assert old["/root/"][0]["dues_cents"] == 120 * 3000

            # a new live process: the states come back from the changelog topics
            async with running(create_live_app(live_config)) as again:

                async def recovered() -> dict[str, Any] | None:
                    pairs = await compare(settings, again, this_year)
                    return pairs if equal(pairs) else None

                pairs = await wait_for(recovered, timeout=90, interval=0.5)
                assert pairs["/root/"][0]["dues_cents"] == len(repaid) * 5500

    asyncio.run(scenario())


def test_a_federation_outside_the_callers_subtree_is_404_and_a_role_without_figures_403(
    settings,
):
    async def scenario() -> None:
        async with running(create_live_app(live_settings(settings))) as live:
            lyon = identity_headers(
                make_identity("/root/lyon/", Role.treasurer), settings.identity_secret
            )
            r = await live.get(
                "/api/v1/live/memberships", params={"federation_id": "paris"}, headers=lyon
            )
            assert r.status_code == 404
            r = await live.get(
                "/api/v1/live/memberships/stream", params={"federation_id": "paris"}, headers=lyon
            )
            assert r.status_code == 404
            r = await live.get(
                "/api/v1/live/memberships", params={"federation_id": "nope"}, headers=lyon
            )
            assert r.status_code == 404
            r = await live.get("/api/v1/live/memberships", headers=lyon)
            assert r.status_code == 200
            assert r.json()["federation_id"] == "lyon"
            assert r.json()["members_in_good_standing"] == 0
            dpo = identity_headers(make_identity("/root/lyon/", Role.dpo), settings.identity_secret)
            r = await live.get("/api/v1/live/memberships", headers=dpo)
            assert r.status_code == 403
            r = await live.get(
                "/api/v1/live/memberships", params={"federation_id": "../x"}, headers=lyon
            )
            assert r.status_code == 422
            assert r.json()["detail"][0]["field"] == "federation_id"

    asyncio.run(scenario())
