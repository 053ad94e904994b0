"""The one way a Tribune HTTP process is built: logging, correlation ids, metrics,
health, clear validation errors, indexes at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from tribune_shared.bus import ProcessedEvents
from tribune_shared.consistency import ConsistencyMiddleware
from tribune_shared.errors import ERROR_SCHEMAS, DomainError, ServiceUnavailable
from tribune_shared.events.contracts import Lane
from tribune_shared.expiry import expiry_task
from tribune_shared.health import kafka_reachable, ops_router
from tribune_shared.limits import BodyLimit, HeaderCheck, check_route_limits, on_http_error
from tribune_shared.logging import (
    bind_correlation_id,
    configure_logging,
    get_logger,
    new_correlation_id,
)
from tribune_shared.metrics import HTTP_LATENCY, HTTP_REQUESTS, WEBHOOK_REFUSALS
from tribune_shared.outbox import Outbox, kernel_indexes
from tribune_shared.projections import routes_task
from tribune_shared.runtime import tune_gc
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store, is_transient, is_unreachable
from tribune_shared.subscriptions import awaited_by, in_lane
from tribune_shared.webhooks import InvalidSignature

CORRELATION_HEADER = "X-Correlation-ID"

#: ids in paths, queries and bodies: what the platform mints (hex, uuid) and federation slugs
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
IdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
IdQuery = Annotated[str, Query(min_length=1, max_length=64, pattern=ID_PATTERN)]
OPS_ROUTES = frozenset({"/health", "/ready", "/metrics"})
log = get_logger(__name__)


def validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic errors as (field, reason) pairs a user can act on."""
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        # Drop the transport part ("body", "query") but keep it for context.
        field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        details.append({"field": field, "location": loc[0] if loc else "", "reason": err["msg"]})
    return details


def store_outage_response(retry_after: int, *, busy: bool = False) -> JSONResponse:
    """503 + Retry-After: the store did not answer (paused, failing over, cut off), or
    (``busy``) the request's transaction kept losing write conflicts for its whole retry
    time. Never a 500: nothing about the request is wrong, and the same request will work
    later."""
    reason = (
        "the data this request changes is being changed by others; try again later"
        if busy
        else "the service's database is unavailable; try again later"
    )
    exc = ServiceUnavailable(reason, retry_after=retry_after)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def api_store(settings: ServiceSettings) -> Store:
    """An API's store: its transactions give up on a write conflict after
    ``request_transaction_retry_seconds``, in time for the gateway (a worker's store keeps
    the longer ``transaction_retry_seconds``), and on a store that did not answer at once
    (503 + Retry-After: the client comes back, nobody waits one timeout per attempt)."""
    return Store(
        settings,
        transaction_retry_seconds=settings.request_transaction_retry_seconds,
        retry_unreachable=False,
    )


class StoreOutageGuard:
    """Outermost ASGI guard: a store outage raised outside the routes (a middleware reading
    the store, such as read-your-writes) is answered 503 + Retry-After too, as long as
    nothing of the answer was sent yet. The routes' own are answered by the exception
    handler of ``install_common`` (inside the metrics and the access log)."""

    def __init__(self, app: Any, *, service: str, retry_after: int) -> None:
        self.app = app
        self.service = service
        self.retry_after = retry_after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started or not is_unreachable(exc):
                raise
            log.warning("store.unreachable", path=scope.get("path"), error=repr(exc))
            HTTP_REQUESTS.labels(self.service, scope.get("method", ""), "unmatched", 503).inc()
            await store_outage_response(self.retry_after)(scope, receive, send)


class CorrelationAndMetrics:
    """Every request's correlation id (bound for its logs, echoed in the answer), its
    metrics and its access-log line. Plain ASGI rather than ``@app.middleware("http")``:
    Starlette's ``BaseHTTPMiddleware`` runs the app in a task group and pipes the answer
    through a memory stream, which showed in the gateway's profile on every request of
    every service."""

    def __init__(self, app: Any, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = Headers(scope=scope).get(CORRELATION_HEADER) or new_correlation_id()
        bind_correlation_id(correlation_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def answer(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            # the router put the matched route in the scope (the same dict)
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(self.service, method, route, status).inc()
            HTTP_LATENCY.labels(self.service, method, route).observe(elapsed)
            if route not in OPS_ROUTES:  # probes and scrapes would drown the access log
                log.info(
                    "http.request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                )


def install_common(app: FastAPI, service: str, *, store_retry_after: int = 5) -> None:
    app.add_middleware(CorrelationAndMetrics, service=service)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "validation_error", "detail": validation_details(exc)}, status_code=422
        )

    async def on_store_outage(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):  # still conflicting after request_transaction_retry_seconds
            log.warning("store.conflict_persisted", path=request.url.path, error=repr(exc))
            return store_outage_response(store_retry_after, busy=True)
        if not is_unreachable(exc):  # another database error: a bug, not an outage
            raise exc
        log.warning("store.unreachable", path=request.url.path, error=repr(exc))
        return store_outage_response(store_retry_after)

    # ConnectionFailure (unreachable, NetworkTimeout, ServerSelectionTimeoutError), the
    # other errors PyMongo marks as timeouts (ExecutionTimeout, WTimeoutError), and a write
    # conflict the transaction runner gave up on
    app.add_exception_handler(PyMongoError, on_store_outage)

    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, InvalidSignature):  # a provider's secret changed, or a forgery
            route = getattr(request.scope.get("route"), "path", "unmatched")
            WEBHOOK_REFUSALS.labels(service, route).inc()
        headers = exc.headers
        if exc.status_code == 503 and "Retry-After" not in headers:
            # every 503 says when to come back (a client retries instead of giving up)
            headers = {**headers, "Retry-After": str(store_retry_after)}
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)

    app.include_router(ops_router())
    document_errors(app)


def document_errors(app: FastAPI) -> None:
    """FastAPI documents its own 422 body (``{"detail": [{"loc", "msg", "type"}]}``); every
    Tribune error answer has the kernel's shape (``tribune_shared.errors``): document that
    one, so clients (and the fuzzer's response checks) are told what they get."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI builds it once and keeps it (app.openapi_schema)
        schemas = schema.get("components", {}).get("schemas", {})
        for name, replacement in ERROR_SCHEMAS.items():
            if name in schemas:
                schemas[name] = replacement
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[APIRouter],
    indexes: Sequence[IndexSpec] = (),
    on_startup: Callable[[FastAPI], Awaitable[None]] | None = None,
    on_shutdown: Callable[[FastAPI], Awaitable[None]] | None = None,
    store: Store | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store or api_store(settings)
        # reads and writes go to each projection's active collection (a rebuild flips it)
        await app.state.store.load_routes()
        tasks_stop = asyncio.Event()
        tasks = [asyncio.create_task(routes_task(app.state.store, settings)(tasks_stop))]

        async def stop(*, started: bool) -> None:
            if on_shutdown:
                if started:
                    await on_shutdown(app)
                else:  # a start that failed: some of what it hooks may never have begun
                    with contextlib.suppress(Exception):
                        await on_shutdown(app)
            tasks_stop.set()
            await asyncio.gather(*tasks, return_exceptions=not started)
            await app.state.store.close()

        try:
            await app.state.store.ensure_indexes([*kernel_indexes(settings), *indexes])
            tasks.append(asyncio.create_task(expiry_task(app.state.store, settings)(tasks_stop)))
            app.state.readiness = {
                "store": app.state.store.ping,
                "kafka": lambda: kafka_reachable(settings),
            }
            if on_startup:
                await on_startup(app)
        except BaseException:
            # A start that fails (the gateway without an admin password to show, an index
            # that cannot be built) stops what it started: left to the event loop's final
            # cancellation, a background task in the middle of a store call could hold the
            # process (seen once: a test client's loop waited 300 s for it).
            await stop(started=False)
            raise
        log.info("service.started", port=settings.http_port)
        yield
        await stop(started=True)
        log.info("service.stopped")

    app = FastAPI(title=title, lifespan=lifespan, **fastapi_kwargs)
    app.state.settings = settings
    install_common(app, settings.service_name, store_retry_after=settings.store_retry_after_seconds)
    # Read-your-writes: wait for the events a client's token names, answer with its own.
    app.add_middleware(
        ConsistencyMiddleware,
        awaited=awaited_by(settings.service_name),
        urgent=in_lane(Lane.urgent),
        applied=lambda: ProcessedEvents(app.state.store, settings.service_name).applied,
        committed=lambda: Outbox(app.state.store).committed,
        wait_seconds=settings.consistency_wait_seconds,
        poll_seconds=settings.consistency_poll_seconds,
        poll_max_seconds=settings.consistency_poll_max_seconds,
        max_entries=settings.consistency_max_entries,
        horizon_seconds=settings.consistency_horizon_seconds,
    )
    for router in routers:
        app.include_router(router)
    install_limits(app, settings)
    return app


def install_limits(app: FastAPI, settings: ServiceSettings) -> None:
    """Call once the routes are in and the other middlewares added: bad headers are refused
    outside every other middleware (nothing logs or parses them), bodies inside them (the
    413 is counted and carries the correlation id), right where the routes start."""
    check_route_limits(app.routes, settings)
    app.user_middleware.append(Middleware(BodyLimit, settings=settings))
    app.add_middleware(HeaderCheck)
    guard = Middleware(
        StoreOutageGuard,
        service=settings.service_name,
        retry_after=settings.store_retry_after_seconds,
    )
    build = app.build_middleware_stack

    def build_guarded() -> Any:
        # outermost of the user middlewares, whatever a service adds after this call
        # (the gateway's own): Starlette builds the stack at the first request
        app.user_middleware[:] = [guard, *(m for m in app.user_middleware if m is not guard)]
        return build()

    app.build_middleware_stack = build_guarded  # type: ignore[method-assign]
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run an API process; uvicorn finishes in-flight requests on SIGTERM."""
    tune_gc(settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.consumer_shutdown_timeout_seconds),
        timeout_keep_alive=int(settings.http_keepalive_seconds),
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default: any local
        # client could name the address the audit and the consent proof keep. Only the
        # gateway faces clients; it believes its configured proxies alone (gateway.main).
        proxy_headers=False,
        # named, not "auto": a missing one fails the start instead of silently costing
        # every request the pure-Python loop and parser
        loop="uvloop",
        http="httptools",
    )
