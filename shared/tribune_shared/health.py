"""/health (alive), /ready (Kafka and store reachable) and /metrics, for every process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tribune_shared.metrics import render_latest
from tribune_shared.settings import ServiceSettings

ReadinessCheck = Callable[[], Awaitable[bool]]


async def kafka_reachable(settings: ServiceSettings) -> bool:
    timeout = settings.readiness_timeout_seconds
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
            writer.close()
            await writer.wait_closed()
            return True
        except (OSError, TimeoutError, ValueError):
            continue
    return False


def ops_router() -> APIRouter:
    """Reads ``app.state.readiness``: a dict of name -> async check."""
    router = APIRouter(include_in_schema=False)

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        checks: dict[str, ReadinessCheck] = getattr(request.app.state, "readiness", {})
        results = dict(
            zip(checks, await asyncio.gather(*(c() for c in checks.values())), strict=True)
        )
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": results},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    return router
