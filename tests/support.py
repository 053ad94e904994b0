"""What tests share: identities and the signed header the gateway would send, reading
topics and collections, waiting for eventually consistent state, seeding a service's
federations, serving an app on a free port, the gateway's administrator and its users, a
signed-in user that keeps its token fresh.

Test code, so it lives with the tests rather than in the kernel every service ships. It is
importable as ``support`` because the root pyproject.toml puts tests/ on pytest's
``pythonpath`` (tests/ is no package: ``--import-mode=importlib``).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic_settings import SettingsConfigDict
from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity
from tribune_shared.events import Envelope
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store
from tribune_shared.subscriptions import Step, Subscriptions, apply_steps

if TYPE_CHECKING:
    import httpx
    from fastapi.testclient import TestClient

T = TypeVar("T")


class DemoSettings(ServiceSettings):
    """The kernel's settings for a service named ``demo`` (env prefix ``DEMO_``), for tests
    of what every service inherits."""

    service_name = "demo"
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")


def make_identity(
    federation_path: str = "/root/",
    role: Role = Role.admin,
    user_id: str | None = None,
    email: str = "tester@tribune.test",
) -> Identity:
    federation_id = federation_path.rstrip("/").rsplit("/", 1)[-1]
    return Identity(
        user_id=user_id or uuid.uuid4().hex,
        email=email,
        role=role,
        federation_id=federation_id,
        federation_path=federation_path,
    )


def identity_headers(identity: Identity, secret: str) -> dict[str, str]:
    return {IDENTITY_HEADER: sign_identity(identity, secret)}


async def read_topic(
    bootstrap_servers: str, topic: str, *, expect: int | None = None, idle_seconds: float = 3.0
) -> list:
    """Every record of ``topic`` from the beginning (a fresh consumer, no group): stops
    once ``expect`` records were read, or after ``idle_seconds`` without new ones."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list = []
    try:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while loop.time() - last < idle_seconds:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
                last = loop.time()
            if expect is not None and len(records) >= expect:
                break
    finally:
        await consumer.stop()
    return records


async def wait_for(predicate, *, timeout: float = 20.0, interval: float = 0.1):
    """Poll a predicate (async or not) until it returns a truthy value (returned) or time
    runs out."""
    import asyncio
    import inspect

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def eventually(call, accept=bool, *, timeout: float = 30.0, interval: float = 0.1):
    """Repeat ``call()`` until ``accept(result)`` holds and return that result; projections
    built from events are eventually consistent. Fails with the last result."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = call()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            shown = getattr(result, "text", result)
            raise AssertionError(f"not reached within {timeout}s; last result: {shown!s:.500}")
        time.sleep(interval)


async def read_all_topics(bootstrap_servers: str, prefix: str = "") -> dict[str, list]:
    """Every record of every topic whose name starts with ``prefix``, from the beginning up
    to the end offsets seen at the start, with one fresh consumer (no group): what a new
    consumer replaying the whole log would get. Topic name -> records."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    out: dict[str, list] = {}
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith(prefix))
        consumer.subscribe(topics)  # so the metadata of these topics is fetched...
        await consumer._client.force_metadata_update()
        consumer.unsubscribe()  # ...then read them without a group
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        if not partitions:
            return out
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out = {t: [] for t in topics}
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                out[tp.topic].extend(r for r in records if r.offset < ends[tp])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: Any, name: str = "server") -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port, until the block ends: its
    base URL."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_with_store(settings: ServiceSettings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``work(store)`` on a fresh Store of the service's database (from sync tests)."""
    import asyncio

    async def go() -> T:
        store = Store(settings)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def index_scan(explained: dict[str, Any]) -> dict[str, Any]:
    """The IXSCAN stage of an ``explain()``'s winning plan; fails on a plan that scans the
    collection (the local store's planner gives up on some query shapes: README,
    Extending)."""
    stages = []
    plan = explained["queryPlanner"]["winningPlan"]
    while plan:
        stages.append(plan)
        plan = plan.get("inputStage")
    assert all(s["stage"] != "COLLSCAN" for s in stages), stages
    return next(s for s in stages if s["stage"] == "IXSCAN")


def read_collection(
    settings: ServiceSettings, collection: str, query: dict | None = None
) -> list[dict]:
    """The documents of ``collection`` in the service's database matching ``query``."""

    async def work(store: Store) -> list[dict]:
        return await store[collection].find(query or {}).to_list()

    return run_with_store(settings, work)


def audit_entries(
    settings: ServiceSettings, query: dict, *, count: int = 1, timeout: float = 10.0
) -> list[dict]:
    """The gateway's access audit entries matching ``query``, once at least ``count`` are
    stored: a write is answered before its entry is written (a read only after), so an
    entry of a write lands a moment after its answer (gateway.service.AccessAudit)."""
    return eventually(
        lambda: read_collection(settings, "access_audit", query),
        lambda docs: len(docs) >= count,
        timeout=timeout,
    )


async def deliver(
    store: Store, handlers: Subscriptions | Mapping[str, Step], *envelopes: Envelope
) -> None:
    """Apply events with a service's real handlers as its consumer does, each in its own
    transaction (a batch handler gets a batch of one)."""
    for envelope in envelopes:
        if isinstance(handlers, Subscriptions):
            steps = handlers.steps(envelope.type)
        else:
            steps = (handlers[envelope.type],)
        async with store.transaction() as session:
            await apply_steps(steps, [envelope], session)


def _federation_created(path: str) -> Envelope:
    """federation-created of ``path`` ("/root/paris/"), as the gateway publishes it."""
    from tribune_shared.events import new_envelope
    from tribune_shared.events.contracts import FederationCreatedV1

    parts = path.strip("/").split("/")
    return new_envelope(
        FederationCreatedV1(
            federation_id=parts[-1],
            parent_id=parts[-2] if len(parts) > 1 else None,
            name=parts[-1],
            path=path,
        ),
        producer="gateway",
        federation_id=parts[-1],
        federation_path=path,
    )


def seed_federations(settings: ServiceSettings, *paths: str) -> None:
    """Deliver federation-created of each path to the service's federation directory, as
    its consumer would."""
    from tribune_shared.federations import FederationDirectory

    async def deliver(store: Store) -> None:
        directory = FederationDirectory(store)
        for path in paths:
            async with store.transaction() as session:
                await directory.on_federation_event(_federation_created(path), session)

    run_with_store(settings, deliver)


def signed_headers(
    settings: ServiceSettings, path: str, role: Role = Role.secretary, user_id: str | None = None
) -> dict[str, str]:
    """The identity header the gateway would send for a user of ``path`` with ``role``."""
    return identity_headers(make_identity(path, role, user_id), settings.identity_secret)


def mails_to(smtp_http_url: str, address: str) -> list[dict]:
    """What the SMTP sink received for ``address`` (its HTTP API: headers, text, html)."""
    import httpx

    r = httpx.get(f"{smtp_http_url}/messages", params={"to": address}, timeout=10)
    r.raise_for_status()
    return r.json()


def mail_header(mail: dict, name: str) -> str:
    """One header of a mail the SMTP sink received (case-insensitive name)."""
    return next(v for k, v in mail["headers"] if k.lower() == name.lower())


def on_the_wire(outgoing: Any) -> email.message.EmailMessage:
    """What an SMTP server receives of a composed email (messaging's ``OutgoingEmail``:
    its bytes), parsed back as a mail client reads it."""
    # from text: the bytes parser leaves UTF-8 headers (RFC 6532) undecoded
    parsed = email.message_from_string(outgoing.data.decode(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


# ---------------------------------------------------------------- e2e: objects through the API


@dataclass(frozen=True)
class NewFederation:
    """A federation a test created through the gateway (what ``new_user`` needs of one)."""

    id: str
    path: str


def create_federation(admin, name: str, parent_id: str | None = None) -> NewFederation:
    """A federation with a unique name (the session's stack is shared between tests)."""
    body = {
        "name": f"{name} {uuid.uuid4().hex[:6]}",
        **({"parent_id": parent_id} if parent_id else {}),
    }
    r = admin("POST", "/api/v1/federations", json=body)
    assert r.status_code == 201, r.text
    return NewFederation(r.json()["id"], r.json()["path"])


def create_member(admin, federation: NewFederation, given_name: str = "Jeanne") -> str:
    """A contact who joined at a stand (origin membership), in ``federation``: its id."""
    tag = uuid.uuid4().hex[:8]
    body = {
        "given_name": given_name,
        "family_name": f"Adhérente-{tag}",
        "email": f"{given_name.lower()}.{tag}@example.org",
        "origin": {"kind": "membership", "detail": "adhésion"},
        "federation_id": federation.id,
    }
    r = admin("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def create_contact(user, given: str, family: str, email: str, **extra: Any) -> str:
    """A contact ``user`` creates through the gateway (met at an event; ``extra``: more
    fields of the request): its id."""
    body = {
        "given_name": given,
        "family_name": family,
        "email": email,
        "origin": {"kind": "event", "detail": "fête de la rose"},
        **extra,
    }
    r = user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# ---------------------------------------------------------------- the gateway's accounts

#: the administrator the gateway makes at its first start (GatewaySettings.admin_email),
#: with the password the integration tests give it (the ``gateway_env`` fixture)
ADMIN_EMAIL = "admin@tribune.local"
ADMIN_PASSWORD = "admin-password-for-tests-1"
#: the password of the users the tests create (``add_user``)
PASSWORD = "a-good-long-password"


def gateway_tokens(
    client: TestClient | httpx.Client, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD
) -> dict[str, Any]:
    """The tokens of a login that must succeed (access and refresh)."""
    r = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(
    client: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD
) -> dict[str, str]:
    """The Authorization header of a login that must succeed (the administrator's by
    default)."""
    return {"Authorization": f"Bearer {gateway_tokens(client, email, password)['access_token']}"}


def add_federation(
    client: TestClient, admin: dict[str, str], name: str, parent_id: str | None = None
) -> dict[str, Any]:
    """A federation ``admin`` creates (under ``parent_id``, else under their own): its JSON."""
    body = {"name": name, **({"parent_id": parent_id} if parent_id else {})}
    r = client.post("/api/v1/federations", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


def add_user(
    client: TestClient,
    admin: dict[str, str],
    email: str,
    role: str = "secretary",
    federation_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A user with PASSWORD that ``admin`` creates (in ``federation_id``, else in their own
    federation; ``extra``: more fields of the request): its JSON."""
    body = {"email": email, "password": PASSWORD, "role": role, **extra}
    if federation_id:
        body["federation_id"] = federation_id
    r = client.post("/api/v1/users", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


class Client:
    """A signed-in user, behaving as a real client does: its access token lives
    GATEWAY_ACCESS_TOKEN_TTL_SECONDS (15 min), shorter than the e2e session, so it is
    exchanged for a new one through the refresh grant shortly before it expires; when its
    session was ended meanwhile (a logout, a password change: the fuzzer and the matrix do
    both), the user signs in again, as a person sent back to the login page would."""

    #: refresh this long before the announced expiry, so no request carries a token
    #: that expires on its way
    REFRESH_MARGIN_SECONDS = 60.0

    def __init__(
        self, http: httpx.Client, issued: dict[str, Any], credentials: tuple[str, str]
    ) -> None:
        self.http = http
        self.credentials = credentials
        self._take(issued)

    def _take(self, issued: dict[str, Any]) -> None:
        self._token: str = issued["access_token"]
        self._refresh: str | None = issued.get("refresh_token")
        self._expires_at = time.monotonic() + float(issued["expires_in"])

    @property
    def token(self) -> str:
        if time.monotonic() > self._expires_at - self.REFRESH_MARGIN_SECONDS:
            r = self.http.post(
                "/api/v1/auth/token",
                data={"grant_type": "refresh_token", "refresh_token": self._refresh or ""},
            )
            if r.status_code == 401:  # the session was ended: sign in again
                self._take(gateway_tokens(self.http, *self.credentials))
            else:
                assert r.status_code == 200, r.text
                self._take(r.json())
        return self._token

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kw)


def login(http: httpx.Client, email: str, password: str) -> Client:
    """A user signed in through the gateway at ``http`` (the login must succeed)."""
    return Client(http, gateway_tokens(http, email, password), (email, password))
