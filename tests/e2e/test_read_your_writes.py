"""Read-your-writes through the gateway, across every pair of services where one uses what
another just wrote: the second request comes at once, with no client-side retry, and
never meets a false 404 or a false refusal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tribune_shared.consistency import HEADER

pytestmark = pytest.mark.e2e

REPEAT = 15


@dataclass
class TokenClient:
    """A well-behaved client: sends back the consistency token of its latest response."""

    #: the signed-in user (conftest.Client), which keeps its token fresh
    user: Callable[..., httpx.Response]
    consistency: str | None = None
    seen: list[int] = field(default_factory=list)

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if self.consistency:
            headers[HEADER] = self.consistency
        r = self.user(method, path, headers=headers, **kw)
        self.consistency = r.headers.get(HEADER, self.consistency)
        self.seen.append(r.status_code)
        return r


def contact_body(**over: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {
        "family_name": f"Immédiat-{tag}",
        "email": f"now.{tag}@example.fr",
        "origin": {"kind": "web_form"},
        **over,
    }


GRANT = {"channel": "email", "purpose": "news", "source": "web_form"}


@pytest.fixture
def client(admin) -> TokenClient:
    return TokenClient(admin)


def test_a_new_federation_is_usable_at_once_by_contacts_and_consent(client):
    for i in range(REPEAT):
        r = client(
            "POST", "/api/v1/federations", json={"name": f"Immédiate {uuid.uuid4().hex[:6]}"}
        )
        assert r.status_code == 201, r.text
        assert HEADER in r.headers  # the gateway's own write names its event
        fed = r.json()["id"]
        r = client("POST", "/api/v1/contacts", json=contact_body(federation_id=fed))
        assert r.status_code == 201, f"sequence {i}: {r.status_code} {r.text}"
        r = client(
            "POST",
            "/api/v1/consents/texts",
            json={
                "version": f"v{i}",
                "title": "Lettre",
                "body": "J'accepte.",
                "federation_id": fed,
            },
        )
        assert r.status_code == 201, f"sequence {i}: {r.status_code} {r.text}"


def test_a_new_contact_is_usable_at_once_by_consent_memberships_and_messaging(client):
    for i in range(REPEAT):
        r = client("POST", "/api/v1/contacts", json=contact_body())
        assert r.status_code == 201, r.text
        contact_id = r.json()["id"]
        r = client("GET", "/api/v1/memberships", params={"contact_id": contact_id})
        assert r.status_code == 200, f"sequence {i}: {r.status_code} {r.text}"
        r = client("POST", f"/api/v1/consents/{contact_id}/grant", json=GRANT)
        assert r.status_code == 200, f"sequence {i}: {r.status_code} {r.text}"
        # messaging's own view holds the contact and the grant: reachable, no refusal
        r = client("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": "news"})
        assert r.status_code == 200, f"sequence {i}: {r.status_code} {r.text}"
        assert r.json()["reachable"] is True, f"sequence {i}: {r.json()}"
        # and a "no" is honoured by the very next request
        r = client("POST", f"/api/v1/consents/{contact_id}/revoke", json=GRANT)
        assert r.status_code == 200, r.text
        r = client("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": "news"})
        assert r.json()["reachable"] is False, f"sequence {i}: {r.json()}"
    assert 503 not in client.seen  # a quiet platform never needed the bounded wait to run out


def test_the_gateway_carries_the_token_for_a_client_that_does_not(admin):
    """A naive client that ignores the header still reads its writes: the gateway
    remembers each user's latest token."""
    for i in range(REPEAT):
        r = admin("POST", "/api/v1/contacts", json=contact_body())
        assert r.status_code == 201, r.text
        contact_id = r.json()["id"]
        r = admin("POST", f"/api/v1/consents/{contact_id}/grant", json=GRANT)
        assert r.status_code == 200, f"sequence {i}: {r.status_code} {r.text}"
