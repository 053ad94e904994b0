"""Privacy requests in consent over the real store: deadlines and overdue lists, the DPO's
alone, tenancy, clear errors; the erasure fan-in and its receipt; retention sweeps run
with an injected "now" through the real handlers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from consent.main import create_app
from consent.privacy_handlers import retention_handlers
from consent.privacy_service import PrivacyService
from consent.privacy_store import RETENTION_CLOCKS, PrivacyStore
from consent.settings import ConsentSettings
from consent.store import AUDIT
from fastapi.testclient import TestClient
from support import deliver, identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, decode, new_envelope
from tribune_shared.events.contracts import (
    ConsentGrantedV1,
    ContactCreatedV1,
    ContactState,
    DataOrigin,
    ErasureCompletedV1,
    EventContract,
    MessageSentV1,
    OriginKind,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.vault import KeyVault

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"


def envelope(event: EventContract, path: str = PARIS, at: datetime | None = None) -> Envelope:
    env = new_envelope(
        event,
        producer="test",
        federation_id=path.strip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )
    return env.model_copy(update={"occurred_at": at}) if at else env


def created(contact_id: str, origin: OriginKind = OriginKind.web_form) -> ContactCreatedV1:
    return ContactCreatedV1(
        contact_id=contact_id,
        contact_version=1,
        contact=ContactState(origin=DataOrigin(kind=origin)),
    )


def handle(settings: ConsentSettings, *envelopes: Envelope) -> None:
    """Run consent's real handlers (directory + retention clocks) on these events."""

    async def run():
        store = Store(settings)
        subscriptions = (
            Subscriptions("consent")
            .add(ContactDirectory(store).handlers())
            .add(retention_handlers(PrivacyStore(store)), also=True)
        )
        await deliver(store, subscriptions, *envelopes)
        await store.close()

    asyncio.run(run())


def query(settings, collection: str, filter_: dict) -> list[dict]:
    async def run():
        store = Store(settings)
        docs = await store[collection].find(filter_).to_list()
        await store.close()
        return docs

    return asyncio.run(run())


@pytest.fixture
def api(isolated_env):
    settings = ConsentSettings()
    handle(settings, envelope(created("c-paris")), envelope(created("c-lyon"), LYON))
    with TestClient(create_app(settings)) as client:
        yield client, settings


def dpo(settings, path=PARIS, role=Role.dpo):
    return identity_headers(make_identity(path, role), settings.identity_secret)


def test_access_request_has_its_legal_deadline_and_shows_when_overdue(api):
    client, settings = api
    received = datetime.now(UTC) - timedelta(days=40)
    r = client.post(
        "/api/v1/privacy/requests",
        json={"kind": "access", "contact_id": "c-paris", "received_at": received.isoformat()},
        headers=dpo(settings),
    )
    assert r.status_code == 201, r.text
    late = r.json()
    assert late["status"] == "open" and late["overdue"] is True
    deadline = datetime.fromisoformat(late["deadline"])
    assert 28 <= (deadline - received).days <= 31  # one calendar month
    fresh = client.post(
        "/api/v1/privacy/requests",
        json={"kind": "access", "contact_id": "c-paris", "note": "par courrier"},
        headers=dpo(settings),
    ).json()
    assert fresh["overdue"] is False and fresh["note"] == "par courrier"

    overdue = client.get("/api/v1/privacy/requests?overdue=true", headers=dpo(settings)).json()
    assert [i["request_id"] for i in overdue["items"]] == [late["request_id"]]
    on_time = client.get("/api/v1/privacy/requests?overdue=false", headers=dpo(settings)).json()
    assert [i["request_id"] for i in on_time["items"]] == [fresh["request_id"]]
    assert len(client.get("/api/v1/privacy/requests", headers=dpo(settings)).json()["items"]) == 2

    # answering it (the gateway records the export) takes it off the overdue list
    r = client.post(
        f"/api/v1/privacy/requests/{late['request_id']}/exported",
        json={"services": ["contacts", "consent"]},
        headers=dpo(settings),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["exports"][0]["services"] == [
        "contacts",
        "consent",
    ]
    overdue = client.get("/api/v1/privacy/requests?overdue=true", headers=dpo(settings)).json()
    assert overdue["items"] == []
    audit = query(settings, AUDIT, {"action": "privacy_data_exported"})
    assert [a["detail"]["request_id"] for a in audit] == [late["request_id"]]


def test_privacy_requests_are_the_dpos_alone_and_scoped_to_the_subtree(api):
    client, settings = api
    body = {"kind": "access", "contact_id": "c-paris"}
    for role in (Role.admin, Role.secretary, Role.campaign_manager):
        r = client.post("/api/v1/privacy/requests", json=body, headers=dpo(settings, role=role))
        assert r.status_code == 403, role
        assert (
            client.get("/api/v1/privacy/requests", headers=dpo(settings, role=role)).status_code
            == 403
        )
    assert (
        client.get(
            "/api/v1/consents/privacy/c-paris", headers=dpo(settings, role=Role.admin)
        ).status_code
        == 403
    )
    # another federation's contact and request: 404, never listed
    r = client.post(
        "/api/v1/privacy/requests",
        json={"kind": "access", "contact_id": "c-lyon"},
        headers=dpo(settings),
    )
    assert r.status_code == 404
    assert r.json()["detail"] == [{"field": "contact_id", "reason": "contact not found"}]
    made = client.post("/api/v1/privacy/requests", json=body, headers=dpo(settings)).json()
    lyon = dpo(settings, LYON)
    assert (
        client.get(f"/api/v1/privacy/requests/{made['request_id']}", headers=lyon).status_code
        == 404
    )
    assert client.get("/api/v1/privacy/requests", headers=lyon).json()["items"] == []
    assert client.get("/api/v1/consents/privacy/c-paris", headers=lyon).status_code == 404
    assert client.get("/api/v1/consents/privacy/c-paris", headers=dpo(settings)).status_code == 200
    r = client.post(
        f"/api/v1/privacy/requests/{made['request_id']}/exported",
        json={"services": []},
        headers=lyon,
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "rectification", "contact_id": "c-paris"}, "kind"),
        ({"kind": "access", "contact_id": "c paris!"}, "contact_id"),
        ({"kind": "access"}, "contact_id"),
        (
            {"kind": "access", "contact_id": "c-paris", "received_at": "2026-01-01T10:00:00"},
            "received_at",
        ),
        (
            {"kind": "access", "contact_id": "c-paris", "received_at": "2999-01-01T10:00:00Z"},
            "received_at",
        ),
        ({"kind": "access", "contact_id": "c-paris", "channel": "email"}, "channel"),
        ({"kind": "access", "contact_id": "c-paris", "note": "x" * 2001}, "note"),
    ],
)
def test_malformed_requests_are_422_with_the_field_and_change_nothing(api, body, field):
    client, settings = api
    r = client.post("/api/v1/privacy/requests", json=body, headers=dpo(settings))
    assert r.status_code == 422, r.text
    assert field in {d["field"] for d in r.json()["detail"]}
    assert client.get("/api/v1/privacy/requests", headers=dpo(settings)).json()["items"] == []


def test_list_and_export_refuse_bad_parameters(api):
    client, settings = api
    for params in ("overdue=maybe", "kind=portability", "status=lost", "limit=0", "limit=5000"):
        r = client.get(f"/api/v1/privacy/requests?{params}", headers=dpo(settings))
        assert r.status_code == 422, params
    erasure = client.post(
        "/api/v1/privacy/requests",
        json={"kind": "erasure", "contact_id": "c-paris"},
        headers=dpo(settings),
    ).json()
    r = client.post(
        f"/api/v1/privacy/requests/{erasure['request_id']}/exported",
        json={"services": ["contacts"]},
        headers=dpo(settings),
    )
    assert r.status_code == 409  # an erasure is not answered with an export
    r = client.post(
        "/api/v1/privacy/requests/nope/exported", json={"services": "all"}, headers=dpo(settings)
    )
    assert r.status_code == 422


def test_an_erasure_fans_out_destroys_the_key_and_closes_when_every_service_answered(api):
    client, settings = api

    async def key_before():
        vault = KeyVault(settings)
        key = await vault.key_for("c-paris", create=True)
        await vault.close()
        return key

    assert asyncio.run(key_before()) is not None
    r = client.post(
        "/api/v1/privacy/requests",
        json={"kind": "erasure", "contact_id": "c-paris"},
        headers=dpo(settings),
    )
    assert r.status_code == 201, r.text
    request = r.json()
    assert request["status"] == "in_progress"
    assert request["expected_services"] == settings.erasure_services
    [out] = query(settings, OUTBOX, {"topic": "erasure-requested"})
    event = decode(Envelope.model_validate(out["envelope"]))
    assert (event.request_id, event.contact_id) == (request["request_id"], "c-paris")

    async def key_after():
        vault = KeyVault(settings)
        key = await vault.key_for("c-paris", create=True)
        await vault.close()
        return key

    assert asyncio.run(key_after()) is None  # destroyed, and never made again

    request_env = Envelope.model_validate(out["envelope"])

    def answer(service: str, kept: list[str] | None = None) -> Envelope:
        return new_envelope(
            ErasureCompletedV1(
                request_id=request["request_id"],
                contact_id="c-paris",
                service=service,
                completed_at=datetime.now(UTC),
                kept_for_legal_reasons=kept or [],
            ),
            producer=service,
            federation_id="paris",
            federation_path=PARIS,
            causation=request_env,
        )

    async def fan_in(*envelopes: Envelope):
        store = Store(settings)
        privacy = PrivacyService(settings, store)
        for env in envelopes:
            async with store.transaction() as session:
                await privacy.on_erasure_completed(env, session)
        await store.close()

    asyncio.run(fan_in(answer("contacts"), answer("memberships", ["payments: 1 kept"])))
    partial = client.get(f"/api/v1/privacy/requests/{request['request_id']}", headers=dpo(settings))
    assert partial.json()["status"] == "in_progress"
    assert set(partial.json()["services"]) == {"contacts", "memberships"}
    asyncio.run(fan_in(answer("contacts"), answer("messaging"), answer("consent")))
    done = client.get(f"/api/v1/privacy/requests/{request['request_id']}", headers=dpo(settings))
    body = done.json()
    assert body["status"] == "completed" and body["completed_at"]
    assert [s["service"] for s in body["receipt"]["services"]] == settings.erasure_services
    assert body["receipt"]["kept_for_legal_reasons"] == ["memberships: payments: 1 kept"]
    assert body["receipt"]["key_destroyed_at"] is not None
    # the keys a restore of an older vault backup must destroy again
    assert request["keys_destroyed"] == body["receipt"]["keys_destroyed"] == ["c-paris"]
    # once closed, the request no longer blocks another one
    again = client.post(
        "/api/v1/privacy/requests",
        json={"kind": "erasure", "contact_id": "c-paris"},
        headers=dpo(settings),
    )
    assert again.status_code == 201


T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


def test_clocks_moved_by_a_batch_equal_the_clocks_moved_one_event_at_a_time(isolated_env):
    """The consumer hands retention a whole batch: new people are inserted at once, and a
    batch's later events of the same person (or a person seen before) still move the
    clocks as if each event came alone."""
    settings = ConsentSettings()
    sent = lambda cid, i, at: envelope(  # noqa: E731
        MessageSentV1(message_id=f"m-{cid}-{i}", contact_id=cid, channel="email", sent_at=at)
    )
    granted = envelope(
        ConsentGrantedV1(
            contact_id="b", channel="email", purpose="news", source="form", granted_at=T0
        )
    )
    seen_before = envelope(created("seen"), at=T0 - timedelta(days=30))
    batch = [
        envelope(created("a", OriginKind.rented_file), at=T0 - timedelta(days=2)),
        sent("a", 1, T0),
        sent("a", 2, T0 - timedelta(days=1)),
        sent("b", 1, T0 + timedelta(days=1)),
        granted,
        envelope(created("b"), at=T0 - timedelta(days=5)),
        sent("seen", 1, T0),
        envelope(created("c"), at=T0),
    ]

    def clocks() -> dict[str, dict]:
        return {d.pop("_id"): d for d in query(settings, RETENTION_CLOCKS, {})}

    handle(settings, seen_before, *batch)
    one_by_one = clocks()

    async def as_one_batch() -> None:
        store = Store(settings)
        await store[RETENTION_CLOCKS].delete_many({})
        handlers = retention_handlers(PrivacyStore(store))
        await deliver(store, handlers, seen_before)
        async with store.transaction() as session:
            await handlers["message-sent"](batch, session)
        await store.close()

    asyncio.run(as_one_batch())
    assert clocks() == one_by_one
    assert one_by_one["a"]["messages_sent"] == 2 and one_by_one["seen"]["messages_sent"] == 1
    assert one_by_one["a"]["first_message_at"] == T0 - timedelta(days=1)


def test_retention_sweeps_raise_erasures_when_clocks_run_out_and_audit_them(isolated_env):
    settings = ConsentSettings()
    sent = lambda cid, at: envelope(  # noqa: E731
        MessageSentV1(message_id=f"m-{cid}", contact_id=cid, channel="email", sent_at=at)
    )
    granted = lambda cid, at: envelope(  # noqa: E731
        ConsentGrantedV1(
            contact_id=cid, channel="email", purpose="news", source="reply", granted_at=at
        )
    )
    handle(
        settings,
        # a rented-file prospect who never answered the single message
        envelope(created("silent", OriginKind.rented_file), at=T0 - timedelta(days=2)),
        sent("silent", T0),
        # a rented-file prospect who answered: consent granted
        envelope(created("answered", OriginKind.rented_file), at=T0 - timedelta(days=2)),
        sent("answered", T0),
        granted("answered", T0 + timedelta(days=3)),
        # an ordinary contact, inactive for years; and one with a recent payment-like activity
        envelope(created("dormant"), at=T0 - timedelta(days=3 * 365)),
        envelope(created("active"), at=T0 - timedelta(days=3 * 365)),
        granted("active", T0),
        # events in any order: the message before the contact
        sent("late", T0),
        envelope(created("late", OriginKind.rented_file), at=T0 - timedelta(days=1)),
    )

    async def sweep(now):
        store = Store(settings)
        privacy = PrivacyService(settings, store)
        raised = await privacy.sweep(now)
        await store.close()
        return sorted((r["contact_id"], r["origin"]) for r in raised)

    # one day too early: nothing
    assert asyncio.run(sweep(T0 + timedelta(days=58))) == [
        ("dormant", "retention:inactive-contact")
    ]
    assert asyncio.run(sweep(T0 + timedelta(days=62))) == [
        ("late", "retention:unanswered-prospect"),
        ("silent", "retention:unanswered-prospect"),
    ]
    assert asyncio.run(sweep(T0 + timedelta(days=70))) == []  # never twice
    clocks = {d["_id"]: d for d in query(settings, RETENTION_CLOCKS, {})}
    assert clocks["silent"]["erased"] and clocks["dormant"]["erased"]
    assert not clocks["answered"].get("erased") and not clocks["active"].get("erased")
    requests = query(settings, "privacy_requests", {})
    assert {r["contact_id"] for r in requests} == {"silent", "late", "dormant"}
    assert all(r["recorded_by"] == "retention" and r["kind"] == "erasure" for r in requests)
    audit = query(settings, AUDIT, {"action": "privacy_erasure_requested"})
    assert sorted(a["contact_id"] for a in audit) == ["dormant", "late", "silent"]
    assert {a["detail"]["origin"] for a in audit} == {
        "retention:unanswered-prospect",
        "retention:inactive-contact",
    }
    fanned = query(settings, OUTBOX, {"topic": "erasure-requested"})
    assert sorted(d["envelope"]["data"]["contact_id"] for d in fanned) == [
        "dormant",
        "late",
        "silent",
    ]
