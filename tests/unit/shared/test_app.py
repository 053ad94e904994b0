"""What every service's app does around each request (tribune_shared.app): the correlation id
is taken from the caller or minted, bound for the request's logs and echoed in the answer,
and the request is counted under its route template with the status the client got."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from tribune_shared.app import CORRELATION_HEADER, create_service_app
from tribune_shared.errors import NotFound
from tribune_shared.logging import current_correlation_id
from tribune_shared.metrics import HTTP_REQUESTS
from tribune_shared.settings import ServiceSettings

SERVICE = "apptest"
router = APIRouter()


class AppTestSettings(ServiceSettings):
    service_name: ClassVar[str] = SERVICE


@router.get("/things/{thing_id}")
async def thing(thing_id: str) -> dict[str, str | None]:
    if thing_id == "missing":
        raise NotFound("thing not found")
    if thing_id == "broken":
        raise RuntimeError("a bug")
    return {"id": thing_id, "correlation_id": current_correlation_id()}


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = AppTestSettings()
    app = create_service_app(settings, title="t", routers=[router])
    # no lifespan (no store): these routes need none
    yield TestClient(app, raise_server_exceptions=False)


def counted(route: str, status: int) -> float:
    return HTTP_REQUESTS.labels(SERVICE, "GET", route, status)._value.get()


def test_the_callers_correlation_id_is_bound_and_echoed(client: TestClient) -> None:
    r = client.get("/things/a", headers={CORRELATION_HEADER: "corr-42"})
    assert r.status_code == 200
    assert r.headers[CORRELATION_HEADER] == "corr-42"
    assert r.json()["correlation_id"] == "corr-42"  # what the route's logs carry


def test_a_request_without_one_gets_a_fresh_one(client: TestClient) -> None:
    first = client.get("/things/a")
    second = client.get("/things/a")
    ids = {first.headers[CORRELATION_HEADER], second.headers[CORRELATION_HEADER]}
    assert len(ids) == 2 and None not in ids
    assert first.json()["correlation_id"] == first.headers[CORRELATION_HEADER]


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    ok, missing = counted("/things/{thing_id}", 200), counted("/things/{thing_id}", 404)
    client.get("/things/a")
    client.get("/things/b")
    r = client.get("/things/missing")
    assert r.status_code == 404 and r.headers[CORRELATION_HEADER]
    assert counted("/things/{thing_id}", 200) == ok + 2
    assert counted("/things/{thing_id}", 404) == missing + 1


def test_a_failing_route_is_counted_as_the_500_the_client_gets(client: TestClient) -> None:
    before = counted("/things/{thing_id}", 500)
    assert client.get("/things/broken").status_code == 500
    assert counted("/things/{thing_id}", 500) == before + 1


def test_an_unknown_path_is_counted_as_unmatched(client: TestClient) -> None:
    before = counted("unmatched", 404)
    assert client.get("/nowhere").status_code == 404
    assert counted("unmatched", 404) == before + 1
