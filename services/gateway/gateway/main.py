"""Gateway API process: ``python -m gateway.main``."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware
from tribune_shared.app import create_service_app, serve
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.api import forwarding_router, router
from gateway.api_keys.api import router as api_keys_router
from gateway.api_keys.service import ApiKeyService
from gateway.api_keys.store import INDEXES as API_KEY_INDEXES
from gateway.consistency import RememberTokens, UserTokens
from gateway.dispatch import FastForward
from gateway.federations.api import router as federations_router
from gateway.federations.service import FederationService
from gateway.headers import ApiCors, SecurityHeaders
from gateway.live_events.api import router as live_events_router
from gateway.live_events.service import LiveEventsHub
from gateway.live_events.store import LiveEventStore
from gateway.live_events.store import indexes as live_event_indexes
from gateway.openapi import install_openapi
from gateway.paths import NormalisedPath
from gateway.privacy import router as privacy_router
from gateway.proxy import Proxy
from gateway.rate_limits.service import RateLimiter
from gateway.rate_limits.store import INDEXES as RATE_LIMIT_INDEXES
from gateway.service import AccessAudit, GatewayService
from gateway.sessions.api import router as sessions_router
from gateway.sessions.store import INDEXES as SESSION_INDEXES
from gateway.settings import GatewaySettings
from gateway.store import INDEXES, audit_indexes
from gateway.users.api import router as users_router
from gateway.users.service import UserDirectory
from gateway.users.store import INDEXES as USER_INDEXES
from gateway.webapp.api import install_webapp


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    tokens = UserTokens.from_settings(settings)

    async def on_startup(app: FastAPI) -> None:
        app.state.gateway_service = GatewayService(settings, app.state.store)
        app.state.federation_service = FederationService(
            app.state.store, users=app.state.gateway_service.users
        )
        app.state.proxy = Proxy(settings, tokens=tokens)
        app.state.access_audit = AccessAudit.from_settings(settings, app.state.store)
        app.state.user_directory = UserDirectory(app.state.store)
        app.state.rate_limiter = RateLimiter(
            app.state.store,
            window_seconds=settings.rate_limit_window_seconds,
            sync_share=settings.rate_limit_sync_share,
            sync_seconds=settings.rate_limit_sync_seconds,
            max_principals=settings.user_cache_max_entries,
        )
        app.state.api_keys = ApiKeyService(
            app.state.store,
            cache_seconds=settings.user_cache_seconds,
            max_entries=settings.user_cache_max_entries,
            last_used_flush_seconds=settings.api_key_last_used_flush_seconds,
        )
        app.state.live_events = LiveEventsHub(settings, LiveEventStore(app.state.store))
        await app.state.gateway_service.bootstrap()

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.live_events.close()
        await app.state.api_keys.close()  # the last uses noted
        await app.state.rate_limiter.close()
        await app.state.access_audit.close()  # the entries of the last requests
        await app.state.proxy.close()

    app = create_service_app(
        settings,
        title="Tribune gateway",
        routers=[
            router,
            federations_router,
            sessions_router,
            users_router,
            api_keys_router,
            privacy_router,
            live_events_router,
            forwarding_router(),
        ],
        indexes=[
            *INDEXES,
            *audit_indexes(settings.audit_retention_days),
            *SESSION_INDEXES,
            *USER_INDEXES,
            *API_KEY_INDEXES,
            *RATE_LIMIT_INDEXES,
            *live_event_indexes(settings.live_events_retention_seconds),
        ],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        description="The one door for clients: log in, the federation tree, users, and every "
        "service's API under /api/v1 (forwarded with the caller's signed identity).",
    )

    # one document with the services' real schemas in place of the forwarded catch-alls
    install_openapi(app)
    # the back office pages at /app: they call the API above in-process (gateway.webapp)
    install_webapp(app, settings)
    if settings.fast_forward:
        # innermost (after the kernel's middlewares: correlation id, metrics, access log,
        # consistency), where FastAPI's routing would start
        app.user_middleware.append(
            Middleware(
                FastForward,
                own_routes=[
                    *router.routes,
                    *federations_router.routes,
                    *sessions_router.routes,
                    *privacy_router.routes,
                ],
            )
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
    if settings.cors_allowed_origins:
        # inside the path check: it decides on the one normalised path
        app.add_middleware(ApiCors, origins=settings.cors_allowed_origins)
    app.add_middleware(NormalisedPath)
    # outermost: even the door's own refusals carry them
    app.add_middleware(SecurityHeaders, hsts_seconds=settings.hsts_seconds)


if __name__ == "__main__":
    settings = GatewaySettings()
    serve(create_app(settings), settings)
