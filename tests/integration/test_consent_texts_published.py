"""Consent texts reach contacts: each create, change and deletion of a text publishes
consent-text-published with the write (same transaction), its revision counting up so a
copy keeps the newest; a refused change publishes nothing."""

from __future__ import annotations

import hashlib

import pytest
from consent.main import create_app
from consent.settings import ConsentSettings
from fastapi.testclient import TestClient
from support import run_with_store, signed_headers
from tribune_shared.auth import Role
from tribune_shared.events import Envelope
from tribune_shared.outbox import OUTBOX

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
TEXTS = "/api/v1/consents/texts"
TEXT = {"version": "petition-v1", "title": "Pétition", "body": "J'accepte vos emails."}


def published(settings) -> list[dict]:
    async def work(store):
        return await store[OUTBOX].find({"topic": "consent-text-published"}).sort("seq").to_list()

    return [Envelope.model_validate(d["envelope"]) for d in run_with_store(settings, work)]


@pytest.fixture
def api(isolated_env):
    settings = ConsentSettings()
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_create_change_and_delete_publish_the_text_in_order(api):
    client, settings = api
    staff = signed_headers(settings, PARIS, Role.secretary)
    text = client.post(TEXTS, json=TEXT, headers=staff).json()
    changed = client.put(f"{TEXTS}/{text['id']}", json={"body": "Nouveau texte."}, headers=staff)
    assert changed.status_code == 200, changed.text
    assert client.delete(f"{TEXTS}/{text['id']}", headers=staff).status_code == 204

    events = published(settings)
    assert [e.data["revision"] for e in events] == [1, 2, 3]
    assert [e.data["withdrawn"] for e in events] == [False, False, True]
    assert {e.key for e in events} == {text["id"]}
    assert all(e.federation_path == PARIS for e in events)
    assert events[0].data["sha256"] == hashlib.sha256(TEXT["body"].encode()).hexdigest()
    assert events[1].data["body"] == "Nouveau texte."
    assert events[1].data["sha256"] == hashlib.sha256(b"Nouveau texte.").hexdigest()


def test_a_refused_change_publishes_nothing(api):
    client, settings = api
    staff = signed_headers(settings, PARIS, Role.secretary)
    text = client.post(TEXTS, json=TEXT, headers=staff).json()
    again = client.post(TEXTS, json=TEXT, headers=staff)
    assert again.status_code == 409
    blank = client.put(f"{TEXTS}/{text['id']}", json={"body": " "}, headers=staff)
    assert blank.status_code == 422
    assert len(published(settings)) == 1
