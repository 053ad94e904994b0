"""The forwarded routes' short way in: straight from the kernel's middlewares to the proxy.

FastAPI matches a request against each of the ~100 forwarded routes (one per prefix and
method, for the OpenAPI document) and solves its dependencies on every call: measured,
about a quarter of the gateway's CPU per forwarded request. This ASGI middleware, the
innermost one (inside the kernel's correlation, metrics, access log and consistency
middlewares), resolves the owning service from a table of prefixes instead and runs the
very same steps as the FastAPI endpoints (gateway.api: client_identity, audited,
Proxy.forward). Anything else (the gateway's own routes, a method a prefix does not
forward) goes on to FastAPI, as do the forwarded routes when it is not installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute
from tribune_shared.errors import DomainError

from gateway.api import audited, client_identity
from gateway.routing import ROUTES, Route


@dataclass(frozen=True)
class RouteLabel:
    """What the kernel's metrics and access log read from ``scope["route"]``: the path
    template FastAPI would have matched."""

    path: str


def _allowed(route: Route) -> frozenset[str]:
    return frozenset(route.forwarded_methods)


class FastForward:
    def __init__(self, app, *, own_routes: Iterable[BaseRoute] = ()) -> None:
        self.app = app
        # longest prefixes first, as gateway.routing.resolve does
        self.routes = sorted(ROUTES, key=lambda r: len(r.prefix), reverse=True)
        self.methods = {r.prefix: _allowed(r) for r in self.routes}
        self.labels = {
            r.prefix: (RouteLabel(r.prefix), RouteLabel(r.prefix + "/{path:path}"))
            for r in self.routes
        }
        # the gateway's own routes under a forwarded prefix (the access export under
        # /api/v1/privacy) are FastAPI's
        self.shadowed: list[re.Pattern[str]] = [
            r.path_regex
            for r in own_routes
            if isinstance(r, StarletteRoute)
            and any(r.path.startswith(f.prefix + "/") for f in ROUTES)
        ]

    def match(self, path: str, method: str) -> tuple[Route, RouteLabel] | None:
        for route in self.routes:
            prefix = route.prefix
            if path == prefix or path.startswith(prefix + "/"):
                if method not in self.methods[prefix]:
                    return None
                if any(rx.match(path) for rx in self.shadowed):
                    return None
                return route, self.labels[prefix][path != prefix]
        return None

    async def __call__(self, scope, receive, send) -> None:
        found = self.match(scope["path"], scope["method"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, label = found
        scope["route"] = label
        request = Request(scope, receive)
        state = request.app.state
        try:
            response = await self._forward(request, route, state)
        except DomainError as exc:
            response = JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)
        await response(scope, receive, send)

    @staticmethod
    async def _forward(request: Request, route: Route, state) -> Response:
        proxy = state.proxy
        if route.public:
            return await proxy.forward(route, request, None)
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        identity = await client_identity(
            request, state.gateway_service, token if scheme.lower() == "bearer" else None
        )
        return await audited(
            request, identity, state.access_audit, lambda: proxy.forward(route, request, identity)
        )
