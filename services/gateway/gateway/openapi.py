"""One OpenAPI document for the whole API: the gateway's own routes and the services' real
operations, so clients generate one SDK with real request and response schemas.

The gateway forwards whole prefixes (gateway.routing), so on its own it could only describe
them as "any body". The services' documents are generated from their FastAPI apps at build
time (``make openapi`` -> ``gateway/openapi_services.json``, checked up to date by
tests/contract/test_openapi.py) rather than fetched at start: the gateway then starts and
answers ``/openapi.json`` without depending on the services being up, and the document a
client sees is the one the release was tested with.

Merging rules (pure, below):
- a service operation is published only if the gateway routes its path and method to that
  service (internal endpoints such as /health never leak);
- it replaces the gateway's catch-all entry of that prefix; prefixes with no document (the
  faust live figures) keep the catch-all;
- where the gateway answers a path itself, its own operation wins;
- schema names the services share with the same definition are kept once; a name two
  parts define differently is renamed ``<Service><Name>`` in that service's operations;
- security is the gateway's (bearer token), none on public routes; each operation says its
  owner in ``x-tribune-service``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from gateway.routing import ROUTES, Route, resolve

SERVICES_DOCUMENT = Path(__file__).with_name("openapi_services.json")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SERVICE_EXTENSION = "x-tribune-service"
_REF_PREFIX = "#/components/schemas/"

Document = dict[str, Any]


def routed(service: str, path: str, method: str) -> bool:
    """True when the gateway forwards ``method path`` to ``service``."""
    route = resolve(path)
    return (
        route is not None and route.service == service and method.upper() in route.forwarded_methods
    )


def published_part(service: str, document: Mapping[str, Any]) -> Document:
    """What of a service's own document the gateway publishes: the routed operations and
    the schemas they use (build time; the gateway never imports a service)."""
    paths: Document = {}
    schemas = dict(document.get("components", {}).get("schemas", {}))
    for path, item in sorted(_hoisted(document.get("paths", {}), schemas).items()):
        ops = {
            method: op
            for method, op in item.items()
            if method in HTTP_METHODS and routed(service, path, method)
        }
        if ops:
            paths[path] = dict(sorted(ops.items()))
    used = _reachable(paths, schemas)
    return {
        "paths": paths,
        "components": {"schemas": {name: schemas[name] for name in sorted(used)}},
    }


def _hoisted(node: Any, schemas: dict[str, Any]) -> Any:
    """``node`` with the ``$defs`` of inline JSON schemas (a body described with
    ``model_json_schema()``) moved into ``schemas``: their ``#/$defs/X`` references would
    not resolve from the document's root."""
    if isinstance(node, dict):
        for name, schema in node.get("$defs", {}).items():
            schemas.setdefault(name, _hoisted(schema, schemas))
        out = {k: _hoisted(v, schemas) for k, v in node.items() if k != "$defs"}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = _REF_PREFIX + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_hoisted(v, schemas) for v in node]
    return node


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            yield ref.removeprefix(_REF_PREFIX)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reachable(root: Any, schemas: Mapping[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = list(_refs(root))
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo.extend(_refs(schemas[name]))
    return seen


def _renamed(node: Any, names: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {key: _renamed(value, names) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            name = ref.removeprefix(_REF_PREFIX)
            out["$ref"] = _REF_PREFIX + names.get(name, name)
        return out
    if isinstance(node, list):
        return [_renamed(value, names) for value in node]
    return node


def _forwarded(path: str, method: str) -> Route | None:
    """The route whose catch-all operation (gateway.api.forwarding_router) this is."""
    for route in ROUTES:
        if path in (route.prefix, route.prefix + "/{path}"):
            return route if method.upper() in route.forwarded_methods else None
    return None


def merge(gateway: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> Document:
    """The gateway's document with the services' published parts in place of the catch-alls
    of their prefixes (pure; ``services``: service name -> ``published_part``)."""
    merged: Document = copy.deepcopy(dict(gateway))
    paths: Document = merged.setdefault("paths", {})
    schemas: Document = merged.setdefault("components", {}).setdefault("schemas", {})
    bearer: list[dict[str, list[str]]] = [
        {name: []} for name in merged["components"].get("securitySchemes", {})
    ]
    documented = set(services)
    for path in list(paths):
        item = paths[path]
        for method in [m for m in item if m in HTTP_METHODS]:
            route = _forwarded(path, method)
            if route is not None and route.service in documented:
                del item[method]
        if not any(m in HTTP_METHODS for m in item):
            del paths[path]
    operation_ids = {
        op.get("operationId")
        for item in paths.values()
        for method, op in item.items()
        if method in HTTP_METHODS
    }
    for service, part in sorted(services.items()):
        own = part.get("components", {}).get("schemas", {})
        names = {
            name: name
            if name not in schemas or schemas[name] == own[name]
            else service.capitalize() + name
            for name in own
        }
        for name, schema in own.items():
            schemas[names[name]] = _renamed(schema, names)
        for path, item in part.get("paths", {}).items():
            target = paths.setdefault(path, {})
            for method, op in item.items():
                if method in target:  # the gateway answers it itself
                    continue
                route = resolve(path)
                op = _renamed(copy.deepcopy(op), names)
                op[SERVICE_EXTENSION] = service
                op["security"] = [] if route is not None and route.public else bearer
                op_id = op.get("operationId") or f"{method}_{path}"
                if op_id in operation_ids:
                    op_id = f"{service}_{op_id}"
                op["operationId"] = op_id
                operation_ids.add(op_id)
                target[method] = op
    merged["paths"] = dict(sorted(paths.items()))
    merged["components"]["schemas"] = dict(sorted(schemas.items()))
    return merged


@cache
def services_document(path: Path = SERVICES_DOCUMENT) -> dict[str, Any]:
    """The services' published parts committed with this release (empty if missing: the
    gateway then publishes its catch-alls, as before)."""
    if not path.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def install_openapi(app: FastAPI) -> None:
    """``app.openapi`` answers the merged document (built once, on first request)."""
    own = app.openapi  # FastAPI's generator, with the app's title, version and tags
    merged: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not merged:
            merged.update(merge(own(), services_document()))
            app.openapi_schema = merged
        return merged

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
