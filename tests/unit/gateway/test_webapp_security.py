"""The web app's cookie and anti-CSRF rules: a form token works for its own browser only,
not after it expires, never for another purpose; cookies are HttpOnly, SameSite=Strict,
Secure and scoped to /app; a redirect never leaves the app."""

from __future__ import annotations

import pytest
from fastapi import Response
from gateway.webapp.security import (
    CONTENT_SECURITY_POLICY,
    CookieRules,
    CsrfTokens,
    SessionTokens,
    decode_session,
    encode_session,
    new_form_key,
    safe_next,
)
from tribune_shared.tokens import SignedTokens

SECRET = "a-test-secret-of-at-least-32-characters!"


def test_a_form_token_is_accepted_with_the_key_of_its_own_browser():
    csrf = CsrfTokens(SECRET, ttl_seconds=3600)
    key = new_form_key()
    assert csrf.check(csrf.sign(key), key)


def test_a_form_token_of_another_browser_is_refused():
    csrf = CsrfTokens(SECRET, ttl_seconds=3600)
    assert not csrf.check(csrf.sign(new_form_key()), new_form_key())


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b", "x" * 5000])
def test_a_missing_or_malformed_form_token_is_refused(token):
    csrf = CsrfTokens(SECRET, ttl_seconds=3600)
    assert not csrf.check(token, new_form_key())


def test_a_form_token_without_a_key_cookie_is_refused():
    csrf = CsrfTokens(SECRET, ttl_seconds=3600)
    key = new_form_key()
    assert not csrf.check(csrf.sign(key), None)
    assert not csrf.check(csrf.sign("short"), "short")  # not a key we make


def test_a_form_token_signed_with_another_secret_is_refused():
    key = new_form_key()
    forged = CsrfTokens("another-secret-of-at-least-32-characters", 3600).sign(key)
    assert not CsrfTokens(SECRET, 3600).check(forged, key)


def test_a_token_made_for_another_purpose_is_refused():
    key = new_form_key()
    other = SignedTokens(SECRET, "unsubscribe").sign({"k": key})
    assert not CsrfTokens(SECRET, 3600).check(other, key)


def test_an_expired_form_token_is_refused():
    now = [1_800_000_000.0]
    csrf = CsrfTokens(SECRET, ttl_seconds=60, clock=lambda: now[0])
    key = new_form_key()
    token = csrf.sign(key)
    now[0] += 60
    assert csrf.check(token, key)  # still within its lifetime
    now[0] += 1
    assert not csrf.check(token, key)


def _set_cookie(rules: CookieRules, clear: bool = False) -> str:
    response = Response()
    if clear:
        rules.clear(response, "tribune_session")
    else:
        rules.set(response, "tribune_session", "value")
    return response.headers["set-cookie"]


def test_cookies_are_http_only_same_site_strict_scoped_to_the_app_and_secure():
    header = _set_cookie(CookieRules(secure=True))
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")}
    assert flags["path"] == "Path=/app"
    assert flags["samesite"].lower() == "samesite=strict"
    assert "httponly" in flags and "secure" in flags
    assert "secure" not in _set_cookie(CookieRules(secure=False)).lower()


def test_clearing_a_cookie_expires_it_with_the_same_scope():
    header = _set_cookie(CookieRules(secure=True), clear=True)
    assert "Max-Age=0" in header and "Path=/app" in header


def test_the_session_cookie_round_trips_and_refuses_anything_else():
    tokens = SessionTokens("header.payload.signature", "trt_refresh")
    assert decode_session(encode_session(tokens)) == tokens
    assert decode_session(encode_session(SessionTokens("a.b.c"))) == SessionTokens("a.b.c")
    for bad in (None, "", "%%%", "bnVsbA", "e30", "x" * 5000):  # null, {}, too long
        assert decode_session(bad) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/app/contacts?q=dupont", "/app/contacts?q=dupont"),
        ("/app", "/app"),
        ("/app/people/abc", "/app/people/abc"),
        (None, "/app"),
        ("", "/app"),
        ("https://evil.example/app", "/app"),
        ("//evil.example/app", "/app"),
        ("/\\evil.example", "/app"),
        ("/api/v1/me", "/app"),
        ("/application", "/app"),
        ("/app/../api/v1/me", "/app"),
        ("/app//evil", "/app"),
        ("javascript:alert(1)", "/app"),
    ],
)
def test_after_login_the_browser_goes_only_to_a_page_of_the_app(target, expected):
    assert safe_next(target) == expected


def test_the_pages_policy_allows_no_inline_code_nor_framing():
    policy = dict(
        part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";") if part.strip()
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
