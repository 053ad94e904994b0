"""Forwarding to the owning services over one shared HTTP client, and the person view."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from tribune_shared.app import CORRELATION_HEADER
from tribune_shared.auth import IDENTITY_HEADER, Identity, sign_identity
from tribune_shared.client_info import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER
from tribune_shared.errors import GatewayTimeout, NotFound, PayloadTooLarge, ServiceUnavailable
from tribune_shared.logging import current_correlation_id, get_logger, new_correlation_id

from gateway.routing import Route, service_url
from gateway.settings import GatewaySettings

log = get_logger(__name__)

#: a public route forwards these from the client untouched (the webhook signature)
WEBHOOK_HEADERS = ("X-Tribune-Timestamp", "X-Tribune-Signature")
#: request headers every forwarded call passes on: content negotiation and conditional
#: requests (a PATCH with If-Match is refused upstream when the contact changed meanwhile)
REQUEST_HEADERS = ("accept", "if-match", "if-none-match")
#: response headers passed back to the client
RESPONSE_HEADERS = (
    "content-type",
    "content-disposition",
    "location",
    "retry-after",
    "cache-control",
    "etag",
    # public pages (consent): they hold tokens in their URL and must not leak them
    "referrer-policy",
    "content-security-policy",
    "x-robots-tag",
)


@dataclass(frozen=True)
class Part:
    """One part of the person view: which service answers it and how."""

    name: str
    service: str
    path: str
    params: dict[str, str] | None = None


class Proxy:
    def __init__(self, settings: GatewaySettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=settings.upstream_max_connections),
            follow_redirects=False,
            trust_env=False,  # service-to-service calls never go through an HTTP proxy
        )

    async def close(self) -> None:
        await self.client.aclose()

    def _base_headers(self, identity: Identity | None) -> dict[str, str]:
        headers = {CORRELATION_HEADER: current_correlation_id() or new_correlation_id()}
        if identity is not None:
            headers[IDENTITY_HEADER] = sign_identity(
                identity, self.settings.identity_secret, self.settings.identity_ttl_seconds
            )
        return headers

    def _streamed_body(self, request: Request, headers: dict[str, str]):
        """The client's body passed on as it arrives (an upload is never held whole in
        the gateway), unchanged, within ``max_request_body_bytes`` (413 beyond, checked on
        the declared length first, then while streaming); None when there is none."""
        limit = self.settings.max_request_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if not chunked and (not declared or declared == "0"):
            return None
        if declared and declared.isdigit():
            headers["Content-Length"] = declared

        async def chunks():
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body is larger than {limit} bytes")
                if chunk:
                    yield chunk

        return chunks()

    async def _send(
        self, service: str, request: httpx.Request, *, stream: bool = False
    ) -> httpx.Response:
        try:
            return await self.client.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.warning("gateway.service_unreachable", service=service, error=repr(exc))
            raise ServiceUnavailable(
                f"the {service} service is unreachable; try again later", service=service
            ) from exc
        except httpx.TimeoutException as exc:
            log.warning("gateway.service_timeout", service=service, error=repr(exc))
            raise GatewayTimeout(
                f"the {service} service did not answer in time", service=service
            ) from exc
        except httpx.TransportError as exc:
            log.warning("gateway.service_failed", service=service, error=repr(exc))
            raise ServiceUnavailable(
                f"the {service} service is unavailable; try again later", service=service
            ) from exc

    async def forward(
        self, route: Route, request: Request, identity: Identity | None
    ) -> StreamingResponse:
        """Same method, path, query and body to the owning service; its answer as is."""
        headers = self._base_headers(None if route.public else identity)
        if content_type := request.headers.get("content-type"):
            headers["Content-Type"] = content_type
        for name in REQUEST_HEADERS:
            if (value := request.headers.get(name)) is not None:
                headers[name] = value
        if route.public:
            for name in WEBHOOK_HEADERS:
                if (value := request.headers.get(name)) is not None:
                    headers[name] = value
        # Where the request came from (set here, never taken from the client): services
        # that keep it as proof or audit minimise it (tribune_shared.client_info).
        if request.client is not None and request.client.host:
            headers[CLIENT_IP_HEADER] = request.client.host
        if user_agent := request.headers.get("user-agent"):
            headers[CLIENT_USER_AGENT_HEADER] = user_agent[:512]
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = service_url(self.settings, route.service) + raw_path.decode("latin-1")
        if query := request.scope.get("query_string", b""):
            url += "?" + query.decode("latin-1")
        body = self._streamed_body(request, headers)
        upstream = await self._send(
            route.service,
            self.client.build_request(request.method, url, headers=headers, content=body),
            stream=True,
        )
        # The answer is streamed back as it comes (an export is never held whole here).
        return StreamingResponse(
            upstream.aiter_bytes(),
            status_code=upstream.status_code,
            headers={k: v for k in RESPONSE_HEADERS if (v := upstream.headers.get(k)) is not None},
            background=BackgroundTask(upstream.aclose),
        )

    # ------------------------------------------------------------ person view
    async def _fetch(self, part: Part, headers: dict[str, str]) -> tuple[int, Any] | None:
        """(status, JSON body), or None when the service failed (down, 5xx, not JSON...)."""
        url = service_url(self.settings, part.service) + part.path
        try:
            response = await self._send(
                part.service,
                self.client.build_request("GET", url, headers=headers, params=part.params),
            )
        except (ServiceUnavailable, GatewayTimeout):
            return None
        if response.status_code == 404:
            return 404, None
        if not response.is_success:
            log.warning(
                "gateway.person_part_failed", service=part.service, status=response.status_code
            )
            return None
        try:
            return response.status_code, response.json()
        except json.JSONDecodeError:
            log.warning("gateway.person_part_not_json", service=part.service)
            return None

    async def person(self, identity: Identity, contact_id: str) -> dict[str, Any]:
        """Everything about one person, fetched concurrently; a failing service degrades its
        part (listed in ``unavailable``) instead of failing the view."""
        parts = (
            Part("contact", "contacts", f"/api/v1/contacts/{contact_id}"),
            Part("consents", "consent", f"/api/v1/consents/{contact_id}"),
            Part("memberships", "memberships", "/api/v1/memberships", {"contact_id": contact_id}),
            Part("messages", "messaging", "/api/v1/messages", {"contact_id": contact_id}),
        )
        headers = self._base_headers(identity)
        results = await asyncio.gather(*(self._fetch(p, headers) for p in parts))
        contact = results[0]
        if contact is not None and contact[0] == 404:
            raise NotFound("contact not found")
        view: dict[str, Any] = {"unavailable": []}
        for part, result in zip(parts, results, strict=True):
            if result is None:
                view["unavailable"].append(part.service)
                view[part.name] = None
            else:
                view[part.name] = result[1]
        return view
