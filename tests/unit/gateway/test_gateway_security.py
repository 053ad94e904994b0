"""Client access tokens (issue, verify, expiry, tampering) and the login limiter."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt
import pytest
from gateway.security import (
    TOKEN_AUDIENCE,
    InvalidToken,
    LoginLimiter,
    issue_token,
    verify_token,
)
from support import make_identity
from tribune_shared.auth import sign_identity
from tribune_shared.events import utcnow

SECRET = "unit-test-jwt-secret-0123456789abcdef"


def test_issued_token_verifies_to_its_user_and_reports_its_ttl():
    issued = issue_token("user-1", SECRET, 900)
    assert issued.expires_in == 900
    assert verify_token(issued.token, SECRET) == "user-1"
    claims = jwt.decode(issued.token, SECRET, algorithms=["HS256"], audience=TOKEN_AUDIENCE)
    assert claims["exp"] - claims["iat"] == 900


def test_expired_token_is_refused():
    now = utcnow()
    token = jwt.encode(
        {
            "sub": "user-1",
            "iss": "tribune-gateway",
            "aud": TOKEN_AUDIENCE,
            "iat": now - timedelta(hours=2),
            "exp": now - timedelta(hours=1),
        },
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, SECRET)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_token_is_refused():
    token = issue_token("user-1", SECRET, 900).token
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin-user"
    with pytest.raises(InvalidToken):
        verify_token(f"{header}.{_b64(claims)}.{signature}", SECRET)


def test_token_signed_with_another_secret_or_unsigned_is_refused():
    with pytest.raises(InvalidToken):
        verify_token(
            issue_token("user-1", "another-secret-0123456789abcdef-xyz", 900).token, SECRET
        )
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'user-1'})}."
    with pytest.raises(InvalidToken):
        verify_token(unsigned, SECRET)
    with pytest.raises(InvalidToken):
        verify_token("garbage", SECRET)


def test_a_service_identity_token_is_not_a_client_token():
    # Same secret on purpose: the audience still tells them apart.
    identity_token = sign_identity(make_identity(), SECRET)
    with pytest.raises(InvalidToken):
        verify_token(identity_token, SECRET)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_blocks_after_max_failures_within_the_window_then_forgets():
    clock = Clock()
    limiter = LoginLimiter(3, 60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("a@x.org") == 0
        limiter.failed("a@x.org")
        clock.now += 1
    assert limiter.retry_after("a@x.org") == pytest.approx(57)
    assert limiter.retry_after("b@x.org") == 0  # per email
    clock.now += 57
    assert limiter.retry_after("a@x.org") == 0  # the oldest failure left the window


def test_limiter_window_slides():
    clock = Clock()
    limiter = LoginLimiter(2, 10, clock=clock)
    limiter.failed("a")
    clock.now += 8
    limiter.failed("a")
    assert limiter.retry_after("a") > 0
    clock.now += 3  # first failure expired, second still counts
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") > 0


def test_success_clears_failures():
    limiter = LoginLimiter(2, 60, clock=Clock())
    limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    assert limiter.retry_after("a") == 0


def test_limiter_memory_is_bounded_forgetting_the_least_recent():
    limiter = LoginLimiter(1, 60, max_tracked=2, clock=Clock())
    limiter.failed("a")
    limiter.failed("b")
    limiter.failed("c")
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("b") > 0 and limiter.retry_after("c") > 0
