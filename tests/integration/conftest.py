"""Fixtures shared by the integration tests of one service (the platform-wide ones are in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contacts.main import create_app
from contacts.settings import ContactsSettings
from fastapi.testclient import TestClient
from tribune_shared.testing import seed_federations

#: the federation tree the contacts tests use: Paris (with a section) and Lyon
CONTACTS_TREE = ("/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/")


@pytest.fixture
def contacts_api(isolated_env) -> Iterator[tuple[TestClient, ContactsSettings]]:
    """The contacts API on the real store, its federation tree already projected."""
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, *CONTACTS_TREE)
        yield client, settings
