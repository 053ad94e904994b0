"""What the gateway no longer does on every request: read the user from the store, check
the token's signature, sign the identity, write one audit entry per insert."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import jwt
import pytest
from gateway.caches import SignedIdentities, TtlCache
from gateway.security import issue_token
from gateway.service import AccessAudit, GatewayService
from gateway.settings import GatewaySettings
from support import make_identity
from tribune_shared.auth import Role, verify_identity
from tribune_shared.errors import Conflict, Unauthorized
from tribune_shared.group_commit import GroupCommit

SECRET = "unit-test-jwt-secret-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the cache itself


async def test_entries_expire_the_least_recent_go_first_and_none_is_not_kept():
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5, 2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    clock.now += 5
    assert cache.get("a") is None and len(cache) == 1

    async def unknown() -> int | None:
        return None

    assert await cache.get_or_load("x", unknown) is None
    assert cache.get("x") is None


async def test_concurrent_misses_share_one_load_and_an_invalidated_load_is_not_kept():
    cache: TtlCache[str, str] = TtlCache(60, 10)
    loads = 0
    release = asyncio.Event()

    async def load() -> str:
        nonlocal loads
        loads += 1
        await release.wait()
        return f"v{loads}"

    waiting = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert set(await asyncio.gather(*waiting)) == {"v1"} and loads == 1

    cache.invalidate("k")
    release.clear()
    stale = asyncio.create_task(cache.get_or_load("k", load))
    await asyncio.sleep(0)
    cache.invalidate("k")  # the user changed while the store was being read
    release.set()
    assert await stale == "v2"
    assert cache.get("k") is None  # what it read may predate the change


def test_a_signed_identity_is_reused_for_half_its_lifetime_only():
    clock = Clock()
    signed = SignedIdentities(SECRET, 120, clock=clock)
    identity = make_identity("/root/paris/", Role.secretary)
    first = signed(identity)
    assert verify_identity(first, SECRET) == identity
    clock.now += 59
    assert signed(identity) is first
    clock.now += 2
    assert signed(identity) is not first
    other = make_identity("/root/paris/", Role.viewer, user_id=identity.user_id)
    assert verify_identity(signed(other), SECRET).role is Role.viewer


# ---------------------------------------------------------------- the user behind a token


class FakeUsers:
    """The part of GatewayStore the token check and user changes use; counts lookups."""

    def __init__(self, *users: dict[str, Any]) -> None:
        self.users = {u["_id"]: dict(u) for u in users}
        self.lookups = 0

    async def find_user(self, user_id: str) -> dict[str, Any] | None:
        self.lookups += 1
        await asyncio.sleep(0)
        user = self.users.get(user_id)
        return dict(user) if user else None

    async def update_user(self, user_id, scope_path, changes, expected=None):
        user = self.users.get(user_id)
        if user is None or not user["federation_path"].startswith(scope_path):
            return None
        if any(user.get(k) != v for k, v in (expected or {}).items()):
            return None
        user.update(changes)
        return dict(user)


def user(user_id: str, role: str = "secretary") -> dict[str, Any]:
    return {
        "_id": user_id,
        "email": f"{user_id}@tribune.test",
        "role": role,
        "federation_id": "paris",
        "federation_path": "/root/paris/",
        "active": True,
    }


class FakeSessions:
    """The sessions' store, for a deactivation (it ends the user's sessions)."""

    def __init__(self) -> None:
        self.revoked: list[str] = []

    async def revoke_user(self, user_id, now, reason, keep=None) -> int:
        self.revoked.append(user_id)
        return 1


def service_with(users: FakeUsers, **settings: Any) -> GatewayService:
    svc = GatewayService(GatewaySettings(jwt_secret=SECRET, **settings), store=None)
    svc.data = users
    svc.sessions.data = FakeSessions()
    return svc


async def test_the_user_is_read_once_per_ttl_not_once_per_request(monkeypatch):
    users = FakeUsers(user("u1"))
    svc = service_with(users, user_cache_seconds=5)
    clock = Clock()
    monkeypatch.setattr(svc.users, "clock", clock)
    token = issue_token("u1", SECRET, 900).token
    identities = await asyncio.gather(*(svc.identity_for_token(token) for _ in range(50)))
    assert {i.user_id for i in identities} == {"u1"}
    assert users.lookups == 1  # one shared lookup, not fifty
    await svc.identity_for_token(token)
    assert users.lookups == 1

    # deactivated elsewhere (another replica, the store directly): refused within the TTL
    users.users["u1"]["active"] = False
    clock.now += 5
    with pytest.raises(Unauthorized):
        await svc.identity_for_token(token)
    assert users.lookups == 2
    with pytest.raises(Unauthorized):  # a refusal is not cached as an answer
        await svc.identity_for_token(token)
    assert users.lookups == 3


async def test_a_change_made_on_this_replica_takes_effect_at_once():
    users = FakeUsers(user("admin", "admin"), user("u1"))
    svc = service_with(users, user_cache_seconds=300)
    admin = make_identity("/root/", Role.admin, user_id="admin")
    token = issue_token("u1", SECRET, 900).token
    assert (await svc.identity_for_token(token)).role is Role.secretary
    await svc.update_user(admin, "u1", role=Role.viewer)
    assert (await svc.identity_for_token(token)).role is Role.viewer
    await svc.update_user(admin, "u1", active=False)
    with pytest.raises(Unauthorized):
        await svc.identity_for_token(token)
    with pytest.raises(Conflict):
        await svc.update_user(admin, "admin", active=False)


async def test_without_a_cache_every_request_reads_the_user():
    users = FakeUsers(user("u1"))
    svc = service_with(users, user_cache_seconds=0)
    token = issue_token("u1", SECRET, 900).token
    for _ in range(3):
        await svc.identity_for_token(token)
    assert users.lookups == 3


async def test_a_remembered_token_is_still_refused_once_expired(monkeypatch):
    import gateway.service as service_module

    svc = service_with(FakeUsers(user("u1")))
    token = issue_token("u1", SECRET, 60).token
    await svc.identity_for_token(token)
    later = service_module.time.time() + 61
    monkeypatch.setattr(service_module.time, "time", lambda: later)
    with pytest.raises(Unauthorized):
        await svc.identity_for_token(token)
    with pytest.raises(Unauthorized):
        await svc.identity_for_token("not-a-token")


# ---------------------------------------------------------------- the audit's group commit


class SlowInserts:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict]] = []
        self.fail = fail

    async def __call__(self, docs: list[dict]) -> None:
        await asyncio.sleep(0.01)  # a store round trip: entries arriving meanwhile wait
        self.batches.append(docs)
        if self.fail:
            raise OSError("store unreachable")


async def test_concurrent_entries_share_one_insert_and_each_waits_for_its_own():
    inserts = SlowInserts()
    commit = GroupCommit(inserts, max_batch=50)
    await asyncio.gather(*(commit.write({"n": n}) for n in range(120)))
    sizes = [len(b) for b in inserts.batches]
    assert sum(sizes) == 120 and max(sizes) <= 50
    assert len(sizes) <= 4  # the first alone, then the rest in batches of at most 50
    assert sorted(d["n"] for b in inserts.batches for d in b) == list(range(120))
    await commit.close()
    with pytest.raises(RuntimeError):
        await commit.write({"n": -1})


async def test_an_interval_gathers_entries_that_arrive_within_it():
    inserts = SlowInserts()
    commit = GroupCommit(inserts, max_batch=100, interval=0.05)

    async def later(n: int) -> None:
        await asyncio.sleep(0.005 * n)
        await commit.write({"n": n})

    await asyncio.gather(*(later(n) for n in range(5)))
    assert [len(b) for b in inserts.batches] == [5]


async def test_every_writer_of_a_batch_that_could_not_be_written_is_told():
    inserts = SlowInserts(fail=True)
    commit = GroupCommit(inserts, max_batch=50)
    results = await asyncio.gather(
        *(commit.write({"n": n}) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)
    inserts.fail = False
    await commit.write({"n": 10})  # the next batch is written again


async def test_the_access_audit_records_through_one_batched_insert(monkeypatch):
    audit = AccessAudit(store=_NoStore(), batch_max_entries=100)
    batches: list[list[dict]] = []

    async def append_many(docs: list[dict]) -> None:
        await asyncio.sleep(0.01)
        batches.append(docs)

    monkeypatch.setattr(audit.writer, "write_batch", append_many)
    identity = make_identity("/root/paris/", Role.secretary)
    ids = await asyncio.gather(
        *(
            audit.record(identity, "GET", f"/api/v1/contacts/c{n}", {}, 200, "203.0.113.9", "ua")
            for n in range(30)
        )
    )
    stored = [d for b in batches for d in b]
    assert len(batches) <= 2 and sorted(d["_id"] for d in stored) == sorted(ids)
    assert {d["contact_id"] for d in stored} == {f"c{n}" for n in range(30)}
    assert {(d["action"], d["ip"]) for d in stored} == {("viewed", "203.0.113.0/24")}


class _NoStore:
    def __getitem__(self, name: str) -> None:
        return None


class GatedInserts:
    """A store whose batch writes wait until the test lets them through."""

    def __init__(self) -> None:
        self.batches: list[list[dict]] = []
        self.gate = asyncio.Event()

    async def __call__(self, docs: list[dict]) -> None:
        await self.gate.wait()
        self.batches.append(docs)


async def test_a_submitted_entry_is_queued_without_waiting_for_the_store():
    inserts = GatedInserts()
    commit = GroupCommit(inserts, max_batch=10, max_pending=100)
    # the store does not answer: submit still returns at once
    await asyncio.wait_for(asyncio.gather(*(commit.submit({"n": n}) for n in range(30))), 1)
    assert inserts.batches == []
    inserts.gate.set()
    await asyncio.wait_for(commit.drained(), 1)  # a reader waits for what was queued
    assert sorted(d["n"] for b in inserts.batches for d in b) == list(range(30))


async def test_past_the_pending_bound_a_submitter_waits_for_its_entry():
    inserts = GatedInserts()
    commit = GroupCommit(inserts, max_batch=10, max_pending=5)
    for n in range(5):
        await asyncio.wait_for(commit.submit({"n": n}), 1)
    sixth = asyncio.create_task(commit.submit({"n": 5}))
    await asyncio.sleep(0.05)
    assert not sixth.done()  # the queue is full: it waits like a write
    inserts.gate.set()
    await asyncio.wait_for(sixth, 1)
    await commit.drained()
    assert sorted(d["n"] for b in inserts.batches for d in b) == list(range(6))


async def test_a_failed_batch_of_submitted_entries_is_logged_not_raised():
    inserts = SlowInserts(fail=True)
    commit = GroupCommit(inserts, max_batch=10)
    await commit.submit({"n": 1})
    await commit.drained()  # settled (failed), and nobody is left waiting
    assert [len(b) for b in inserts.batches] == [1]


async def test_a_write_is_answered_before_its_audit_entry_is_stored_a_read_after():
    audit = AccessAudit(store=_NoStore(), batch_max_entries=100)
    inserts = GatedInserts()
    audit.writer.write_batch = inserts
    identity = make_identity("/root/paris/", Role.secretary)
    await asyncio.wait_for(
        audit.record(identity, "POST", "/api/v1/contacts", {}, 201, None, None, wait=False), 1
    )
    read = asyncio.create_task(
        audit.record(identity, "GET", "/api/v1/contacts/c1", {}, 200, None, None)
    )
    await asyncio.sleep(0.05)
    assert not read.done()  # a read waits until its entry is stored
    inserts.gate.set()
    await asyncio.wait_for(read, 1)
    assert [d["action"] for b in inserts.batches for d in b] == ["changed", "viewed"]


async def test_a_token_issued_before_the_password_changed_is_refused():
    from tribune_shared.events import utcnow

    users = FakeUsers(user("u1"))
    svc = service_with(users, user_cache_seconds=300)
    current = issue_token("u1", SECRET, 900).token
    claims = jwt.decode(current, options={"verify_signature": False})
    old = jwt.encode({**claims, "iat": claims["iat"] - 10}, SECRET, algorithm="HS256")
    await svc.identity_for_token(old)
    # the password changed 5 s ago (on any replica: the user is read again within the TTL;
    # here at once)
    users.users["u1"]["tokens_after"] = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    svc.users.invalidate("u1")
    with pytest.raises(Unauthorized):
        await svc.identity_for_token(old)
    assert (await svc.identity_for_token(current)).user_id == "u1"
