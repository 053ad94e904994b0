"""A federation renamed or moved, over the real store: the gateway's PATCH (the tree, its
users, one federation-updated per changed federation, in one transaction) and each
service's worker re-pathing what it holds (tribune_shared.federations)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from gateway.settings import GatewaySettings
from gateway.store import USERS
from support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    add_federation,
    add_user,
    audit_entries,
    bearer,
    read_collection,
    run_with_store,
)
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, decode, new_envelope
from tribune_shared.events.contracts import (
    ContactCreatedV1,
    ContactState,
    FederationCreatedV1,
    FederationUpdatedV1,
)
from tribune_shared.federations import (
    FEDERATION_MOVES,
    FEDERATIONS,
    FederationDirectory,
    current_paths,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- gateway


def updated_events(settings: GatewaySettings) -> list[FederationUpdatedV1]:
    docs = read_collection(settings, OUTBOX, {"envelope.type": "federation-updated"})
    events = [decode(Envelope.model_validate(d["envelope"])) for d in docs]
    return [e for e in events if isinstance(e, FederationUpdatedV1)]


def test_a_move_takes_the_subtree_and_its_users_and_says_so_for_each(gateway_api) -> None:
    client, settings = gateway_api
    admin = bearer(client, ADMIN_EMAIL, ADMIN_PASSWORD)

    def create(name: str, parent: str | None = None) -> dict[str, Any]:
        return add_federation(client, admin, name, parent)

    a, c = create("A"), create("C")
    b = create("B", a["id"])
    d = create("D", b["id"])
    add_user(client, admin, "b@x.org", "admin", b["id"])
    b_admin = bearer(client, "b@x.org", PASSWORD)

    r = client.patch(f"/api/v1/federations/{b['id']}", json={"parent_id": c["id"]}, headers=admin)
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["path"] == f"{c['path']}{b['id']}/"
    assert (moved["parent_id"], moved["version"]) == (c["id"], 2)
    tree = {f["id"]: f["path"] for f in client.get("/api/v1/federations", headers=admin).json()}
    assert tree[d["id"]] == f"{c['path']}{b['id']}/{d['id']}/"
    assert tree[a["id"]] == a["path"]
    (user,) = read_collection(settings, USERS, {"email": "b@x.org"})
    assert user["federation_path"] == moved["path"]
    # the B administrator's next request already carries the new path
    assert client.get("/api/v1/me", headers=b_admin).json()["federation_path"] == moved["path"]

    events = {e.federation_id: e for e in updated_events(settings)}
    assert set(events) == {b["id"], d["id"]}
    assert (events[b["id"]].previous_path, events[b["id"]].path) == (b["path"], moved["path"])
    assert (events[d["id"]].previous_path, events[d["id"]].path) == (d["path"], tree[d["id"]])
    assert events[d["id"]].version == 2

    # the same request again changes nothing and says nothing
    r = client.patch(f"/api/v1/federations/{b['id']}", json={"parent_id": c["id"]}, headers=admin)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert len(updated_events(settings)) == 2

    # a rename: one event, same path, next version
    r = client.patch(f"/api/v1/federations/{b['id']}", json={"name": "  B   bis "}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "B bis" and r.json()["version"] == 3
    renamed = [e for e in updated_events(settings) if e.version == 3]
    assert [(e.name, e.path, e.previous_path) for e in renamed] == [
        ("B bis", moved["path"], moved["path"])
    ]

    entries = audit_entries(settings, {"method": "PATCH"})
    assert {"federation_id": b["id"], "parent_id": c["id"]} in [e["changes"] for e in entries]


def test_a_move_the_tree_forbids_is_refused_and_changes_nothing(gateway_api) -> None:
    client, settings = gateway_api
    admin = bearer(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    ids = {}
    for name, parent in (("A", None), ("B", "A"), ("D", "B"), ("C", None), ("E", "C")):
        body = {"name": name, **({"parent_id": ids[parent]} if parent else {})}
        ids[name] = client.post("/api/v1/federations", json=body, headers=admin).json()["id"]
    root = client.get("/api/v1/me", headers=admin).json()["federation_id"]
    client.post(
        "/api/v1/users",
        json={"email": "b@x.org", "password": PASSWORD, "role": "admin", "federation_id": ids["B"]},
        headers=admin,
    )
    b_admin = bearer(client, "b@x.org", PASSWORD)
    before = read_collection(settings, FEDERATIONS)

    def patch(who: dict[str, str], fid: str, body: dict[str, Any]) -> tuple[int, Any]:
        r = client.patch(f"/api/v1/federations/{fid}", json=body, headers=who)
        detail = r.json().get("detail")
        return r.status_code, detail[0]["field"] if isinstance(detail, list) else None

    assert patch(admin, ids["B"], {"parent_id": ids["B"]}) == (422, "parent_id")
    assert patch(admin, ids["B"], {"parent_id": ids["D"]}) == (422, "parent_id")
    assert patch(admin, root, {"parent_id": ids["A"]}) == (422, "parent_id")
    assert patch(b_admin, ids["B"], {"parent_id": ids["D"]}) == (422, "parent_id")
    # out of the caller's subtree: not found, the federation or the new parent
    assert patch(b_admin, ids["A"], {"name": "X"}) == (404, "federation_id")
    assert patch(b_admin, ids["D"], {"parent_id": ids["C"]}) == (404, "parent_id")
    assert patch(admin, "nope", {"name": "X"}) == (404, "federation_id")
    assert client.get(f"/api/v1/federations/{ids['A']}", headers=b_admin).status_code == 404
    # a sibling's name under the new parent
    assert patch(admin, ids["E"], {"name": "b"}) == (200, None)
    assert patch(admin, ids["B"], {"parent_id": ids["C"]}) == (409, "name")
    assert (
        client.patch(
            f"/api/v1/federations/{ids['B']}", json={"name": ""}, headers=admin
        ).status_code
        == 422
    )
    assert (
        client.patch(
            f"/api/v1/federations/{ids['B']}", json={"path": "/x/"}, headers=admin
        ).status_code
        == 422
    )
    after = {f["_id"]: f for f in read_collection(settings, FEDERATIONS)}
    assert {f["_id"]: f["path"] for f in before} == {k: v["path"] for k, v in after.items()}
    assert len(updated_events(settings)) == 1  # E's rename only


# ---------------------------------------------------------------- services

#: the tree the services' tests project: B (with D below) moves from A to C; B1 is a
#: sibling whose path shares B's as a string prefix
A, B, D, B1, C = "/r/a/", "/r/a/b/", "/r/a/b/d/", "/r/a/b1/", "/r/c/"
NEW_B, NEW_D = "/r/c/b/", "/r/c/b/d/"


def created(path: str) -> Envelope:
    parts = path.strip("/").split("/")
    event = FederationCreatedV1(
        federation_id=parts[-1],
        parent_id=parts[-2] if len(parts) > 1 else None,
        name=parts[-1],
        path=path,
    )
    return new_envelope(event, producer="gateway", federation_id=parts[-1], federation_path=path)


def updated(fid: str, path: str, previous: str, parent: str, version: int = 2) -> Envelope:
    event = FederationUpdatedV1(
        federation_id=fid,
        parent_id=parent,
        name=fid,
        path=path,
        version=version,
        previous_path=previous,
    )
    return new_envelope(event, producer="gateway", federation_id=fid, federation_path=path)


def service_settings(name: str) -> tuple[ServiceSettings, Callable[..., Any]]:
    if name == "contacts":
        from contacts.settings import ContactsSettings
        from contacts.worker import build_worker

        return ContactsSettings(), build_worker
    if name == "consent":
        from consent.settings import ConsentSettings
        from consent.worker import build_worker

        return ConsentSettings(), build_worker
    if name == "memberships":
        from memberships.settings import MembershipsSettings
        from memberships.worker import build_worker

        return MembershipsSettings(), build_worker
    from messaging.settings import MessagingSettings
    from messaging.worker import build_worker

    return MessagingSettings(), build_worker


async def worker_directory(settings, build_worker, store: Store) -> FederationDirectory:
    """The directory the service's real worker registers for federation-updated (with its
    list of collections), on the test's store."""
    worker = build_worker(settings)
    try:
        for consumer in worker.consumers:
            steps = consumer.steps.get("federation-updated")
            if steps:
                registered = steps[0].__self__
                return FederationDirectory(store, registered.repath, settings)
        raise AssertionError("no federation-updated handler")
    finally:
        await worker.store.close()


async def apply(store: Store, directory: FederationDirectory, *envelopes: Envelope) -> None:
    for envelope in envelopes:
        async with store.transaction() as session:
            await directory.on_federation_event(envelope, session)


@pytest.mark.parametrize("service", ["contacts", "consent", "memberships", "messaging"])
def test_each_service_re_paths_what_it_holds(isolated_env, monkeypatch, service) -> None:
    monkeypatch.setenv("TRIBUNE_FEDERATION_REPATH_SETTLE_SECONDS", "0")
    monkeypatch.setenv("TRIBUNE_FEDERATION_REPATH_BATCH_SIZE", "2")  # several chunks
    settings, build_worker = service_settings(service)
    assert settings.federation_repath_settle_seconds == 0

    async def work(store: Store) -> None:
        directory = await worker_directory(settings, build_worker, store)
        collections = [f.collection for f in directory.repath]
        assert "contacts" in collections  # its projection of people, wherever it is
        await apply(store, directory, *(created(p) for p in (A, B, D, B1, C)))
        for name in collections:
            await store[name].insert_many(
                [{"federation_path": p, "seeded": True} for p in (A, B, B, D, B1, C)]
            )

        move = updated("b", NEW_B, B, "c")
        await apply(store, directory, move)
        # the projection moved at once, descendants included
        paths = {d["_id"]: d["path"] async for d in store[FEDERATIONS].find()}
        assert (paths["b"], paths["d"], paths["b1"]) == (NEW_B, NEW_D, B1)
        assert await directory.run_moves() == 3 * len(collections)

        for name in collections:
            held = sorted([d["federation_path"] async for d in store[name].find({"seeded": True})])
            assert held == sorted([A, NEW_B, NEW_B, NEW_D, B1, C]), name
        (job,) = await directory.moves("b")
        assert job["state"] == "done" and job["moved_total"] == 3 * len(collections)

        # redelivery, D's own event (its path already follows), an older event: nothing
        await apply(store, directory, move, updated("d", NEW_D, D, "b"), created(B))
        assert await directory.run_moves() == 0
        assert len(await store[FEDERATION_MOVES].find().to_list()) == 1
        assert (await store[FEDERATIONS].find_one({"_id": "b"}))["path"] == NEW_B

    run_with_store(settings, work)


def test_a_late_event_and_a_late_write_land_at_the_new_path(isolated_env) -> None:
    """An event produced before the move (Kafka keeps its old path) is placed where the
    federation is now; a write of the old path after the move is swept while the job
    settles."""
    from consent.settings import ConsentSettings
    from consent.worker import build_worker

    settings = ConsentSettings()
    assert settings.federation_repath_settle_seconds > 0

    async def work(store: Store) -> None:
        directory = await worker_directory(settings, build_worker, store)
        await apply(store, directory, *(created(p) for p in (A, B, D, C)))
        await apply(store, directory, updated("b", NEW_B, B, "c"))
        await directory.run_moves()

        late = new_envelope(
            ContactCreatedV1(contact_id="p1", contact_version=1, contact=ContactState()),
            producer="contacts",
            federation_id="d",
            federation_path=D,
        )
        async with store.transaction() as session:
            placed = await current_paths(store, [late], session)
            await ContactDirectory(store).on_contact_events(placed, session)
        assert (await store["contacts"].find_one({"_id": "p1"}))["federation_path"] == NEW_D

        await store["contacts"].insert_one({"_id": "p2", "federation_path": D})
        await directory.run_moves()
        assert (await store["contacts"].find_one({"_id": "p2"}))["federation_path"] == NEW_D
        (job,) = await directory.moves("b")
        assert job["state"] == "running"  # still settling: it keeps sweeping

    run_with_store(settings, work)


def test_concurrent_moves_never_make_a_cycle(gateway_api) -> None:
    """B under C and C under B at once: one wins, the other is refused."""
    client, settings = gateway_api
    admin = bearer(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    b = client.post("/api/v1/federations", json={"name": "B"}, headers=admin).json()
    c = client.post("/api/v1/federations", json={"name": "C"}, headers=admin).json()

    async def both() -> list[int]:
        from gateway.federations.service import FederationService
        from support import make_identity
        from tribune_shared.errors import DomainError

        me = client.get("/api/v1/me", headers=admin).json()
        identity = make_identity(me["federation_path"])
        store = Store(settings)
        svc = FederationService(store)

        async def move(fid: str, parent: str) -> int:
            try:
                await svc.update(identity, fid, parent_id=parent)
                return 200
            except DomainError as exc:
                return exc.status_code

        try:
            return await asyncio.gather(move(b["id"], c["id"]), move(c["id"], b["id"]))
        finally:
            await store.close()

    codes = asyncio.run(both())
    assert sorted(codes) == [200, 422]
    paths = [f["path"] for f in read_collection(settings, FEDERATIONS)]
    assert all(p.count(b["id"]) <= 1 and p.count(c["id"]) <= 1 for p in paths)
