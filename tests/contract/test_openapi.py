"""The gateway's one OpenAPI document (issue 12): the committed services' parts are those
their apps generate today, and the merged document is whole (every reference resolves,
operation ids unique, every routed service prefix described with real schemas)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from gateway.main import create_app
from gateway.openapi import HTTP_METHODS, SERVICE_EXTENSION, SERVICES_DOCUMENT
from gateway.routing import ROUTES
from gateway.settings import GatewaySettings
from tribune_devstack.openapi import render
from tribune_shared.settings import Environment


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(GatewaySettings(environment=Environment.development)).openapi()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_committed_services_document_is_up_to_date():
    assert SERVICES_DOCUMENT.read_text() == render(), (
        "services/gateway/gateway/openapi_services.json is stale: run `make openapi` and commit it"
    )


def test_every_reference_resolves_and_operation_ids_are_unique(document):
    schemas = document["components"]["schemas"]
    missing = {
        ref for ref in _refs(document) if ref.removeprefix("#/components/schemas/") not in schemas
    }
    assert not missing
    ids = Counter(op["operationId"] for _, _, op in _operations(document))
    assert [op_id for op_id, n in ids.items() if n > 1] == []


def test_a_client_sees_real_schemas_for_the_services_routes(document):
    create = document["paths"]["/api/v1/contacts"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ContactCreate"}
    assert create["security"] == [{"OAuth2PasswordBearer": []}]
    owners = {op.get(SERVICE_EXTENSION) for _, _, op in _operations(document)}
    assert {"contacts", "consent", "memberships", "messaging"} <= owners
    documented = {r.prefix for r in ROUTES if r.service != "live"}
    for prefix in documented:
        assert any(
            path == prefix or path.startswith(prefix + "/") for path, _, op in _operations(document)
        ), prefix
    catch_alls = [p for p in document["paths"] if p.endswith("/{path}")]
    assert catch_alls == ["/api/v1/live/{path}"]  # the faust live figures have no document


def test_nothing_internal_is_published_and_public_routes_need_no_token(document):
    for path, _method, op in _operations(document):
        assert path.startswith("/api/v1/") or path in ("/health", "/ready", "/metrics"), path
        if path.startswith("/api/v1/public/") or path.startswith("/api/v1/webhooks/"):
            assert op.get("security") == [], path
    services = json.loads(SERVICES_DOCUMENT.read_text())
    for part in services.values():
        assert not any(p in part["paths"] for p in ("/health", "/ready", "/metrics"))
