"""The back office pages (gateway.webapp) on the gateway alone, over the real store: the
login form and its errors, the session cookie and its rules, the anti-CSRF token, the
language, logout revoking the session. (The pages with the services' data, in a real
browser: tests/e2e/test_browser_backoffice.py.)"""

from __future__ import annotations

import re
import uuid

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
    # a live stream ends soon: the tests read whole answers
    monkeypatch.setenv("GATEWAY_LIVE_EVENTS_MAX_SECONDS", "1")
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


# ---------------------------------------------------------------- work screens (issue 12)
# On the gateway alone: users and federations are the gateway's own; the screens of the
# services' data (imports, privacy requests, segments, campaigns) are driven in a browser
# against the whole platform (tests/e2e/test_browser_backoffice_admin.py).


def api_token(client: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD):
    r = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def new_account(client: TestClient, role: str, federation_id: str | None = None):
    """(id, email, password) of a new user made by the national administrator."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@tribune.test"
    password = f"pw-{uuid.uuid4().hex}"
    body = {"email": email, "password": password, "role": role}
    if federation_id:
        body["federation_id"] = federation_id
    r = client.post("/api/v1/users", json=body, headers=api_token(client))
    assert r.status_code == 201, r.text
    return r.json()["id"], email, password


def new_federation(client: TestClient, name: str, parent_id: str | None = None) -> str:
    body = {
        "name": f"{name} {uuid.uuid4().hex[:6]}",
        **({"parent_id": parent_id} if parent_id else {}),
    }
    r = client.post("/api/v1/federations", json=body, headers=api_token(client))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def log_in_as(client: TestClient, email: str, password: str):
    client.cookies.clear()
    page = client.get("/app/login")
    r = client.post(
        "/app/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303, r.text
    return r


def test_an_administrator_creates_renames_and_moves_a_federation_from_the_pages(browser):
    log_in(browser)
    page = browser.get("/app/federations")
    assert page.status_code == 200 and "Arborescence" in page.text
    name = f"Gironde {uuid.uuid4().hex[:6]}"
    r = browser.post("/app/federations", data={"name": name, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/app/federations?done=created"
    listed = browser.get(r.headers["location"])
    assert "Créé." in listed.text and name in listed.text
    gironde = re.search(r'href="/app/federations/([^"]+)">' + re.escape(name), listed.text)
    assert gironde, "the new federation is not in the tree"
    fed_id = gironde.group(1)
    parent = new_federation(browser, "Nouvelle-Aquitaine")

    page = browser.get(f"/app/federations/{fed_id}")
    r = browser.post(
        f"/app/federations/{fed_id}",
        data={"name": name + " (33)", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    r = browser.post(
        f"/app/federations/{fed_id}",
        data={"parent_id": parent, "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    shown = browser.get(r.headers["location"])
    assert "Modification enregistrée." in shown.text and f"{name} (33)" in shown.text
    fed = browser.get(f"/api/v1/federations/{fed_id}", headers=api_token(browser)).json()
    assert fed["name"] == f"{name} (33)" and fed["parent_id"] == parent


def test_a_blank_federation_name_is_the_form_again_with_the_reason(browser):
    log_in(browser)
    before = browser.get("/api/v1/federations", headers=api_token(browser)).json()
    page = browser.get("/app/federations")
    r = browser.post("/app/federations", data={"name": "", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 422
    assert 'role="alert"' in r.text and "name" in r.text
    assert browser.get("/api/v1/federations", headers=api_token(browser)).json() == before


def test_an_administrator_changes_a_role_and_deactivates_a_user_from_the_pages(browser):
    fed = new_federation(browser, "Finistère")
    user_id, email, password = new_account(browser, "viewer", fed)
    log_in(browser)
    listed = browser.get("/app/users", params={"q": email.split("@")[0]})
    assert listed.status_code == 200 and email in listed.text
    page = browser.get(f"/app/users/{user_id}")
    assert "Lecture seule" in page.text
    r = browser.post(
        f"/app/users/{user_id}",
        data={"action": "role", "role": "secretary", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/app/users/{user_id}?done=saved"
    page = browser.get(r.headers["location"])
    assert 'data-role="secretary"' in page.text and "Modification enregistrée." in page.text

    r = browser.post(
        f"/app/users/{user_id}",
        data={"action": "deactivate", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    assert 'data-active="false"' in browser.get(f"/app/users/{user_id}").text
    # the account is refused at once
    r = browser.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code in (401, 403)


def test_granting_the_dpo_role_without_the_password_is_refused_with_the_reason(browser):
    user_id, _, _ = new_account(browser, "viewer")
    log_in(browser)
    page = browser.get(f"/app/users/{user_id}")
    r = browser.post(
        f"/app/users/{user_id}",
        data={"action": "role", "role": "dpo", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 422
    assert 'role="alert"' in r.text and "confirm_password" in r.text
    r = browser.post(
        f"/app/users/{user_id}",
        data={
            "action": "role",
            "role": "dpo",
            "confirm_password": "not-my-password",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert r.status_code == 403 and "confirm_password" in r.text  # the form, with why
    assert 'data-role="viewer"' in browser.get(f"/app/users/{user_id}").text


def test_new_forms_without_the_token_are_refused_and_change_nothing(browser):
    fed = new_federation(browser, "Morbihan")
    user_id, _, _ = new_account(browser, "viewer", fed)
    log_in(browser)
    before = browser.get(f"/api/v1/federations/{fed}", headers=api_token(browser)).json()
    job = "0" * 32
    for path, data in (
        ("/app/federations", {"name": "Forgée"}),
        (f"/app/federations/{fed}", {"name": "Forgée"}),
        (f"/app/users/{user_id}", {"action": "deactivate"}),
        (f"/app/campaigns/{job}/pause", {}),
        (f"/app/imports/{job}/cancel", {}),
    ):
        r = browser.post(path, data={**data, "csrf_token": "forged.token"})
        assert r.status_code == 400, path
        assert "Demande refusée" in r.text
    r = browser.post(
        "/app/imports",
        data={"origin_kind": "import", "origin_detail": "forgée"},
        files={"file": ("c.csv", b"email\na@example.fr\n", "text/csv")},
    )
    assert r.status_code == 400
    after = browser.get(f"/api/v1/federations/{fed}", headers=api_token(browser)).json()
    assert after == before
    names = [
        f["name"] for f in browser.get("/api/v1/federations", headers=api_token(browser)).json()
    ]
    assert "Forgée" not in names
    user = browser.get(f"/api/v1/users/{user_id}", headers=api_token(browser)).json()
    assert user["active"] is True


def test_an_upload_without_a_session_is_sent_to_the_login_page_unread(browser):
    r = browser.post(
        "/app/imports",
        files={"file": ("c.csv", b"email\na@example.fr\n", "text/csv")},
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/app/login?next=")


@pytest.mark.parametrize("role", ["viewer", "secretary"])
def test_a_role_the_api_refuses_sees_a_clear_refusal_page(browser, role):
    _, email, password = new_account(browser, role)
    log_in_as(browser, email, password)
    r = browser.get("/app/users")
    assert r.status_code == 403
    assert "Accès refusé" in r.text
    assert "Votre rôle ne permet pas d&#39;ouvrir cette page." in r.text
    # and the menu does not offer it
    assert 'href="/app/users"' not in r.text


def test_another_federations_federation_and_user_are_the_not_found_page(browser):
    paris, lyon = new_federation(browser, "Paris"), new_federation(browser, "Lyon")
    lyon_user, _, _ = new_account(browser, "viewer", lyon)
    _, email, password = new_account(browser, "admin", paris)
    log_in_as(browser, email, password)
    assert browser.get(f"/app/federations/{paris}").status_code == 200
    for path in (f"/app/federations/{lyon}", f"/app/users/{lyon_user}", "/app/users/no%20id"):
        r = browser.get(path)
        assert r.status_code == 404, path
        assert "Page introuvable" in r.text
    # nor can a form reach them
    page = browser.get(f"/app/federations/{paris}")
    r = browser.post(
        f"/app/users/{lyon_user}",
        data={"action": "deactivate", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 404


def test_the_dashboard_follows_the_live_events_of_the_users_subtree(browser):
    assert browser.get("/app/live/events").status_code == 401  # no session, no stream
    log_in(browser)
    page = browser.get("/app")
    assert 'data-events="/app/live/events?federation_id=' in page.text
    r = browser.get("/app/live/events")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "event: ready" in r.text and "event: end" in r.text
