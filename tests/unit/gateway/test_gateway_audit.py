"""The access audit's rules: what a call counts as, whom it is about, what is kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gateway.audit import (
    AccessAction,
    access_entry,
    action_of,
    from_document,
    subject_of,
    to_document,
)
from support import make_identity
from tribune_shared.auth import Role


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/api/v1/contacts/c1", AccessAction.viewed),
        ("HEAD", "/api/v1/contacts", AccessAction.viewed),
        ("PATCH", "/api/v1/contacts/c1", AccessAction.changed),
        ("POST", "/api/v1/consents/c1/revoke", AccessAction.changed),
        ("DELETE", "/api/v1/memberships/m1", AccessAction.changed),
        ("POST", "/api/v1/contacts/exports", AccessAction.exported),
        ("GET", "/api/v1/segments/s1/export", AccessAction.exported),
        ("GET", "/api/v1/privacy/requests/r1/export", AccessAction.exported),
        ("GET", "/api/v1/contacts/imports/j1/rejected.csv", AccessAction.viewed),
        ("GET", "/api/v1/contacts/exported-things", AccessAction.viewed),
    ],
)
def test_a_call_is_a_view_a_change_or_an_export(method, path, action):
    assert action_of(method, path) is action


@pytest.mark.parametrize(
    ("path", "query", "subject"),
    [
        ("/api/v1/contacts/c1", {}, "c1"),
        ("/api/v1/contacts/c1/merge", {}, "c1"),
        ("/api/v1/consents/c1", {}, "c1"),
        ("/api/v1/people/c1", {}, "c1"),
        ("/api/v1/messages/reachability/c1", {"purpose": "news"}, "c1"),
        ("/api/v1/memberships", {"contact_id": "c9"}, "c9"),
        ("/api/v1/contacts/custom-fields", {}, None),
        ("/api/v1/contacts/imports", {}, None),
        ("/api/v1/contacts/exports", {}, None),
        ("/api/v1/consents/audit", {}, None),
        ("/api/v1/contacts", {"q": "dupont"}, None),
        ("/api/v1/memberships", {"contact_id": "not an id!"}, None),
    ],
)
def test_the_person_a_call_is_about(path, query, subject):
    assert subject_of(path, query) == subject


def test_an_entry_keeps_who_what_and_where_from_minimised():
    identity = make_identity("/root/paris/", Role.secretary, user_id="u1", email="s@paris.org")
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    entry = access_entry(
        "e1",
        at,
        identity,
        "get",
        "/api/v1/contacts",
        {"q": "dupont", "tags_any": "x"},
        200,
        "203.0.113.77",
        "Mozilla/5.0 " + "\x00" + "y" * 500,
    )
    assert entry.action is AccessAction.viewed and entry.method == "GET"
    assert entry.query_keys == ["q", "tags_any"]
    assert "dupont" not in entry.model_dump_json()
    assert entry.ip == "203.0.113.0/24"
    assert entry.user_agent is not None and len(entry.user_agent) <= 64
    assert "\x00" not in entry.user_agent
    assert (entry.user_id, entry.role, entry.federation_path) == ("u1", "secretary", "/root/paris/")
    assert from_document(to_document(entry)) == entry
