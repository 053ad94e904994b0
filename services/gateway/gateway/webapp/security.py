"""The web app's session cookie, its anti-CSRF tokens and the headers of its pages (pure:
no I/O).

The browser holds the API's own tokens (the access token and the refresh token of the
session the login opened) in one cookie, ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it), ``Secure`` (HTTPS only, a setting
for the http://localhost dev stack) and ``Path=/app`` (the API never receives it: the
API only takes bearer tokens, so a cookie can never authenticate an API call).

A second cookie holds a random **form key**, made on the first page and renewed at each
login and logout. Every form carries an anti-CSRF token signed by the gateway
(``tribune_shared.tokens``, purpose ``webapp-csrf``) naming that key; a POST is accepted
only when its token is genuine, unexpired and names the key of the browser's own cookie.
Another site can neither read the token (same-origin policy) nor make the browser send
the key (SameSite=Strict), and the login form is protected too (no login CSRF).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.responses import Response
from tribune_shared.tokens import SignedTokens, TokenError

#: everything the web app serves lives under it; its cookies are sent nowhere else
APP_PATH = "/app"
SESSION_COOKIE = "tribune_session"
KEY_COOKIE = "tribune_form_key"
LANG_COOKIE = "tribune_lang"
#: the name of the hidden field every form carries
CSRF_FIELD = "csrf_token"
CSRF_PURPOSE = "webapp-csrf"
#: a cookie bigger than this is not ours (browsers cap a cookie at 4 KiB)
MAX_COOKIE_CHARS = 4000
#: a year: the language choice outlives sessions
LANG_COOKIE_SECONDS = 365 * 86_400

#: the pages' Content-Security-Policy: our own scripts, styles and API only, no inline
#: code, no framing, forms post to ourselves only
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # personal data on every page: never kept by the browser or a shared cache
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class SessionTokens:
    """What the session cookie holds: the API's tokens for this browser."""

    access_token: str
    refresh_token: str | None = None


def encode_session(tokens: SessionTokens) -> str:
    raw = json.dumps(
        {"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_session(value: str | None) -> SessionTokens | None:
    """The tokens of a session cookie; None for anything else (the API checks the tokens
    themselves: a forged cookie gets it no further than a forged bearer token would)."""
    if not value or len(value) > MAX_COOKIE_CHARS:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    access, refresh = data.get("a"), data.get("r")
    if not isinstance(access, str) or not access:
        return None
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        return None
    return SessionTokens(access, refresh)


def new_form_key() -> str:
    return secrets.token_urlsafe(24)


def valid_form_key(value: str | None) -> bool:
    return bool(value) and 16 <= len(value or "") <= 64 and (value or "").isascii()


class CsrfTokens:
    """Sign and check the anti-CSRF token of the forms of one browser (its form key)."""

    def __init__(
        self, secret: str, ttl_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._tokens = SignedTokens(secret, CSRF_PURPOSE, ttl_seconds=ttl_seconds, clock=clock)

    def sign(self, form_key: str) -> str:
        return self._tokens.sign({"k": form_key})

    def check(self, token: str | None, form_key: str | None) -> bool:
        """True when ``token`` is genuine, unexpired and made for ``form_key``."""
        if not token or not valid_form_key(form_key):
            return False
        try:
            data = self._tokens.verify(token).data
        except TokenError:
            return False
        named = data.get("k")
        return isinstance(named, str) and hmac.compare_digest(named, str(form_key))


@dataclass(frozen=True)
class CookieRules:
    """How the web app sets its cookies (Starlette's ``set_cookie`` arguments)."""

    secure: bool
    path: str = APP_PATH
    httponly: bool = True
    samesite: Literal["strict"] = "strict"

    def set(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.path,
            secure=self.secure,
            httponly=self.httponly,
            samesite=self.samesite,
        )

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name,
            path=self.path,
            secure=self.secure,
            httponly=self.httponly,
            samesite=self.samesite,
        )


def safe_next(target: str | None, default: str = APP_PATH) -> str:
    """Where to send the browser after a login or a language switch: a path of the web
    app only (never another site: ``//evil.example``, ``https://...``, ``/app/../api``)."""
    if not target or len(target) > 2000:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or not target.startswith("/"):
        return default
    path = parts.path
    if path != APP_PATH and not path.startswith(APP_PATH + "/"):
        return default
    if any(segment in (".", "..") for segment in path.split("/")) or "//" in path:
        return default
    return target
