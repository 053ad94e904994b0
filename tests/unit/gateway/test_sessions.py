"""Sessions' pure rules: refresh tokens, their hashes and lifetimes, and access tokens
naming their session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gateway.security import InvalidToken, issue_token, verify_token_until
from gateway.sessions.domain import (
    MAX_REFRESH_TOKEN_CHARS,
    SessionPolicy,
    looks_like_refresh_token,
    new_refresh_token,
    started_before,
    token_hash,
)

SECRET = "unit-test-jwt-secret-0123456789abcdef"
NOW = datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)


def test_refresh_tokens_are_random_recognisable_and_stored_only_as_a_hash():
    a, b = new_refresh_token(), new_refresh_token()
    assert a != b and a.startswith("trt_") and len(a) == 4 + 43
    assert looks_like_refresh_token(a)
    assert token_hash(a) == token_hash(a) != token_hash(b)
    assert a not in token_hash(a) and len(token_hash(a)) == 64
    assert not looks_like_refresh_token("eyJhbGciOi.jwt.like")
    assert not looks_like_refresh_token("trt_" + "x" * MAX_REFRESH_TOKEN_CHARS)


def test_a_refresh_token_lives_its_idle_lifetime_never_past_its_session():
    policy = SessionPolicy(refresh_ttl_seconds=3600, session_max_seconds=86_400)
    session_end = policy.session_expiry(NOW)
    assert session_end == NOW + timedelta(days=1)
    assert policy.token_expiry(NOW, session_end) == NOW + timedelta(hours=1)
    late = session_end - timedelta(minutes=10)
    assert policy.token_expiry(late, session_end) == session_end


@pytest.mark.parametrize(
    ("started", "tokens_after", "refused"),
    [
        (NOW, None, False),
        (NOW, NOW.replace(microsecond=0), False),  # opened in the second of the change
        (NOW - timedelta(seconds=1), NOW.replace(microsecond=0), True),
        (NOW + timedelta(minutes=1), NOW.replace(microsecond=0), False),
    ],
)
def test_a_session_opened_before_the_password_changed_is_not_refreshed(
    started, tokens_after, refused
):
    assert started_before(started, tokens_after) is refused


def test_an_access_token_names_its_session_and_a_forged_sid_is_refused():
    issued = issue_token("u1", SECRET, 60, session_id="s1")
    assert verify_token_until(issued.token, SECRET).session_id == "s1"
    assert verify_token_until(issue_token("u1", SECRET, 60).token, SECRET).session_id is None
    import jwt

    claims = jwt.decode(issued.token, SECRET, algorithms=["HS256"], audience="tribune-clients")
    bad = jwt.encode({**claims, "sid": 42}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify_token_until(bad, SECRET)
