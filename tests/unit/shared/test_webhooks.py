"""The payment webhook signature: HMAC-SHA256 over "<timestamp>." + the raw body."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from tribune_shared.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    compute_signature,
    signature_headers,
    verify_signature,
)

SECRET = "whsec-test-0123456789abcdef"
BODY = b'{"provider":"stripe","provider_payment_id":"pi_1","amount_cents":3000}'
NOW = 1_750_000_000


def verify(headers: dict[str, str], body: bytes = BODY, *, secret=SECRET, now=NOW):
    return verify_signature(
        secret,
        headers.get(TIMESTAMP_HEADER),
        headers.get(SIGNATURE_HEADER),
        body,
        now=now,
        tolerance_seconds=300,
    )


def test_the_scheme_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), b"1750000000." + BODY, hashlib.sha256).hexdigest()
    assert compute_signature(SECRET, NOW, BODY) == expected
    headers = signature_headers(SECRET, BODY, timestamp=NOW)
    assert headers == {TIMESTAMP_HEADER: "1750000000", SIGNATURE_HEADER: f"sha256={expected}"}


def test_a_correctly_signed_body_passes():
    assert verify(signature_headers(SECRET, BODY, timestamp=NOW)) == NOW


def test_uppercase_hex_is_accepted():
    headers = signature_headers(SECRET, BODY, timestamp=NOW)
    headers[SIGNATURE_HEADER] = "sha256=" + headers[SIGNATURE_HEADER][7:].upper()
    assert verify(headers) == NOW


def test_a_tampered_body_is_refused():
    headers = signature_headers(SECRET, BODY, timestamp=NOW)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(headers, BODY.replace(b"3000", b"300000"))


def test_whitespace_changes_to_the_body_are_refused_too():
    headers = signature_headers(SECRET, BODY, timestamp=NOW)
    with pytest.raises(InvalidSignature):
        verify(headers, BODY + b" ")


def test_a_wrong_secret_is_refused():
    headers = signature_headers("another-secret-0123456789", BODY, timestamp=NOW)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(headers)


def test_a_changed_timestamp_breaks_the_signature():
    headers = signature_headers(SECRET, BODY, timestamp=NOW)
    headers[TIMESTAMP_HEADER] = str(NOW + 1)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(headers)


@pytest.mark.parametrize("offset", [-301, 301, -86_400])
def test_a_stale_or_future_timestamp_is_refused_even_if_signed(offset):
    headers = signature_headers(SECRET, BODY, timestamp=NOW + offset)
    with pytest.raises(InvalidSignature, match="tolerance") as exc:
        verify(headers)
    assert exc.value.status_code == 401


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_within_the_tolerance_pass(offset):
    verify(signature_headers(SECRET, BODY, timestamp=NOW + offset))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing X-Tribune-Timestamp"),
        ({TIMESTAMP_HEADER: str(NOW)}, "missing X-Tribune-Signature"),
        ({TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "sha256=" + "0" * 64}, "unix seconds"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "0" * 64}, "sha256=<64 hex digits>"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "md5=" + "0" * 32}, "sha256="),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(headers, reason):
    with pytest.raises(InvalidSignature) as exc:
        verify(headers)
    assert reason in exc.value.message


def test_a_refused_signature_is_counted_per_service_and_route():
    """Refused signed webhooks feed the TribuneWebhookSignatureFailures alert."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from prometheus_client import REGISTRY
    from tribune_shared.app import install_common
    from tribune_shared.webhooks import InvalidSignature

    app = FastAPI()
    install_common(app, "unit-webhooks")

    @app.post("/hooks/{provider}")
    async def hook(provider: str) -> dict:
        if provider == "forged":
            raise InvalidSignature("signature does not match the body")
        return {}

    def count() -> float:
        value = REGISTRY.get_sample_value(
            "tribune_webhook_refusals_total",
            {"service": "unit-webhooks", "route": "/hooks/{provider}"},
        )
        return value or 0.0

    before = count()
    with TestClient(app) as client:
        assert client.post("/hooks/forged").status_code == 401
        assert client.post("/hooks/genuine").status_code == 200
        assert client.post("/hooks/forged").status_code == 401
    assert count() == before + 2
