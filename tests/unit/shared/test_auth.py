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


def _token(secret: str, **claims) -> str:
    import jwt

    base = {"sub": "u1", "email": "a@b.c", "role": "admin", "fid": "root", "fpath": "/root/"}
    return jwt.encode({"aud": "tribune-services", **base, **claims}, secret, algorithm="HS256")


def test_an_identity_without_expiry_is_refused():
    # Signed with the right secret, but valid forever if it leaked: refused.
    import time

    with pytest.raises(InvalidIdentity, match="exp"):
        verify_identity(_token(SECRET, iat=int(time.time())), SECRET)


def test_an_identity_without_issue_time_or_issued_in_the_future_is_refused():
    import time

    now = int(time.time())
    with pytest.raises(InvalidIdentity, match="iat"):
        verify_identity(_token(SECRET, exp=now + 60), SECRET)
    with pytest.raises(InvalidIdentity):
        verify_identity(_token(SECRET, iat=now + 3600, exp=now + 7200), SECRET)
    # the same claims with both times in order are accepted
    assert verify_identity(_token(SECRET, iat=now, exp=now + 60), SECRET).user_id == "u1"
