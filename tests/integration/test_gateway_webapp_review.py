"""The duplicates review's and the segment editor's pages (gateway.webapp.duplicates_api,
the segment routes of gateway.webapp.screens_api) on the gateway alone, over the real
store: their forms refuse a POST without the anti-CSRF token before anything is asked of
the API, ids that cannot be ids are the not-found page without a call, and a visitor
without a session is sent to the login page. (With the services' data, in a real browser:
tests/e2e/test_browser_backoffice_review.py.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from support import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SEGMENT = "5" * 32


@pytest.fixture
def gateway_env(gateway_env, monkeypatch):
    # TestClient speaks http://testserver: a Secure cookie would never come back
    monkeypatch.setenv("GATEWAY_WEBAPP_COOKIE_SECURE", "false")
    return gateway_env


@pytest.fixture
def browser(gateway_api) -> TestClient:
    client, _ = gateway_api
    client.follow_redirects = False
    return client


def log_in(client: TestClient) -> None:
    page = client.get("/app/login")
    token = CSRF.search(page.text)
    assert token, "the login form carries no anti-CSRF token"
    r = client.post(
        "/app/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
    )
    assert r.status_code == 303, r.text


def test_the_new_forms_without_the_token_are_refused_before_the_api_is_asked(browser):
    log_in(browser)
    for path, data in (
        ("/app/duplicates/merge", {"survivor_id": "a" * 32, "merged_id": "b" * 32}),
        (f"/app/segments/{SEGMENT}", {"name": "Forgé", "version": "1"}),
        (f"/app/segments/{SEGMENT}/delete", {"confirm": "yes"}),
        ("/app/segments/new", {"name": "Forgé", "tags": "tract", "action": "create"}),
    ):
        r = browser.post(path, data={**data, "csrf_token": "forged.token"})
        assert r.status_code == 400, path
        assert "Demande refusée" in r.text


@pytest.mark.parametrize(
    "query",
    [
        "survivor=not%20an%20id&merged=" + "b" * 32,
        "survivor=" + "a" * 32,  # no second contact
        "survivor=" + "a" * 32 + "&merged=" + "a" * 32,  # a contact with itself
    ],
)
def test_a_review_of_ids_that_cannot_be_a_pair_is_the_not_found_page(browser, query):
    log_in(browser)
    r = browser.get(f"/app/duplicates/review?{query}")
    assert r.status_code == 404
    assert "Page introuvable" in r.text


def test_a_visitor_without_a_session_is_sent_to_the_login_page(browser):
    for path in ("/app/duplicates", f"/app/duplicates/review?survivor={'a' * 32}"):
        r = browser.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/app/login?next=")
    r = browser.post(f"/app/segments/{SEGMENT}/delete", data={"confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"].startswith("/app/login?next=")
