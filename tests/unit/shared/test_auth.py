import pytest
from support import make_identity
from tribune_shared.auth import InvalidIdentity, Role, sign_identity, verify_identity
from tribune_shared.store import subtree_filter

SECRET = "unit-test-secret-0123456789-abcdef"


def test_identity_round_trip():
    ident = make_identity("/root/paris/", Role.campaign_manager)
    assert verify_identity(sign_identity(ident, SECRET), SECRET) == ident


def test_tampered_or_foreign_identity_is_rejected():
    token = sign_identity(make_identity("/root/paris/"), SECRET)
    with pytest.raises(InvalidIdentity):
        verify_identity(token, SECRET + "x")
    head, body, sig = token.split(".")
    with pytest.raises(InvalidIdentity):
        verify_identity(f"{head}.{body}.{sig[::-1]}", SECRET)


def test_expired_identity_is_rejected():
    token = sign_identity(make_identity(), SECRET, ttl_seconds=-1)
    with pytest.raises(InvalidIdentity):
        verify_identity(token, SECRET)


def test_subtree_scope_is_an_anchored_prefix():
    paris = make_identity("/root/paris/")
    assert paris.can_see("/root/paris/")
    assert paris.can_see("/root/paris/11e/")
    assert not paris.can_see("/root/lyon/")
    assert not paris.can_see("/root/")
    # Regex metacharacters in paths are escaped.
    assert subtree_filter("/a.b/") == {"federation_path": {"$regex": r"^/a\.b/"}}
