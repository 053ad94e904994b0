"""Contacts and the suppression list (real store): a person created again with an address
on the list is kept but flagged ``suppressed``, and the flag survives updates."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from contacts.main import create_app
from contacts.settings import ContactsSettings
from contacts.suppression import SUPPRESSED, suppression_handlers
from fastapi.testclient import TestClient
from support import identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import SuppressionAddedV1
from tribune_shared.store import Store
from tribune_shared.suppression import email_hash, phone_hash

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
ORIGIN = {"kind": "web_form", "detail": "pétition"}


def suppress(settings: ContactsSettings, kind: str, address_hash: str) -> None:
    async def run():
        store = Store(settings)
        handler = suppression_handlers(store)["suppression-added"]
        env = new_envelope(
            SuppressionAddedV1(
                address_hash=address_hash,
                kind=kind,
                reason="erasure",
                suppressed_at=datetime(2026, 1, 1, tzinfo=UTC),
            ),
            producer="consent",
            federation_id="lyon",
            federation_path="/root/lyon/",
        )
        try:
            for _ in range(2):  # redelivered: still one entry
                async with store.transaction() as session:
                    await handler(env, session)
            return await store[SUPPRESSED].count_documents({})
        finally:
            await store.close()

    assert asyncio.run(run()) >= 1


@pytest.fixture
def api(isolated_env):
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        yield client, settings


def headers(settings):
    return identity_headers(make_identity(PARIS, Role.secretary), settings.identity_secret)


def create(client, settings, **body):
    r = client.post(
        "/api/v1/contacts",
        json={"family_name": "Martin", "origin": ORIGIN, **body},
        headers=headers(settings),
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_a_contact_created_with_a_suppressed_address_is_flagged(api):
    client, settings = api
    suppress(settings, "email", email_hash("erased.person@example.org", settings.suppression_salt))
    suppress(settings, "phone", phone_hash("+33699887766", settings.suppression_salt))

    again = create(client, settings, email="Erased.Person@Example.org")
    assert again["suppressed"] is True
    by_phone = create(client, settings, phone="06 99 88 77 66")
    assert by_phone["suppressed"] is True
    other = create(client, settings, email="someone.else@example.org")
    assert other["suppressed"] is False

    got = client.get(f"/api/v1/contacts/{again['id']}", headers=headers(settings)).json()
    assert got["suppressed"] is True
    r = client.patch(
        f"/api/v1/contacts/{again['id']}",
        json={"given_name": "Eve", "version": again["version"]},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text
    assert r.json()["suppressed"] is True
