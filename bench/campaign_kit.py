"""Shared by the campaign benchmarks (bench/campaign_email.py, bench/campaign_sms.py): an
isolated platform, a gateway client, seeding people with consent, running a campaign
through the API, reading the SMTP sink. Not a benchmark itself: run alone, it does nothing.

Seeding, exactly:
- contacts: one CSV through the contacts import API (``POST /api/v1/contacts/imports``,
  origin ``web_form``), the path a federation secretary takes; the worker imports it and
  publishes contact-created, which messaging projects;
- consents: there is no bulk consent API, so each contact's consent-granted is published
  to Kafka as consent would publish it: signed with consent's event key (the stack's, from
  its identity secret, test environment) by ``EventPublisher(settings, producer="consent")``,
  source ``bench``; messaging's real consumer projects them. Consent's own ledger does not
  hold these (the contacts whose revocation is measured are granted through the consent
  API instead, so the revoke is a real one).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from tribune_devstack import platform as devstack_platform
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig
from tribune_shared.bus import EventPublisher
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import Channel, ConsentGrantedV1
from tribune_shared.settings import ServiceSettings

PURPOSE = "news"
EMAIL_HTML = (
    "<p>Bonjour {{ contact.given_name | default('ami') }},</p>"
    "<p>Réunion publique jeudi à 19h, salle des fêtes.</p>"
    "<p>{{ origin }}</p><p>{{ sender }}</p>"
    '<p><a href="{{ unsubscribe_url }}">Se désinscrire</a></p>'
)
EMAIL_SUBJECT = "{{ campaign.name }} : bonjour {{ contact.given_name | default('ami') }}"
SMS_TEXT = "Réunion jeudi 19h. {{ origin }} {{ sender }} STOP"
#: a campaign not done within this long fails the run
CAMPAIGN_TIMEOUT = 3600.0


def now() -> float:
    return time.perf_counter()


@contextmanager
def platform(name: str, env: Mapping[str, str]) -> Iterator[RunningStack]:
    """An isolated platform (RunningStack on StackConfig.for_tests(), store on disk);
    ``env`` is added to every process's environment (messaging settings of the run)."""
    os.environ.update(env)
    # the test stack's own settings (tribune_devstack.platform.stack_env) would win over
    # the caller's environment, among them SMS allowed all day: the run's settings win
    stack_settings = devstack_platform.stack_env

    def with_run_settings(cfg: StackConfig, environment: str = "development") -> dict[str, str]:
        return {**stack_settings(cfg, environment), **env}

    # (a patch for this run only: the devstack has no parameter for settings that win
    # over its test defaults yet; restored when the platform stops)
    devstack_platform.stack_env = with_run_settings
    try:
        cfg = StackConfig.for_tests(
            name=f"{name}-{uuid.uuid4().hex[:6]}", env=os.environ, store_in_memory=False
        )
        print(f"starting an isolated platform ({cfg.name}) ...", flush=True)
        began = now()
        with RunningStack(cfg, environment="test") as stack:
            print(f"platform ready in {now() - began:.0f}s", flush=True)
            yield stack
    finally:
        devstack_platform.stack_env = stack_settings


async def until(predicate: Callable[[], Awaitable[bool]], interval: float, what: str) -> None:
    """Poll ``predicate`` every ``interval`` s until it holds (CAMPAIGN_TIMEOUT at most)."""
    deadline = now() + CAMPAIGN_TIMEOUT
    while now() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise RuntimeError(f"{what}: not within {CAMPAIGN_TIMEOUT:.0f}s")


class Client:
    """A gateway user (OAuth2 password flow), its token renewed before it expires."""

    def __init__(self, http: httpx.AsyncClient, email: str, password: str) -> None:
        self.http, self.email, self.password = http, email, password
        self._bearer, self._renew_at = "", 0.0

    async def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if now() >= self._renew_at:
            r = await self.http.post(
                "/api/v1/auth/token", data={"username": self.email, "password": self.password}
            )
            r.raise_for_status()
            body = r.json()
            self._bearer = body["access_token"]
            self._renew_at = now() + max(10.0, float(body.get("expires_in", 900)) - 60)
        headers = {"Authorization": f"Bearer {self._bearer}", **kw.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> dict[str, Any]:
        """Call until ``status`` (a 503 not_yet_consistent is retried), or fail."""
        deadline = now() + 120
        while True:
            r = await self.call(method, path, **kw)
            if r.status_code == status:
                return dict(r.json())
            if r.status_code != 503 or now() > deadline:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            await asyncio.sleep(0.25)


def csv_of(people: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(people[0]), delimiter=";")
    writer.writeheader()
    writer.writerows(people)
    return out.getvalue().encode()


async def import_contacts(admin: Client, people: list[dict[str, str]]) -> float:
    """Import ``people`` through the contacts API; seconds it took."""
    started = now()
    job = await admin.ok(
        "POST",
        "/api/v1/contacts/imports",
        202,
        content=csv_of(people),
        params={"origin_kind": "web_form", "origin_detail": "benchmark"},
        headers={"Content-Type": "text/csv"},
    )
    while job["status"] not in ("done", "failed", "cancelled"):
        await asyncio.sleep(0.5)
        job = await admin.ok("GET", f"/api/v1/contacts/imports/{job['id']}")
    if job["status"] != "done":
        raise RuntimeError(f"import {job['status']}: {job.get('error')}")
    return now() - started


class Store:
    """Read-only looks into the services' databases (progress and outcomes)."""

    def __init__(self, stack: RunningStack) -> None:
        self.cfg = stack.cfg
        self.prefix = stack.cfg.database_prefix
        # one client per store process (StackConfig.store_urls: a service's database may be
        # in a store of its own)
        self.mongo: dict[str, AsyncMongoClient[dict[str, Any]]] = {}

    def db(self, service: str) -> Any:
        url = self.cfg.store_url(service)
        if url not in self.mongo:
            self.mongo[url] = AsyncMongoClient(url, tz_aware=True)
        return self.mongo[url][f"{self.prefix}{service}"]

    async def contacts(self) -> list[dict[str, Any]]:
        fields = {"federation_id": 1, "federation_path": 1, "emails": 1, "email": 1, "phones": 1}
        return await self.db("contacts")["contacts"].find({}, fields).to_list()

    async def wait_count(
        self, service: str, collection: str, query: dict[str, Any], n: int, what: str
    ) -> None:
        deadline = now() + CAMPAIGN_TIMEOUT
        while (count := await self.db(service)[collection].count_documents(query)) < n:
            if now() > deadline:
                raise RuntimeError(f"{what}: {count} of {n} after {CAMPAIGN_TIMEOUT:.0f}s")
            await asyncio.sleep(0.5)

    async def messages(self, campaign_id: str) -> list[dict[str, Any]]:
        return (
            await self.db("messaging")["messages"]
            .find({"campaign_id": campaign_id}, {"status": 1, "refused_rule": 1, "resent": 1})
            .to_list()
        )

    async def close(self) -> None:
        for client in self.mongo.values():
            await client.close()


async def publish_consents(
    stack: RunningStack, contacts: list[dict[str, Any]], channel: Channel
) -> float:
    """consent-granted of each contact, signed as consent signs them; seconds taken."""
    settings = ServiceSettings(**_kernel_settings(stack))
    publisher = EventPublisher(settings, producer="consent")
    await publisher.start()
    started = now()
    try:
        at = utcnow()
        envelopes = [
            new_envelope(
                ConsentGrantedV1(
                    contact_id=c["_id"],
                    channel=channel,
                    purpose=PURPOSE,
                    source="bench",
                    granted_at=at,
                    actor_kind="user",
                ),
                producer="consent",
                federation_id=c["federation_id"],
                federation_path=c["federation_path"],
            )
            for c in contacts
        ]
        for start in range(0, len(envelopes), 1000):
            await publisher.publish_many(envelopes[start : start + 1000])
    finally:
        await publisher.stop()
    return now() - started


def _kernel_settings(stack: RunningStack) -> dict[str, Any]:
    env = stack.env
    return {
        "environment": env["TRIBUNE_ENVIRONMENT"],
        "kafka_bootstrap_servers": env["TRIBUNE_KAFKA_BOOTSTRAP_SERVERS"],
        "mongo_url": env["TRIBUNE_MONGO_URL"],
        "topic_prefix": env["TRIBUNE_TOPIC_PREFIX"],
        "database_prefix": env["TRIBUNE_DATABASE_PREFIX"],
        "identity_secret": env["TRIBUNE_IDENTITY_SECRET"],
    }


async def template(admin: Client, channel: Channel) -> str:
    body: dict[str, Any] = {"name": f"Bench {channel.value}", "channel": channel.value}
    if channel is Channel.email:
        body |= {"subject": EMAIL_SUBJECT, "html": EMAIL_HTML}
    else:
        body |= {"text": SMS_TEXT}
    created = await admin.ok("POST", "/api/v1/templates", 201, json=body)
    return str(created["template"]["template_id"])


async def launch(admin: Client, template_id: str, channel: Channel, name: str) -> str:
    campaign = await admin.ok(
        "POST",
        "/api/v1/campaigns",
        201,
        json={
            "name": name,
            "channel": channel.value,
            "purpose": PURPOSE,
            "template_id": template_id,
        },
    )
    await admin.ok("POST", f"/api/v1/campaigns/{campaign['id']}/launch")
    return str(campaign["id"])


async def until_done(admin: Client, campaign_id: str) -> dict[str, Any]:
    deadline = now() + CAMPAIGN_TIMEOUT
    while True:
        campaign = await admin.ok("GET", f"/api/v1/campaigns/{campaign_id}")
        if campaign["status"] in ("completed", "cancelled", "failed", "paused"):
            return campaign
        if now() > deadline:
            raise RuntimeError(f"campaign still {campaign['status']}: {campaign.get('stats')}")
        await asyncio.sleep(0.2)


class Sink:
    """The stack's SMTP sink (tribune_devstack.smtp_sink): counts, arrivals, clearing."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url = http, url

    async def count(self) -> int:
        r = await self.http.get(f"{self.url}/health")
        return int(r.json()["messages"])

    async def to(self, address: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.url}/messages", params={"to": address})
        r.raise_for_status()
        return list(r.json())

    async def clear(self) -> None:
        (await self.http.delete(f"{self.url}/messages")).raise_for_status()


def print_table(rows: list[dict[str, str]]) -> None:
    cols = ("scenario", "goal", "measured", "verdict")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print()
    print(" | ".join(c.ljust(widths[c]) for c in cols))
    print("-|-".join("-" * widths[c] for c in cols))
    for r in rows:
        print(" | ".join(r[c].ljust(widths[c]) for c in cols))
    print()
