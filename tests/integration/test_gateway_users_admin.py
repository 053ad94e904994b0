"""User administration over the real store: listing a subtree's users with filters and
a cursor, reading one, moving a user, the role rule, and the audit of every change."""

from __future__ import annotations

import pytest
from support import PASSWORD, add_federation, add_user, audit_entries, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def tree(gateway_api):
    """National > Paris > Paris 11e, and Lyon; a Paris administrator; users everywhere."""
    client, settings = gateway_api
    national = bearer(client)
    paris = add_federation(client, national, "Paris")["id"]
    p11 = add_federation(client, national, "Paris 11e", paris)["id"]
    lyon = add_federation(client, national, "Lyon")["id"]

    def user(email: str, role: str, federation_id: str) -> str:
        return add_user(client, national, email, role, federation_id)["id"]

    ids = {
        "paris_admin": user("boss@paris.test", "admin", paris),
        "anna": user("anna@paris.test", "secretary", paris),
        "bob": user("bob@paris.test", "viewer", p11),
        "carla": user("carla@paris.test", "treasurer", p11),
        "lyon": user("dan@lyon.test", "secretary", lyon),
    }
    paris_admin = bearer(client, "boss@paris.test", PASSWORD)
    return client, settings, national, paris_admin, {"paris": paris, "p11": p11, "lyon": lyon}, ids


def emails(page: dict) -> list[str]:
    return [u["email"] for u in page["items"]]


def test_an_admin_lists_their_subtrees_users_with_filters_and_a_cursor(tree):
    client, _, _, paris_admin, _, _ = tree
    r = client.get("/api/v1/users", headers=paris_admin)
    assert r.status_code == 200, r.text
    assert emails(r.json()) == [
        "anna@paris.test",
        "bob@paris.test",
        "boss@paris.test",
        "carla@paris.test",
    ]
    assert all("password_hash" not in u for u in r.json()["items"])
    first = client.get("/api/v1/users", params={"limit": 3}, headers=paris_admin).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = client.get(
        "/api/v1/users", params={"limit": 3, "cursor": first["next_cursor"]}, headers=paris_admin
    ).json()
    assert emails(rest) == ["carla@paris.test"] and rest["next_cursor"] is None
    by_role = client.get("/api/v1/users", params={"role": "viewer"}, headers=paris_admin)
    assert emails(by_role.json()) == ["bob@paris.test"]
    by_q = client.get("/api/v1/users", params={"q": "CAR"}, headers=paris_admin)
    assert emails(by_q.json()) == ["carla@paris.test"]
    # a regex character is searched for as text
    assert (
        client.get("/api/v1/users", params={"q": ".*"}, headers=paris_admin).json()["items"] == []
    )
    r = client.get("/api/v1/users", params={"cursor": "%%%"}, headers=paris_admin)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "cursor"


def test_one_user_is_readable_in_the_subtree_only(tree):
    client, _, national, paris_admin, _, ids = tree
    r = client.get(f"/api/v1/users/{ids['bob']}", headers=paris_admin)
    assert r.status_code == 200 and r.json()["email"] == "bob@paris.test"
    assert client.get(f"/api/v1/users/{ids['lyon']}", headers=paris_admin).status_code == 404
    assert client.get(f"/api/v1/users/{ids['lyon']}", headers=national).status_code == 200
    secretary = bearer(client, "anna@paris.test", PASSWORD)
    assert client.get("/api/v1/users", headers=secretary).status_code == 403
    assert client.get(f"/api/v1/users/{ids['bob']}", headers=secretary).status_code == 403


def test_deactivate_and_reactivate_list_by_state(tree):
    client, _, _, paris_admin, _, ids = tree
    r = client.patch(f"/api/v1/users/{ids['bob']}", json={"active": False}, headers=paris_admin)
    assert r.status_code == 200 and r.json()["active"] is False
    inactive = client.get("/api/v1/users", params={"active": "false"}, headers=paris_admin)
    assert emails(inactive.json()) == ["bob@paris.test"]
    r = client.post("/api/v1/auth/token", data={"username": "bob@paris.test", "password": PASSWORD})
    assert r.status_code == 401
    r = client.patch(f"/api/v1/users/{ids['bob']}", json={"active": True}, headers=paris_admin)
    assert r.status_code == 200 and r.json()["active"] is True
    bearer(client, "bob@paris.test", PASSWORD)


def test_moving_a_user_within_the_subtree_changes_what_they_see_and_is_audited(tree):
    client, settings, _, paris_admin, feds, ids = tree
    bob = bearer(client, "bob@paris.test", PASSWORD)
    assert len(client.get("/api/v1/federations", headers=bob).json()) == 1  # Paris 11e
    r = client.patch(
        f"/api/v1/users/{ids['bob']}",
        json={"federation_id": feds["paris"], "role": "secretary"},
        headers=paris_admin,
    )
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["federation_id"] == feds["paris"] and moved["role"] == "secretary"
    assert moved["federation_path"].count("/") == 3
    # at once on this replica: Bob now sees Paris and its child
    assert len(client.get("/api/v1/federations", headers=bob).json()) == 2
    # not to a federation outside the caller's subtree, nor a user outside it
    r = client.patch(
        f"/api/v1/users/{ids['bob']}", json={"federation_id": feds["lyon"]}, headers=paris_admin
    )
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "federation_id"
    r = client.patch(
        f"/api/v1/users/{ids['lyon']}", json={"federation_id": feds["paris"]}, headers=paris_admin
    )
    assert r.status_code == 404
    (entry,) = audit_entries(
        settings,
        {"target_user_id": ids["bob"], "changes.federation_id": {"$exists": 1}, "status": 200},
    )
    assert entry["changes"] == {"federation_id": feds["paris"], "role": "secretary"}


def test_every_account_change_is_audited_refusals_too(tree):
    client, settings, _, paris_admin, _, ids = tree
    client.patch(f"/api/v1/users/{ids['carla']}", json={"active": False}, headers=paris_admin)
    client.post(
        f"/api/v1/users/{ids['carla']}/password",
        json={"new_password": "yet-another-password"},
        headers=paris_admin,
    )
    client.patch(f"/api/v1/users/{ids['lyon']}", json={"role": "viewer"}, headers=paris_admin)
    entries = audit_entries(
        settings,
        {"target_user_id": {"$in": [ids["carla"], ids["lyon"]]}, "user_id": ids["paris_admin"]},
        count=3,
    )
    seen = sorted(
        (e["target_user_id"] == ids["carla"], e["status"], str(e["changes"])) for e in entries
    )
    assert seen == [
        (False, 404, "{'role': 'viewer'}"),
        (True, 200, "{'active': 'false'}"),
        (True, 200, "{'password': 'reset'}"),
    ]
