"""The merged OpenAPI document (gateway.openapi): the services' real operations in place of
the gateway's catch-alls, nothing internal published, no schema name clash."""

from __future__ import annotations

from typing import Any

from gateway.openapi import SERVICE_EXTENSION, merge, published_part


def _op(op_id: str, schema: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "responses": {"200": {"description": "ok"}}}
    if schema:
        op["requestBody"] = {
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        }
    return op


def _gateway() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "paths": {
            "/api/v1/contacts": {"get": _op("get_contacts"), "post": _op("post_contacts")},
            "/api/v1/contacts/{path}": {"get": _op("get_contacts_path")},
            "/api/v1/live": {"get": _op("get_live")},
            "/api/v1/users": {"get": _op("list_users", "Page")},
        },
        "components": {
            "schemas": {"Page": {"type": "object", "title": "users page"}},
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _contacts_document() -> dict[str, Any]:
    return {
        "paths": {
            "/api/v1/contacts": {"post": _op("create_contact", "ContactCreate")},
            "/api/v1/contacts/{contact_id}": {"get": _op("get_contact")},
            "/health": {"get": _op("health")},
            "/api/v1/public/forms/{form_id}": {"post": _op("submit", "Page")},
            "/api/v1/consents/{contact_id}": {"get": _op("not_ours")},
        },
        "components": {
            "schemas": {
                "ContactCreate": {
                    "type": "object",
                    "properties": {"address": {"$ref": "#/components/schemas/Address"}},
                },
                "Address": {"type": "object"},
                "Page": {"type": "object", "title": "submissions page"},
                "Unused": {"type": "object"},
            }
        },
    }


def test_a_service_publishes_only_what_the_gateway_routes_to_it_and_the_schemas_it_uses():
    part = published_part("contacts", _contacts_document())

    assert sorted(part["paths"]) == [
        "/api/v1/contacts",
        "/api/v1/contacts/{contact_id}",
        "/api/v1/public/forms/{form_id}",
    ]  # not /health (internal), not consents (another service's prefix)
    assert sorted(part["components"]["schemas"]) == ["Address", "ContactCreate", "Page"]


def test_real_operations_replace_the_catch_alls_of_documented_services_only():
    merged = merge(_gateway(), {"contacts": published_part("contacts", _contacts_document())})
    paths = merged["paths"]

    assert "/api/v1/contacts/{path}" not in paths
    assert paths["/api/v1/contacts"]["post"]["operationId"] == "create_contact"
    assert "get" not in paths["/api/v1/contacts"]  # the catch-all GET is gone, none replaces it
    assert paths["/api/v1/contacts/{contact_id}"]["get"][SERVICE_EXTENSION] == "contacts"
    assert "/api/v1/live" in paths  # no document for the live figures: the catch-all stays
    assert paths["/api/v1/users"]["get"]["operationId"] == "list_users"


def test_private_operations_need_the_gateway_token_public_ones_nothing():
    merged = merge(_gateway(), {"contacts": published_part("contacts", _contacts_document())})

    assert merged["paths"]["/api/v1/contacts"]["post"]["security"] == [{"Bearer": []}]
    assert merged["paths"]["/api/v1/public/forms/{form_id}"]["post"]["security"] == []


def test_a_schema_name_defined_differently_is_renamed_in_the_service_operations_only():
    merged = merge(_gateway(), {"contacts": published_part("contacts", _contacts_document())})
    schemas = merged["components"]["schemas"]

    assert schemas["Page"]["title"] == "users page"
    assert schemas["ContactsPage"]["title"] == "submissions page"
    body = merged["paths"]["/api/v1/public/forms/{form_id}"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ContactsPage")
    users = merged["paths"]["/api/v1/users"]["get"]["requestBody"]
    assert users["content"]["application/json"]["schema"]["$ref"].endswith("/Page")


def test_the_same_definition_in_two_services_is_kept_once():
    other = {
        "paths": {"/api/v1/consents/{contact_id}": {"get": _op("consents", "Address")}},
        "components": {"schemas": {"Address": {"type": "object"}}},
    }
    merged = merge(
        _gateway(),
        {
            "contacts": published_part("contacts", _contacts_document()),
            "consent": published_part("consent", other),
        },
    )

    assert "ConsentAddress" not in merged["components"]["schemas"]
    assert "Address" in merged["components"]["schemas"]


def test_operation_ids_stay_unique_and_the_gateways_own_answer_wins():
    document = {
        "paths": {
            "/api/v1/contacts/{contact_id}": {"get": _op("list_users")},
        },
        "components": {"schemas": {}},
    }
    gateway = _gateway()
    gateway["paths"]["/api/v1/contacts/{contact_id}"] = {"get": _op("gateway_own")}
    merged = merge(gateway, {"contacts": published_part("contacts", document)})

    assert merged["paths"]["/api/v1/contacts/{contact_id}"]["get"]["operationId"] == "gateway_own"
    renamed = merge(_gateway(), {"contacts": published_part("contacts", document)})
    assert (
        renamed["paths"]["/api/v1/contacts/{contact_id}"]["get"]["operationId"]
        == "contacts_list_users"
    )


def test_inline_json_schema_definitions_become_components_references_resolve():
    document = {
        "paths": {
            "/api/v1/payments/notices": {
                "post": {
                    "operationId": "notice",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"donor": {"$ref": "#/$defs/Donor"}},
                                    "$defs": {"Donor": {"type": "object"}},
                                }
                            }
                        }
                    },
                }
            }
        },
        "components": {"schemas": {}},
    }
    part = published_part("memberships", document)

    body = part["paths"]["/api/v1/payments/notices"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["properties"]["donor"] == {"$ref": "#/components/schemas/Donor"}
    assert "$defs" not in schema
    assert part["components"]["schemas"]["Donor"] == {"type": "object"}
