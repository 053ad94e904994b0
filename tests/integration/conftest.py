"""Fixtures shared by the integration tests of one service (the platform-wide ones are in
tests/conftest.py)."""

from __future__ import annotations

import email
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from contacts.main import create_app
from contacts.settings import ContactsSettings
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from gateway.main import create_app as create_gateway_app
from gateway.settings import GatewaySettings
from pydantic_settings import SettingsConfigDict
from support import ADMIN_PASSWORD, free_port, seed_federations, serving
from tribune_shared.auth import IDENTITY_HEADER
from tribune_shared.bus import EventPublisher, ensure_topics
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

#: the one mailbox the test SMTP server refuses (550), like a real server would
REJECTED_ADDRESS = "gone@example.org"

#: the federation tree the contacts tests use: Paris (with a section) and Lyon
CONTACTS_TREE = ("/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/")


@pytest.fixture
def contacts_api(isolated_env) -> Iterator[tuple[TestClient, ContactsSettings]]:
    """The contacts API on the real store, its federation tree already projected."""
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, *CONTACTS_TREE)
        yield client, settings


class SmtpSink:
    """aiosmtpd handler: keeps what it accepts, refuses REJECTED_ADDRESS."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[list[str], EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == REJECTED_ADDRESS:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # from text: the bytes parser leaves UTF-8 headers (SMTPUTF8) undecoded
        parsed = email.message_from_string(envelope.content.decode(), policy=policy.default)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def take(self) -> list[tuple[list[str], EmailMessage]]:
        """What arrived since the last call: (recipients, message) pairs."""
        with self.lock:
            taken, self.received = self.received, []
        return taken


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[SmtpSink, int]]:
    """A real SMTP server on a free port (the messaging service sends to it)."""
    port = free_port()
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    yield sink, port
    controller.stop()


class BusSettings(ServiceSettings):
    """A service of its own for the kernel's bus tests (database ``<prefix>bustest``)."""

    service_name = "bustest"
    model_config = SettingsConfigDict(env_prefix="BUSTEST_", extra="ignore")


@pytest.fixture
async def bus_kit(isolated_env):
    """(settings, store, publisher) of a bus test: the topics it uses exist; its database
    is dropped afterwards. The publisher speaks for contacts, the owner of the contact
    topics (consumers accept those events from their owner only)."""
    settings = BusSettings(consumer_max_retries=2, consumer_retry_backoff_seconds=0.01)
    await ensure_topics(settings, ["contact-created", "contact-updated", "consent-revoked"])
    store = Store(settings)
    publisher = EventPublisher(settings, producer="contacts")
    await publisher.start()
    yield settings, store, publisher
    await publisher.stop()
    await store.client.drop_database(settings.database_name)
    await store.close()


# ---------------------------------------------------------------- the gateway

gateway_echo = FastAPI()


@gateway_echo.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(request: Request, path: str) -> JSONResponse:
    """A service behind the gateway telling what it received (the identity, Authorization
    and X-API-Key headers apart too); ``?status=`` picks the answer's status; contact
    "missing" is unknown; the messages listing is broken."""
    if path.endswith("/missing"):
        return JSONResponse({"error": "not_found", "detail": "contact not found"}, 404)
    if path.startswith("api/v1/messages"):
        return JSONResponse({"error": "internal"}, 500)
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": (await request.body()).decode(),
            "identity": request.headers.get(IDENTITY_HEADER),
            "authorization": request.headers.get("authorization"),
            "api_key": request.headers.get("x-api-key"),
        },
        status_code=int(request.query_params.get("status", 200)),
    )


@pytest.fixture(scope="module")
def gateway_upstream() -> Iterator[str]:
    """A real upstream service (``gateway_echo``) on a free port: its base URL, for the
    GATEWAY_*_URL settings."""
    with serving(gateway_echo, "echo server") as url:
        yield url


@pytest.fixture
def gateway_env(isolated_env, monkeypatch):
    """isolated_env with the gateway's administrator password (support.ADMIN_PASSWORD). A
    module needing more GATEWAY_* settings overrides this fixture, asking for this one."""
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", ADMIN_PASSWORD)
    return isolated_env


@pytest.fixture
def gateway_api(gateway_env) -> Iterator[tuple[TestClient, GatewaySettings]]:
    """The gateway on the real store, started (its federation root and administrator made),
    and its settings."""
    settings = GatewaySettings()
    with TestClient(create_gateway_app(settings)) as client:
        yield client, settings
