"""Webhook signatures (pure): the payment webhook (memberships) and the inbound SMS
webhook (consent) are signed the same way.

The provider (or the gateway relaying it) sends two headers:

    X-Tribune-Timestamp: <unix seconds>
    X-Tribune-Signature: sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + raw body)>

The signature covers the exact bytes received, so it is checked before the body is parsed;
the timestamp bounds replays to a tolerance window.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime

from tribune_shared.errors import Unauthorized

TIMESTAMP_HEADER = "X-Tribune-Timestamp"
SIGNATURE_HEADER = "X-Tribune-Signature"

#: the OpenAPI parameters of a signed webhook route (``openapi_extra={"parameters": ...}``)
SIGNATURE_PARAMETERS: list[dict[str, object]] = [
    {
        "name": TIMESTAMP_HEADER,
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "unix seconds",
    },
    {
        "name": SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": 'sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + body)>',
    },
]
SCHEME = "sha256"

_TIMESTAMP = re.compile(r"^\d{1,12}$")
_SIGNATURE = re.compile(rf"^{SCHEME}=([0-9a-fA-F]{{64}})$")


class InvalidSignature(Unauthorized):
    """401: the webhook is not proven to come from the provider; nothing is recorded."""


def compute_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers a provider sends with ``body`` (for providers' adapters and tests)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: f"{SCHEME}={compute_signature(secret, ts, body)}",
    }


def verify_signature(
    secret: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int,
) -> int:
    """Check a webhook's headers against its raw body; returns the timestamp or raises
    ``InvalidSignature`` with the reason."""
    if not timestamp_header:
        raise InvalidSignature(f"missing {TIMESTAMP_HEADER} header")
    if not signature_header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamp_text = timestamp_header.strip()
    if not _TIMESTAMP.match(timestamp_text):
        raise InvalidSignature(f"{TIMESTAMP_HEADER} must be unix seconds")
    match = _SIGNATURE.match(signature_header.strip())
    if match is None:
        raise InvalidSignature(f"{SIGNATURE_HEADER} must be '{SCHEME}=<64 hex digits>'")
    # The header's exact text is what was signed.
    expected = compute_signature(secret, timestamp_text, body)
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise InvalidSignature("signature does not match the body")
    timestamp = int(timestamp_text)
    if abs(now - timestamp) > tolerance_seconds:
        raise InvalidSignature(
            f"timestamp is outside the {tolerance_seconds}s tolerance (stale or replayed webhook)"
        )
    return timestamp


def signed_at(
    secret: str | None,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int,
    what: str,
) -> datetime:
    """When a webhook was signed, once its signature over the raw body is proven
    (``InvalidSignature`` otherwise); with no secret set, ``what`` is not accepted at all
    (an optional feed a deployment did not configure)."""
    if not secret:
        raise InvalidSignature(f"{what} are not accepted: no secret is set")
    at = verify_signature(
        secret,
        timestamp_header,
        signature_header,
        body,
        now=now,
        tolerance_seconds=tolerance_seconds,
    )
    return datetime.fromtimestamp(at, UTC)
