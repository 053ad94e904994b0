"""Fixtures shared by the integration tests of one service (the platform-wide ones are in
tests/conftest.py)."""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from contacts.main import create_app
from contacts.settings import ContactsSettings
from fastapi.testclient import TestClient
from pydantic_settings import SettingsConfigDict
from support import seed_federations
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
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
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
