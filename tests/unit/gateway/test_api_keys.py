"""API keys' pure rules: the key format, what a key may be made with, which routes it
reaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gateway.api_keys.domain import (
    KeyGrant,
    check_new_key,
    key_hash,
    looks_like_key,
    new_key,
)
from support import make_identity
from tribune_shared.auth import Role
from tribune_shared.errors import Forbidden, InvalidField

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_key_carries_its_prefix_and_only_its_hash_is_kept():
    key, prefix = new_key()
    assert key.startswith(f"trk_{prefix}_") and looks_like_key(key)
    assert key_hash(key) != key and len(key_hash(key)) == 64
    assert new_key()[0] != key
    assert not looks_like_key("eyJ.jwt.token") and not looks_like_key(None)


def test_what_a_key_may_be_made_with():
    admin = make_identity("/r/", Role.admin)
    assert check_new_key(
        admin, Role.secretary, ["/api/v1/payments", "/api/v1/contacts"], None, NOW
    ) == [
        "/api/v1/contacts",
        "/api/v1/payments",
    ]
    with pytest.raises(Forbidden):
        check_new_key(admin, Role.dpo, [], None, NOW)
    with pytest.raises(Forbidden):  # never above its creator
        check_new_key(make_identity("/r/", Role.secretary), Role.admin, [], None, NOW)
    for routes in (["/api/v1/webhooks/payments"], ["/api/v1/users"], ["/api/v1/contacts/x"]):
        with pytest.raises(InvalidField):
            check_new_key(admin, Role.viewer, routes, None, NOW)
    with pytest.raises(InvalidField):
        check_new_key(admin, Role.viewer, [], NOW - timedelta(seconds=1), NOW)
    with pytest.raises(InvalidField):
        check_new_key(admin, Role.viewer, [], datetime(2027, 1, 1), NOW)  # no time zone


def test_a_key_reaches_its_prefixes_and_the_forwarded_apis_only():
    identity = make_identity("/r/", Role.secretary)
    limited = KeyGrant("k", identity, ("/api/v1/contacts",), None)
    assert limited.allows("/api/v1/contacts") and limited.allows("/api/v1/contacts/c1")
    assert not limited.allows("/api/v1/contactsX") and not limited.allows("/api/v1/payments")
    wide = KeyGrant("k", identity, (), None)
    assert wide.allows("/api/v1/payments/p1") and wide.allows("/api/v1/people/c1")
    for own in ("/api/v1/users", "/api/v1/api-keys", "/api/v1/me", "/api/v1/federations"):
        assert not wide.allows(own)
    assert not wide.allows("/api/v1/webhooks/payments")
