"""The back office pages (gateway.webapp) on the gateway alone, over the real store: the
login form and its errors, the session cookie and its rules, the anti-CSRF token, the
language, logout revoking the session. (The pages with the services' data, in a real
browser: tests/e2e/test_browser_backoffice.py.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from gateway.webapp.security import CONTENT_SECURITY_POLICY, KEY_COOKIE, SESSION_COOKIE
from support import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def gateway_env(gateway_env, monkeypatch):
    # TestClient speaks http://testserver: a Secure cookie would never come back
    monkeypatch.setenv("GATEWAY_WEBAPP_COOKIE_SECURE", "false")
    return gateway_env


@pytest.fixture
def browser(gateway_api) -> TestClient:
    client, _ = gateway_api
    client.follow_redirects = False  # the tests look at the redirects themselves
    return client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the form carries no anti-CSRF token"
    return found.group(1)


def log_in(client: TestClient, password: str = ADMIN_PASSWORD, **extra: str):
    page = client.get("/app/login")
    assert page.status_code == 200
    return client.post(
        "/app/login",
        data={
            "email": ADMIN_EMAIL,
            "password": password,
            "csrf_token": csrf_of(page.text),
            **extra,
        },
    )


def test_the_root_and_the_app_send_a_visitor_to_the_login_page(browser):
    assert browser.get("/").headers["location"] == "/app"
    r = browser.get("/app")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/app/login?next=")


def test_the_login_page_is_french_first_with_a_strict_policy_and_a_form_key_cookie(browser):
    r = browser.get("/app/login")
    assert r.status_code == 200
    assert '<html lang="fr">' in r.text
    assert "Mot de passe" in r.text
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text and " style=" not in r.text  # no inline code
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(KEY_COOKIE + "=")
    for flag in ("HttpOnly", "Path=/app", "SameSite=strict"):
        assert flag.lower() in cookie.lower()


def test_english_by_accept_language_and_by_the_switch(browser):
    r = browser.get("/app/login", headers={"Accept-Language": "en-GB,en;q=0.9,fr;q=0.5"})
    assert '<html lang="en">' in r.text and "Password" in r.text
    r = browser.get("/app/lang/fr?next=/app/login")
    assert r.status_code == 303 and r.headers["location"] == "/app/login"
    r = browser.get("/app/login", headers={"Accept-Language": "en"})
    assert '<html lang="fr">' in r.text  # the choice wins over the browser's languages
    # never sent to another site
    assert browser.get("/app/lang/en?next=//evil.example/").headers["location"] == "/app"


def test_a_wrong_password_is_an_error_message_and_no_session(browser):
    r = log_in(browser, password="not-the-password")
    assert r.status_code == 401
    assert "Adresse e-mail ou mot de passe incorrect." in r.text
    assert SESSION_COOKIE not in browser.cookies


def test_past_the_login_limit_the_page_says_when_to_try_again(browser):
    for _ in range(5):  # GATEWAY_LOGIN_MAX_ATTEMPTS
        assert log_in(browser, password="not-the-password").status_code == 401
    r = log_in(browser)  # even the right password, until the window ends
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert re.search(r"Trop de tentatives\. Réessayez dans \d+ secondes\.", r.text)
    assert SESSION_COOKIE not in browser.cookies


def test_a_login_without_the_form_token_is_refused(browser):
    browser.get("/app/login")
    r = browser.post(
        "/app/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": "forged.token"},
    )
    assert r.status_code == 400
    assert SESSION_COOKIE not in browser.cookies
    # a token made for another browser's form key is refused too
    mine = browser.cookies[KEY_COOKIE]
    browser.cookies.clear()
    stolen = csrf_of(browser.get("/app/login").text)  # another browser's page
    browser.cookies.clear()
    browser.cookies.set(KEY_COOKIE, mine, path="/app")
    r = browser.post(
        "/app/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": stolen},
    )
    assert r.status_code == 400 and SESSION_COOKIE not in browser.cookies


def test_login_sets_the_session_cookie_and_renews_the_form_key(browser):
    before = browser.get("/app/login").cookies.get(KEY_COOKIE) or browser.cookies[KEY_COOKIE]
    r = log_in(browser, next="/app/contacts")
    assert r.status_code == 303 and r.headers["location"] == "/app/contacts"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
    for flag in ("HttpOnly", "Path=/app", "SameSite=strict"):
        assert flag.lower() in session.lower()
    assert browser.cookies[KEY_COOKIE] != before
    # the API never takes the cookie: it is for the pages alone
    assert browser.get("/api/v1/me").status_code == 401


def test_login_goes_only_to_pages_of_the_app(browser):
    r = log_in(browser, next="https://evil.example/app")
    assert r.headers["location"] == "/app"


def test_the_dashboard_shows_what_the_api_answers_and_leaves_out_the_rest(browser):
    log_in(browser)
    r = browser.get("/app")
    assert r.status_code == 200
    assert "Tableau de bord" in r.text and ADMIN_EMAIL in r.text
    # the services are not running here: their parts are left out, nothing invented
    assert "data-figure" not in r.text


def test_a_post_without_the_form_token_changes_nothing(browser):
    log_in(browser)
    r = browser.post("/app/logout", data={})
    assert r.status_code == 400
    assert browser.get("/app").status_code == 200  # still logged in


def test_logout_revokes_the_session_in_the_gateway(browser):
    log_in(browser)
    page = browser.get("/app")
    stolen = browser.cookies[SESSION_COOKIE]
    r = browser.post("/app/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/app/login?out=1"
    assert SESSION_COOKIE not in browser.cookies
    # a copy of the cookie taken before is worth nothing: its tokens were revoked
    browser.cookies.set(SESSION_COOKIE, stolen, path="/app")
    r = browser.get("/app")
    assert r.status_code == 303 and "/app/login" in r.headers["location"]


def test_a_person_id_that_is_not_an_id_is_the_not_found_page(browser):
    log_in(browser)
    r = browser.get("/app/people/not%20an%20id")
    assert r.status_code == 404
    assert "Page introuvable" in r.text
