"""`tribune backup` and `tribune restore` against real Kafka and the real store, with the
real APIs and workers of contacts, consent, memberships and messaging (in this process),
the command run as an operator runs it (the installed `tribune`, --json).

Back up while the platform runs; the DPO erases a person through consent's API (the
erasure fans out to every service's handlers); stop the platform; restore the backup
(which held the person): right after the restore their documents are back but their key
is destroyed again; once the workers, sent back to the backup's offsets, have caught up,
the person is gone from every store, no topic replay opens their sealed fields, and the
other person is intact. A corrupted backup, a restore over data without --force, and a
restore while workers run are refused and change nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from consent.settings import ConsentSettings
from contacts.settings import ContactsSettings
from memberships.settings import MembershipsSettings
from messaging.settings import MessagingSettings
from support import identity_headers, make_identity, read_all_topics, wait_for
from tribune_devstack.stack import find_free_ports
from tribune_shared.auth import Role
from tribune_shared.events import Envelope, decode
from tribune_shared.store import Store
from tribune_shared.vault import KeyVault

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
SERVICES = ("contacts", "consent", "memberships", "messaging")
TRIBUNE = Path(sys.executable).with_name("tribune")


class NullMailer:
    async def send(self, message) -> None:
        return None


class Platform:
    """The four services' workers and the contacts and consent APIs, started and stopped
    as a whole (a restore needs them stopped)."""

    def __init__(self) -> None:
        self.settings = {
            "contacts": ContactsSettings(),
            "consent": ConsentSettings(),
            "memberships": MembershipsSettings(),
            "messaging": MessagingSettings(),
        }
        self.http: dict[str, httpx.AsyncClient] = {}
        self._workers: list[Any] = []
        self._tasks: list[asyncio.Task] = []
        self._stack: AsyncExitStack | None = None

    def headers(self, role: Role = Role.secretary) -> dict[str, str]:
        secret = self.settings["consent"].identity_secret
        return identity_headers(make_identity(PARIS, role), secret)

    async def start(self) -> None:
        from consent.main import create_app as consent_app
        from consent.worker import build_worker as consent_worker
        from contacts.main import create_app as contacts_app
        from contacts.worker import build_worker as contacts_worker
        from memberships.worker import build_worker as memberships_worker
        from messaging.worker import build_worker as messaging_worker

        self._workers = [
            contacts_worker(self.settings["contacts"]),
            consent_worker(self.settings["consent"]),
            memberships_worker(self.settings["memberships"]),
            messaging_worker(self.settings["messaging"]),
        ]
        self._tasks = [asyncio.create_task(w.run()) for w in self._workers]
        apps = {
            "contacts": contacts_app(self.settings["contacts"]),
            "consent": consent_app(self.settings["consent"]),
        }
        self._stack = AsyncExitStack()
        for name, app in apps.items():
            await self._stack.enter_async_context(app.router.lifespan_context(app))
            self.http[name] = await self._stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            )

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        for worker in self._workers:
            worker.request_stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._workers, self._tasks = [], []


@pytest.fixture
async def platform(isolated_env, monkeypatch):
    for svc, port in zip(SERVICES, find_free_ports(len(SERVICES)), strict=True):
        monkeypatch.setenv(f"{svc.upper()}_WORKER_PORT", str(port))
    monkeypatch.setenv("CONSENT_RETENTION_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("TRIBUNE_OUTBOX_POLL_INTERVAL_SECONDS", "0.02")
    p = Platform()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


# ---------------------------------------------------------------- helpers


@dataclass
class Person:
    id: str
    email: str
    phone: str
    given_name: str
    family_name: str

    @property
    def secrets(self) -> list[str]:
        return [self.email, self.phone, self.given_name, self.family_name]


async def tribune(*args: str, expect: int = 0) -> dict[str, Any]:
    done = await asyncio.to_thread(
        subprocess.run,
        [str(TRIBUNE), *args, "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    return json.loads(done.stdout)


async def eventually(call, accept, timeout: float = 60.0):
    async def probe():
        result = await call()
        return result if accept(result) else None

    return await wait_for(probe, timeout=timeout, interval=0.1)


async def new_person(p: Platform) -> Person:
    tag = uuid.uuid4().hex[:10]
    digits = f"{int(tag, 16) % 10**8:08d}"
    body = {
        "given_name": f"Prenom{tag}",
        "family_name": f"Nom{tag}",
        "email": f"person.{tag}@example.fr",
        "phone": f"0612{digits[:6]}",
        "origin": {"kind": "web_form", "detail": "petition"},
    }
    r = await p.http["contacts"].post("/api/v1/contacts", json=body, headers=p.headers())
    assert r.status_code == 201, r.text
    c = r.json()
    person = Person(c["id"], c["email"], c["phone"], body["given_name"], body["family_name"])
    grant = {"channel": "email", "purpose": "news", "source": "web_form", "reference": "f-1"}
    await eventually(
        lambda: p.http["consent"].post(
            f"/api/v1/consents/{person.id}/grant", json=grant, headers=p.headers()
        ),
        lambda r: r.status_code == 200,
    )
    return person


async def databases(settings) -> dict[str, str]:
    """Every document of every database of this test's platform, as text (one per db)."""
    store = Store(settings)
    out = {}
    try:
        for name in sorted(await store.client.list_database_names()):
            if not name.startswith(settings.database_prefix):
                continue
            db = store.client[name]
            parts = []
            for coll in sorted(await db.list_collection_names()):
                async for doc in db[coll].find({}).sort("_id", 1):
                    parts.append(f"{coll}: {doc!r}")
            out[name] = "\n".join(parts)
    finally:
        await store.close()
    return out


def found(text: str | bytes, person: Person) -> list[str]:
    haystack = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [s for s in person.secrets if s in haystack]


async def caught_up() -> bool:
    document = await tribune("lag")
    return bool(document["groups"]) and document["total_lag"] == 0


# ---------------------------------------------------------------- the test


async def test_a_restore_keeps_an_erasure_made_after_the_backup(platform, tmp_path):
    p = platform
    settings = p.settings["consent"]
    erased, kept = await new_person(p), await new_person(p)
    await eventually(caught_up, bool)

    backup = tmp_path / "backup"
    taken = await tribune("backup", str(backup))
    roles = {d["role"]: d for d in taken["databases"]}
    assert set(SERVICES) | {"vault"} <= set(roles)
    assert roles["contacts"]["collections"]["contacts"] >= 2
    assert roles["vault"]["collections"]["data_keys"] >= 2
    assert "erasure-requested" in taken["kafka"]["end_offsets"]
    assert any(g.endswith("consent.urgent") for g in taken["kafka"]["group_offsets"])
    assert (await tribune("restore", str(backup), "--verify"))["verified"] is True

    # The DPO erases one person through consent's API; every service answers.
    dpo = p.headers(Role.dpo)
    r = await p.http["consent"].post(
        "/api/v1/privacy/requests", json={"kind": "erasure", "contact_id": erased.id}, headers=dpo
    )
    assert r.status_code == 201, r.text
    request_id = r.json()["request_id"]
    await eventually(
        lambda: p.http["consent"].get(f"/api/v1/privacy/requests/{request_id}", headers=dpo),
        lambda r: r.status_code == 200 and r.json()["status"] == "completed",
    )
    await eventually(caught_up, bool)

    # A restore while the workers run is refused.
    busy = await tribune("restore", str(backup), "--force", "--yes", expect=1)
    assert "workers are running" in busy["error"]

    await p.stop()
    before = await databases(settings)
    assert found("\n".join(before.values()), erased) == []

    # A damaged backup is refused and changes nothing.
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    target = damaged / "contacts" / "contacts.bson.gz"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    refused = await tribune("restore", str(damaged), "--force", "--yes", expect=1)
    assert "contacts/contacts.bson.gz: checksum mismatch" in refused["error"]
    # ...and so is a restore over data without --force
    occupied = await tribune("restore", str(backup), "--yes", expect=1)
    assert "--force" in occupied["error"]
    assert await databases(settings) == before

    # The restore: the backup held the person, so their documents are back for now, but
    # their key is destroyed again before any worker starts.
    done = await tribune("restore", str(backup), "--force", "--yes")
    assert [e["contact_id"] for e in done["erasures_since_backup"]] == [erased.id]
    assert done["erasures_since_backup"][0]["request_id"] == request_id
    assert done["keys_destroyed_again"] >= 1
    assert done["events_lost_to_retention"] == 0
    restored = await databases(settings)
    assert erased.email in restored[f"{settings.database_prefix}contacts"]
    vault = KeyVault(settings)
    try:
        assert await vault.key_for(erased.id) is None
        assert await vault.key_for(kept.id) is not None
    finally:
        await vault.close()
    journal = await asyncio.to_thread(Path(done["journal"]).read_text)
    assert erased.id in journal

    # The workers resume at the backup's offsets and apply the erasure again.
    await p.start()
    await eventually(caught_up, bool, timeout=120)
    r = await p.http["contacts"].get(f"/api/v1/contacts/{erased.id}", headers=p.headers())
    assert r.status_code == 404
    r = await p.http["contacts"].get(f"/api/v1/contacts/{kept.id}", headers=p.headers())
    assert r.status_code == 200 and r.json()["email"] == kept.email

    after = await databases(settings)
    everything = "\n".join(after.values())
    assert found(everything, erased) == [], [
        line[:300] for line in everything.splitlines() if found(line, erased)
    ]
    for svc in SERVICES:  # each service still holds the other person
        assert kept.id in after[f"{settings.database_prefix}{svc}"], svc

    # No topic replay opens the person's sealed fields: their key stays destroyed.
    vault = KeyVault(settings)
    try:
        topics = await read_all_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
        raw_values, decoded = [], []
        for records in topics.values():
            for record in records:
                raw_values.append(record.value)
                try:
                    envelope = await vault.open(Envelope.from_bytes(record.value))
                    decoded.append(json.dumps(decode(envelope).model_dump(mode="json")))
                except Exception as exc:  # a foreign record: its raw bytes are checked
                    decoded.append(repr(exc))
        assert found(b"\n".join(raw_values), erased) == []
        assert found("\n".join(decoded), erased) == []
        assert kept.email in "\n".join(decoded)  # the vault still opens the other's
    finally:
        await vault.close()


async def test_a_kek_rotation_moves_every_key_and_names_the_old_kek_to_drop(
    isolated_env, monkeypatch, tmp_path
):
    from tribune_shared.vault import LocalKeks

    old, new = "o" * 40, "n" * 40
    monkeypatch.setenv("TRIBUNE_VAULT_KEK", old)
    settings = ConsentSettings()
    subjects = [f"c-{i}" for i in range(3)]
    vault = KeyVault(settings)
    try:
        keys = await vault.keys_for(subjects, create=True)
    finally:
        await vault.close()
    old_id, new_id = LocalKeks(old).current_id, LocalKeks(new).current_id

    # every process runs with the new KEK, the old one still unwraps
    monkeypatch.setenv("TRIBUNE_VAULT_KEK", new)
    monkeypatch.setenv("TRIBUNE_VAULT_PREVIOUS_KEKS", json.dumps([old]))
    status = await tribune("vault", "status")
    assert status["current_kek"] == new_id
    assert status["left_under_old_keks"] == {old_id: 3}
    rotation = await tribune("vault", "rotate")
    assert (rotation["rewrapped"], rotation["done"]) == (3, True)
    assert rotation["droppable_keks"] == [old_id] and rotation["left_by_kek"] == {}

    # the old KEK dropped: every key still opens, with the new one alone
    monkeypatch.delenv("TRIBUNE_VAULT_PREVIOUS_KEKS")
    vault = KeyVault(ConsentSettings())
    try:
        assert await vault.keys_for(subjects) == keys
    finally:
        await vault.close()
    assert (await tribune("vault", "status"))["wrapped_by_kek"] == {new_id: 3}

    # a tombstone list destroys the keys it names (again)
    listed = tmp_path / "tombstones.jsonl"
    listed.write_text(json.dumps({"subject": subjects[0]}) + "\n")
    outcome = await tribune("vault", "redestroy", str(listed))
    assert outcome == {"listed": 1, "revived_and_destroyed": 1}
    destroyed = await tribune("vault", "destroyed")
    assert [k["subject"] for k in destroyed["keys"]] == [subjects[0]]
