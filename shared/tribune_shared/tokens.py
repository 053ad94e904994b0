"""Signed tokens for public links (unsubscribe, double opt-in confirmation...).

A token is ``base64url(payload) "." base64url(mac)``:

* ``payload`` is compact JSON ``{"v": <format version>, "p": <purpose>, "d": {...data},
  "e": <expiry, unix seconds>}`` (``e`` absent: the token never expires);
* ``mac`` is HMAC-SHA256 under the secret of ``b"tribune-token:v<version>:<purpose>:" +
  payload``, so a token made for one purpose (an unsubscribe link) can never be used for
  another (a confirmation link) even with the same secret.

Verification refuses, each with its own reason: a malformed token, a wrong signature
(forged or altered), a token of another purpose, an unknown format version, and an
expired token (checked only once the signature is proven, so a forgery never learns
anything). Secrets can be rotated: ``previous_secrets`` still verify, only the first
secret signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1
#: purpose of the unsubscribe links messaging puts in every email (verified by consent)
UNSUBSCRIBE = "unsubscribe"


class TokenError(Exception):
    """The token is refused; ``reason`` is a stable code, the message is for people."""

    reason = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedToken(TokenError):
    reason = "malformed"


class TamperedToken(TokenError):
    """The signature does not match: forged, altered, or signed with another secret."""

    reason = "bad_signature"


class WrongPurpose(TokenError):
    reason = "wrong_purpose"


class UnsupportedVersion(TokenError):
    reason = "unsupported_version"


class ExpiredToken(TokenError):
    reason = "expired"

    def __init__(self, message: str, expired_at: int) -> None:
        super().__init__(message)
        self.expired_at = expired_at


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or any(c not in _B64_ALPHABET for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class VerifiedToken:
    purpose: str
    data: dict[str, Any]
    expires_at: int | None
    version: int


class SignedTokens:
    """Sign and verify tokens of one ``purpose``.

    ``ttl_seconds`` is the default lifetime of signed tokens (None: no expiry);
    ``clock`` returns unix seconds (tests pass a fake one).
    """

    def __init__(
        self,
        secret: str,
        purpose: str,
        *,
        ttl_seconds: float | None = None,
        previous_secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("a token secret is required")
        if not purpose or ":" in purpose:
            raise ValueError("purpose must be a non-empty string without ':'")
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive (or None for no expiry)")
        self.purpose = purpose
        self.ttl_seconds = ttl_seconds
        self._keys = [s.encode() for s in (secret, *previous_secrets) if s]
        self._clock = clock

    @staticmethod
    def _mac(key: bytes, version: int, purpose: str, payload: bytes) -> bytes:
        context = f"tribune-token:v{version}:{purpose}:".encode()
        return hmac.new(key, context + payload, hashlib.sha256).digest()

    def sign(self, data: Mapping[str, Any], *, ttl_seconds: float | bool | None = True) -> str:
        """A token carrying ``data`` (JSON-serialisable). ``ttl_seconds``: True = the
        default lifetime, None = no expiry, a number = that lifetime."""
        ttl = self.ttl_seconds if ttl_seconds is True else ttl_seconds
        claims: dict[str, Any] = {"v": FORMAT_VERSION, "p": self.purpose, "d": dict(data)}
        if ttl is not None:
            if ttl <= 0:
                raise ValueError("ttl_seconds must be positive")
            claims["e"] = int(self._clock() + ttl)
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        mac = self._mac(self._keys[0], FORMAT_VERSION, self.purpose, payload)
        return f"{_b64(payload)}.{_b64(mac)}"

    def verify(self, token: str) -> VerifiedToken:
        """The token's content if genuine, of this purpose and not expired; else a
        ``TokenError`` subclass naming why."""
        if not isinstance(token, str) or len(token) > 4096:
            raise MalformedToken("the link is malformed")
        try:
            encoded_payload, encoded_mac = token.strip().split(".")
            payload = _unb64(encoded_payload)
            mac = _unb64(encoded_mac)
            claims = json.loads(payload)
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise MalformedToken("the link is malformed") from exc
        if not isinstance(claims, dict):
            raise MalformedToken("the link is malformed")
        version, purpose, data = claims.get("v"), claims.get("p"), claims.get("d")
        if not isinstance(purpose, str) or not isinstance(data, dict):
            raise MalformedToken("the link is malformed")
        if not isinstance(version, int) or version != FORMAT_VERSION:
            # Checked before the signature: we cannot know how another version is signed.
            raise UnsupportedVersion(f"token format version {version!r} is not supported")
        if not any(
            hmac.compare_digest(mac, self._mac(key, version, purpose, payload))
            for key in self._keys
        ):
            raise TamperedToken("the link's signature is not valid (forged or altered)")
        if purpose != self.purpose:
            raise WrongPurpose(f"this link is for {purpose!r}, not {self.purpose!r}")
        expires_at = claims.get("e")
        if expires_at is not None:
            if not isinstance(expires_at, int):
                raise MalformedToken("the link is malformed")
            if self._clock() > expires_at:
                raise ExpiredToken("the link has expired", expires_at)
        return VerifiedToken(purpose=purpose, data=data, expires_at=expires_at, version=version)


class UnsubscribeTokens:
    """The unsubscribe token of every email: names the contact and the purpose of the
    message; no expiry (an unsubscribe link keeps working as long as the email exists).
    Messaging signs it, consent verifies it: both hold the same secret."""

    def __init__(self, secret: str, *, previous_secrets: Sequence[str] = ()) -> None:
        self._tokens = SignedTokens(secret, UNSUBSCRIBE, previous_secrets=previous_secrets)

    def sign(self, contact_id: str, purpose: str) -> str:
        if not contact_id or not purpose:
            raise ValueError("contact_id and purpose are required")
        return self._tokens.sign({"c": contact_id, "p": purpose}, ttl_seconds=None)

    def verify(self, token: str) -> tuple[str, str]:
        """(contact_id, purpose) of a genuine token; a TokenError otherwise."""
        data = self._tokens.verify(token).data
        contact_id, purpose = data.get("c"), data.get("p")
        if not isinstance(contact_id, str) or not contact_id:
            raise MalformedToken("the link is malformed")
        if not isinstance(purpose, str) or not purpose:
            raise MalformedToken("the link is malformed")
        return contact_id, purpose


__all__ = [
    "UNSUBSCRIBE",
    "ExpiredToken",
    "MalformedToken",
    "SignedTokens",
    "TamperedToken",
    "TokenError",
    "UnsubscribeTokens",
    "UnsupportedVersion",
    "VerifiedToken",
    "WrongPurpose",
]
