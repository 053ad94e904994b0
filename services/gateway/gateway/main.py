"""Gateway API process: ``python -m gateway.main``."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware
from tribune_shared.app import create_service_app, serve
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.api import forwarding_router, router
from gateway.consistency import RememberTokens, UserTokens
from gateway.dispatch import FastForward
from gateway.paths import NormalisedPath
from gateway.privacy import router as privacy_router
from gateway.proxy import Proxy
from gateway.service import AccessAudit, GatewayService
from gateway.settings import GatewaySettings
from gateway.store import INDEXES, audit_indexes


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    tokens = UserTokens.from_settings(settings)

    async def on_startup(app: FastAPI) -> None:
        app.state.gateway_service = GatewayService(settings, app.state.store)
        app.state.proxy = Proxy(settings, tokens=tokens)
        app.state.access_audit = AccessAudit.from_settings(settings, app.state.store)
        await app.state.gateway_service.bootstrap()

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.access_audit.close()  # the entries of the last requests
        await app.state.proxy.close()

    app = create_service_app(
        settings,
        title="Tribune gateway",
        routers=[router, privacy_router, forwarding_router()],
        indexes=[*INDEXES, *audit_indexes(settings.audit_retention_days)],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        description="The one door for clients: log in, the federation tree, users, and every "
        "service's API under /api/v1 (forwarded with the caller's signed identity).",
    )

    if settings.fast_forward:
        # innermost (after the kernel's middlewares: correlation id, metrics, access log,
        # consistency), where FastAPI's routing would start
        app.user_middleware.append(
            Middleware(FastForward, own_routes=[*router.routes, *privacy_router.routes])
        )
    # Outside the kernel's layers (only the door is further out): it sees the consistency
    # token the client gets, whoever set it (a service through the proxy, or the kernel
    # for the gateway's own writes).
    app.add_middleware(RememberTokens, tokens=tokens)
    install_door(app, settings)
    return app


def install_door(app: FastAPI, settings: GatewaySettings) -> None:
    """The outermost layers, before anything reads the request: first the one normalised
    path (gateway.paths; refused with 400 otherwise), then the client's address (from
    X-Forwarded-For only when the direct peer is a trusted proxy: uvicorn's own
    middleware, told which proxies to trust)."""
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.add_middleware(NormalisedPath)


if __name__ == "__main__":
    settings = GatewaySettings()
    serve(create_app(settings), settings)
