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
    LoginLimits,
    client_network,
    issue_token,
    verify_token,
    verify_token_until,
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


def test_a_verified_token_says_when_it_was_issued_and_when_it_expires():
    issued = issue_token("user-1", SECRET, 900)
    verified = verify_token_until(issued.token, SECRET)
    assert verified.user_id == "user-1"
    assert verified.expires_at - verified.issued_at == 900


LIMITS = LoginLimits(
    max_attempts=5, network_max_attempts=100, window_seconds=300, prefix_ipv4=24, prefix_ipv6=56
)


def test_an_attempt_counts_per_email_then_per_client_network():
    (email, five), (network, hundred) = LIMITS.counters("a@x.org", "203.0.113.77")
    assert (five, hundred) == (5, 100)
    assert email.startswith("email:") and "a@x.org" not in email  # hashed, bounded
    assert len(email) == len("email:") + 64
    assert network == "net:203.0.113.0/24"
    # the same network, another email: the same network counter
    assert LIMITS.counters("b@x.org", "203.0.113.5")[1][0] == network
    assert LIMITS.counters("b@x.org", "203.0.113.5")[0][0] != email
    # no address (or not an IP): the email's counter only
    assert [k for k, _ in LIMITS.counters("a@x.org", None)] == [email]
    assert [k for k, _ in LIMITS.counters("a@x.org", "testclient")] == [email]


@pytest.mark.parametrize(
    ("address", "v4", "v6", "network"),
    [
        ("203.0.113.77", 24, 56, "203.0.113.0/24"),
        ("203.0.113.77", 32, 56, "203.0.113.77/32"),
        ("2001:db8:1234:5678:9abc::1", 24, 56, "2001:db8:1234:5600::/56"),
        ("2001:db8:1234:5678:9abc::1", 24, 64, "2001:db8:1234:5678::/64"),
        ("::ffff:198.51.100.9", 24, 56, "198.51.100.0/24"),
        ("not-an-ip", 24, 56, None),
        ("", 24, 56, None),
    ],
)
def test_a_client_network_is_the_address_cut_to_its_prefix(address, v4, v6, network):
    assert client_network(address, v4, v6) == network
