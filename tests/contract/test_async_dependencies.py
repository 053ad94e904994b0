"""Every API's route dependencies and handlers are coroutines: FastAPI runs a plain
function in its threadpool, a thread hop per dependency per request (measured on the
person view: each API's CPU per view 2.1-3.7 ms with sync dependencies, 1.6-3.0 ms
without; bench/person_view.py, README)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from tribune_shared.settings import Environment

#: each API's package and its settings class
SERVICES = {
    "contacts": "ContactsSettings",
    "consent": "ConsentSettings",
    "memberships": "MembershipsSettings",
    "messaging": "MessagingSettings",
    "gateway": "GatewaySettings",
}


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, through included routers (FastAPI keeps an included router's own
    routes on it) and mounts."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)
        elif isinstance(getattr(route, "routes", None), list):
            yield from _api_routes(route.routes)


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _runs_in_threadpool(call: Any) -> bool:
    if inspect.isclass(call):  # FastAPI's security classes: an async __call__
        return not inspect.iscoroutinefunction(call.__call__)
    if inspect.isfunction(call) or inspect.ismethod(call):
        return not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))
    return not inspect.iscoroutinefunction(type(call).__call__)  # an instance


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_no_route_runs_a_dependency_or_handler_in_the_threadpool(service: str) -> None:
    main = importlib.import_module(f"{service}.main")
    settings_class = getattr(importlib.import_module(f"{service}.settings"), SERVICES[service])
    app = main.create_app(settings_class(environment=Environment.development))
    sync = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', call)}"
            for route in _api_routes(app.routes)
            for call in _calls(route.dependant)
            if _runs_in_threadpool(call)
        }
    )
    assert sum(1 for _ in _api_routes(app.routes)) > 3  # the walk reached the routes
    assert sync == []
