"""Erasure over real Kafka and the real store, through the real APIs, workers and handlers
of contacts, consent, memberships and messaging (in this process): the fan-out, the
receipt, and finality: afterwards the person's email, phone and names are in no store
and in no topic, and replaying every topic into fresh consumers does not bring them back.
The person is also a duplicate merged into them before: what was sealed under that
contact's own key stays unreadable too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from tribune_shared.bus import EventConsumer, EventPublisher
from tribune_shared.events import Envelope, decode
from tribune_shared.store import Store
from tribune_shared.vault import KeyVault
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
SERVICES = ("contacts", "consent", "memberships", "messaging")


class NullMailer:
    """Messaging hands mails to it (the SMTP side is tested elsewhere)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message) -> None:
        self.sent.append(message)


@dataclass
class Platform:
    http: dict[str, httpx.AsyncClient]
    settings: dict[str, Any]
    env: dict[str, str]

    def headers(self, role: Role = Role.secretary, path: str = PARIS) -> dict[str, str]:
        secret = self.settings["consent"].identity_secret
        return identity_headers(make_identity(path, role), secret)


@pytest.fixture
async def platform(isolated_env, monkeypatch):
    from consent.main import create_app as consent_app
    from consent.worker import build_worker as consent_worker
    from contacts.main import create_app as contacts_app
    from contacts.worker import build_worker as contacts_worker
    from memberships.main import create_app as memberships_app
    from memberships.worker import build_worker as memberships_worker
    from messaging.main import create_app as messaging_app
    from messaging.worker import build_worker as messaging_worker

    for svc, port in zip(SERVICES, find_free_ports(len(SERVICES)), strict=True):
        monkeypatch.setenv(f"{svc.upper()}_WORKER_PORT", str(port))
    monkeypatch.setenv("CONSENT_RETENTION_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("TRIBUNE_OUTBOX_POLL_INTERVAL_SECONDS", "0.02")
    settings = {
        "contacts": ContactsSettings(),
        "consent": ConsentSettings(),
        "memberships": MembershipsSettings(),
        "messaging": MessagingSettings(),
    }
    workers = [
        contacts_worker(settings["contacts"]),
        consent_worker(settings["consent"]),
        memberships_worker(settings["memberships"]),
        messaging_worker(settings["messaging"]),
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    apps = {
        "contacts": contacts_app(settings["contacts"]),
        "consent": consent_app(settings["consent"]),
        "memberships": memberships_app(settings["memberships"]),
        "messaging": messaging_app(settings["messaging"], mailer=NullMailer()),
    }
    try:
        async with AsyncExitStack() as stack:
            http = {}
            for svc, app in apps.items():
                await stack.enter_async_context(app.router.lifespan_context(app))
                http[svc] = await stack.enter_async_context(
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
                )
            yield Platform(http, settings, dict(isolated_env))
    finally:
        for w in workers:
            w.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)


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
        """What must vanish: email (as typed and stored), phone (E.164), names."""
        return [self.email, self.email.lower(), self.phone, self.given_name, self.family_name]


async def eventually(call, accept, timeout: float = 30.0):
    async def probe():
        result = await call()
        return result if accept(result) else None

    return await wait_for(probe, timeout=timeout, interval=0.05)


async def new_person(p: Platform) -> Person:
    tag = uuid.uuid4().hex[:10]
    digits = f"{int(tag, 16) % 10**8:08d}"
    body = {
        "given_name": f"Prenom{tag}",
        "family_name": f"Nom{tag}",
        "email": f"person.{tag}@example.fr",
        "phone": f"0612{digits[:6]}",  # 06 12: an assigned mobile range
        "origin": {"kind": "web_form", "detail": "petition"},
    }
    r = await p.http["contacts"].post("/api/v1/contacts", json=body, headers=p.headers())
    assert r.status_code == 201, r.text
    c = r.json()
    return Person(c["id"], c["email"], c["phone"], body["given_name"], body["family_name"])


async def grant(p: Platform, person: Person) -> None:
    body = {"channel": "email", "purpose": "news", "source": "web_form", "reference": "form-1"}
    await eventually(
        lambda: p.http["consent"].post(
            f"/api/v1/consents/{person.id}/grant", json=body, headers=p.headers()
        ),
        lambda r: r.status_code == 200,
    )


async def pay(p: Platform, person: Person, purpose: str, cents: int) -> None:
    payload = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{uuid.uuid4().hex}",
        "contact_id": person.id,
        "amount_cents": cents,
        "currency": "EUR",
        "method": "card",
        "purpose": purpose,
        "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        # a gift is accepted only with the donor's declaration (French law)
        "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
    }
    raw = json.dumps(payload).encode()
    secret = p.settings["memberships"].webhook_secret
    headers = {"Content-Type": "application/json", **signature_headers(secret, raw)}
    await eventually(
        lambda: p.http["memberships"].post(
            "/api/v1/webhooks/payments", content=raw, headers=headers
        ),
        lambda r: r.status_code == 201 and r.json()["status"] == "recorded",
    )


async def send_mail(p: Platform, person: Person) -> None:
    await eventually(
        lambda: p.http["messaging"].get(
            f"/api/v1/messages/reachability/{person.id}",
            params={"purpose": "news"},
            headers=p.headers(),
        ),
        lambda r: r.status_code == 200 and r.json()["reachable"],
    )
    r = await p.http["messaging"].post(
        "/api/v1/messages",
        json={
            "contact_id": person.id,
            "channel": "email",
            "purpose": "news",
            "subject": "Réunion",
            "text": "Jeudi 19h.",
        },
        headers=p.headers(),
    )
    assert r.status_code == 201, r.text


async def databases(settings) -> dict[str, str]:
    """Every document of every database of this test's stack, as text (one per db)."""
    store = Store(settings)
    prefix = settings.database_prefix
    out = {}
    try:
        for name in await store.client.list_database_names():
            if not name.startswith(prefix):
                continue
            parts = []
            db = store.client[name]
            for coll in await db.list_collection_names():
                async for doc in db[coll].find({}):
                    parts.append(f"{coll}: {doc!r}")
            out[name] = "\n".join(parts)
    finally:
        await store.close()
    return out


async def topic_dump(settings, vault: KeyVault) -> tuple[bytes, str, int]:
    """Every record of every topic of this stack read from the beginning by a fresh
    consumer: (raw bytes, every envelope decoded after opening with the vault, count)."""
    topics = await read_all_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
    raw, decoded, count = [], [], 0
    for records in topics.values():
        for record in records:
            count += 1
            raw.append(record.value)
            try:
                envelope = await vault.open(Envelope.from_bytes(record.value))
                decoded.append(json.dumps(decode(envelope).model_dump(mode="json")))
            except Exception as exc:  # a DLQ'd or foreign record: its raw bytes are checked
                decoded.append(repr(exc))
    return b"\n".join(raw), "\n".join(decoded), count


def absent(text: str | bytes, person: Person) -> list[str]:
    """The person's secrets found in ``text`` (should be none)."""
    haystack = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [s for s in person.secrets if s in haystack]


# ---------------------------------------------------------------- the test


async def merge(p: Platform, duplicate: Person, into: Person) -> None:
    """The secretary merges a duplicate into a person, keeping the person's own name,
    emails and phones: the duplicate's live on only in events sealed with its own key."""
    keep = dict.fromkeys(("given_name", "family_name", "emails", "phones"), "survivor")
    r = await p.http["contacts"].post(
        f"/api/v1/contacts/{into.id}/merge",
        json={"merged_id": duplicate.id, "fields": keep},
        headers=p.headers(),
    )
    assert r.status_code == 200, r.text
    # consent has seen the merge (its projection no longer shows the duplicate)
    await eventually(
        lambda: p.http["consent"].get(f"/api/v1/consents/{duplicate.id}", headers=p.headers()),
        lambda r: r.status_code == 404,
    )


async def test_erasure_fans_out_closes_with_a_receipt_and_nothing_comes_back(platform):
    p = platform
    erased, kept, twin = await new_person(p), await new_person(p), await new_person(p)
    for person in (erased, kept, twin):
        await grant(p, person)
        await send_mail(p, person)
    await pay(p, erased, "dues", 3000)
    await pay(p, erased, "donation", 5000)
    await merge(p, twin, into=erased)  # the same person, known twice until today
    dpo = p.headers(Role.dpo)

    # Every service answers for its part of an access export (DPO only).
    for svc, path in (
        ("contacts", "/api/v1/contacts/privacy/{}"),
        ("consent", "/api/v1/consents/privacy/{}"),
        ("memberships", "/api/v1/memberships/privacy/{}"),
        ("messaging", "/api/v1/messages/privacy/{}"),
    ):
        r = await p.http[svc].get(path.format(erased.id), headers=dpo)
        assert r.status_code == 200, (svc, r.text)
        refused = await p.http[svc].get(path.format(erased.id), headers=p.headers(Role.admin))
        assert refused.status_code == 403, svc  # the DPO's alone
    money = (
        await p.http["memberships"].get(f"/api/v1/memberships/privacy/{erased.id}", headers=dpo)
    ).json()
    assert [x["amount_cents"] for x in money["donations"]] == [5000]
    assert [x["amount_cents"] for x in money["payments"]] == [3000]

    # The DPO records the erasure: it fans out at once.
    r = await p.http["consent"].post(
        "/api/v1/privacy/requests", json={"kind": "erasure", "contact_id": erased.id}, headers=dpo
    )
    assert r.status_code == 201, r.text
    request = r.json()
    assert request["status"] == "in_progress" and request["key_destroyed_at"]
    again = await p.http["consent"].post(
        "/api/v1/privacy/requests", json={"kind": "erasure", "contact_id": erased.id}, headers=dpo
    )
    assert again.status_code == 409 and again.json()["existing_id"] == request["request_id"]

    done = await eventually(
        lambda: p.http["consent"].get(
            f"/api/v1/privacy/requests/{request['request_id']}", headers=dpo
        ),
        lambda r: r.status_code == 200 and r.json()["status"] == "completed",
        timeout=60,
    )
    receipt = done.json()["receipt"]
    assert [s["service"] for s in receipt["services"]] == list(SERVICES)
    assert set(receipt["keys_destroyed"]) == {erased.id, twin.id}
    assert all(s["completed_at"] for s in receipt["services"])
    legal = receipt["kept_for_legal_reasons"]
    # the two payments, and their tax receipts (kept by tax law, under the pseudonym)
    [payments] = [x for x in legal if x.startswith("memberships: payments: ")]
    assert payments.startswith("memberships: payments: 2 ") and "pseudonymised" in payments
    # (receipts are issued from payment-received: those issued before the erasure count)
    assert all(
        x.startswith(("memberships: payments: ", "memberships: receipts: ")) for x in legal
    ), legal
    assert done.json()["overdue"] is False

    # The person is gone from every service's API...
    for svc, path in (
        ("contacts", f"/api/v1/contacts/{erased.id}"),
        ("consent", f"/api/v1/consents/privacy/{erased.id}"),
        ("memberships", f"/api/v1/memberships/privacy/{erased.id}"),
        ("messaging", f"/api/v1/messages/privacy/{erased.id}"),
    ):
        r = await p.http[svc].get(path, headers=dpo if "privacy" in path else p.headers())
        assert r.status_code == 404, (svc, r.text)

    # ...from every store (projections, outboxes, the vault), while the other person is not.
    settings = p.settings["consent"]
    dbs = await databases(settings)
    assert {f"{settings.database_prefix}{s}" for s in SERVICES} <= set(dbs)
    # Tax receipts keep the donor's name and address for their retention period (LPF art.
    # L102 E, memberships README), under the pseudonym: nowhere else.
    lines = "\n".join(dbs.values()).splitlines()
    receipts = [line for line in lines if line.startswith("receipts: ")]
    everything = "\n".join(line for line in lines if not line.startswith("receipts: "))
    assert absent(everything, erased) == [] and absent(everything, twin) == [], [
        line[:300] for line in lines if absent(line, erased) or absent(line, twin)
    ]
    for line in receipts:
        if absent(line, erased):
            assert "pseudonym-" in line and erased.id not in line
    assert kept.email in dbs[f"{settings.database_prefix}contacts"]  # the scan sees data
    # payments kept by law, under a pseudonym
    assert dbs[f"{settings.database_prefix}memberships"].count("pseudonym-") >= 2

    # ...and from every topic: nothing personal was ever in clear, and the key is gone.
    vault = KeyVault(settings)
    try:
        raw, decoded, count = await topic_dump(settings, vault)
        assert count > 10
        assert absent(raw, erased) == [] and absent(raw, kept) == []  # sealed, always
        assert absent(raw, twin) == []
        # the merged duplicate's own key went with the person's: its events stay shut
        assert absent(decoded, erased) == [] and absent(decoded, twin) == []
        assert await vault.key_for(twin.id, create=True) is None
        assert kept.email in decoded and kept.family_name in decoded  # the vault opens theirs

        # A fresh consumer replaying every topic from the beginning builds its projections
        # again: the kept person comes back, the erased one (under either id) does not.
        await replay_into_fresh_messaging(settings, erased, kept, twin)
    finally:
        await vault.close()


async def replay_into_fresh_messaging(settings, erased: Person, kept: Person, twin: Person) -> None:
    from messaging.handlers import consent_handlers, contact_handlers
    from messaging.privacy import erasure_handlers
    from messaging.store import CONSENTS, CONTACTS, MessagingStore

    fresh = MessagingSettings(
        database_prefix=f"r{uuid.uuid4().hex[:8]}_",
        vault_database=settings.vault_database_name,  # the same vault (a KMS in production)
    )
    store = Store(fresh)
    publisher = EventPublisher(fresh)
    await publisher.start()
    messages = MessagingStore(store)
    handlers = {
        **contact_handlers(messages),
        **consent_handlers(messages),
        **erasure_handlers(store),
    }
    consumer = EventConsumer(
        fresh, store, group=f"replay-{uuid.uuid4().hex}", handlers=handlers, dlq_publisher=publisher
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:

        async def rebuilt():
            kept_doc = await store[CONTACTS].find_one({"_id": kept.id})
            erased_doc = await store[CONTACTS].find_one({"_id": erased.id})
            erased_consents = await store[CONSENTS].count_documents({"contact_id": erased.id})
            kept_consents = await store[CONSENTS].count_documents({"contact_id": kept.id})
            return (
                kept_doc is not None
                and kept_doc.get("email") == kept.email
                and kept_consents == 1
                and erased_doc is not None
                and erased_doc.get("erased") is True
                and erased_consents == 0
            )

        await wait_for(rebuilt, timeout=60)
        await asyncio.sleep(1.0)  # anything still in flight lands before the final check
        replayed = "\n".join((await databases(fresh)).values())
        assert absent(replayed, erased) == [] and absent(replayed, twin) == []
    finally:
        consumer.request_stop()
        await task
        await publisher.stop()
        await store.client.drop_database(fresh.database_name)
        await store.close()
