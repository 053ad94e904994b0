"""Forwarding to the owning services over one shared HTTP client, and the person view.

The client is aiohttp's (its HTTP parser and header maps are C): on the gateway's hot path
httpx (pure-Python HTTP/1.1 over anyio locks) cost about a third of the gateway's CPU per
forwarded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pydantic_core
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from tribune_shared import consistency
from tribune_shared.app import CORRELATION_HEADER
from tribune_shared.auth import IDENTITY_HEADER, Identity
from tribune_shared.client_info import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER
from tribune_shared.consistency import APPLIED_HEADER
from tribune_shared.consistency import HEADER as CONSISTENCY_HEADER
from tribune_shared.errors import (
    GatewayTimeout,
    InvalidFields,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from tribune_shared.limits import allow_body, too_large
from tribune_shared.logging import current_correlation_id, get_logger, new_correlation_id
from yarl import URL

from gateway.caches import SignedIdentities
from gateway.consistency import UserTokens
from gateway.paths import wire
from gateway.routing import Route, service_url
from gateway.settings import GatewaySettings

log = get_logger(__name__)

#: a public route forwards these from the client untouched (the webhook signature)
WEBHOOK_HEADERS = ("X-Tribune-Timestamp", "X-Tribune-Signature")
#: request headers every forwarded call passes on: content negotiation, conditional
#: requests (a PATCH with If-Match is refused upstream when the contact changed meanwhile)
#: and Idempotency-Key (a treasurer's double click records one payment)
REQUEST_HEADERS = ("accept", "if-match", "if-none-match", "idempotency-key", "accept-language")
#: a public route's CORS request headers: the service answers for its own resources (a
#: public form allows the sites its definition names)
PUBLIC_CORS_HEADERS = ("origin", "access-control-request-method", "access-control-request-headers")
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
    # public forms (contacts.forms): embeddable pages and CORS of the sites posting to them
    "x-content-type-options",
    "vary",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    # read-your-writes: what the service committed, for the client to send back
    "x-tribune-consistency",
)
_PASSED_BACK = frozenset(h.encode() for h in RESPONSE_HEADERS)
#: an answer up to this size (declared by its Content-Length) is read whole and sent on in
#: one piece: streaming it would cost more than it saves (chunked framing, a background
#: task, several ASGI messages). Larger or unsized ones (exports) are streamed.
BUFFERED_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Part:
    """One part of the person view: which service answers it and how."""

    name: str
    service: str
    path: str
    params: dict[str, str] | None = None
    #: what its JSON must be (anything else counts as the service failing)
    kinds: tuple[type, ...] = (dict, list)


@dataclass(frozen=True)
class Answer:
    """A service's whole answer to one of the gateway's own calls."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.content)


class _Body:
    """The client's body passed on as it arrives, counted against the limit."""

    def __init__(self, request: Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        size = 0
        try:
            # the kernel's BodyLimit counts it too, and refuses first when installed
            async for chunk in self.request.stream():
                size += len(chunk)
                if size > self.limit:
                    raise too_large(self.limit)
                if chunk:
                    yield chunk
        except PayloadTooLarge:
            # the HTTP client reports it as its own failure: remembered to answer 413
            self.too_large = True
            raise


class Proxy:
    def __init__(
        self,
        settings: GatewaySettings,
        session: aiohttp.ClientSession | None = None,
        *,
        tokens: UserTokens | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens if tokens is not None else UserTokens.from_settings(settings)
        self.signed = SignedIdentities(settings.identity_secret, settings.identity_ttl_seconds)
        self._session = session
        self._base = {
            s: service_url(settings, s) for s in ("contacts", "consent", "memberships", "messaging")
        }

    @property
    def session(self) -> aiohttp.ClientSession:
        # made on first use: an aiohttp session belongs to the running event loop
        if self._session is None:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=s.upstream_max_connections,
                    limit_per_host=0,
                    keepalive_timeout=s.upstream_keepalive_expiry_seconds or None,
                    force_close=s.upstream_keepalive_expiry_seconds == 0,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    # waiting for a pooled connection and connecting: bounded on purpose
                    # (load shedding: 503 + Retry-After, _upstream_errors)
                    connect=s.upstream_pool_wait_seconds,
                    sock_connect=s.upstream_connect_timeout_seconds,
                    sock_read=s.upstream_timeout_seconds,
                ),
                # the services' answers pass through as they are (no compression asked)
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                trust_env=False,  # service-to-service calls never go through an HTTP proxy
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, service: str, path_and_query: str) -> URL:
        # encoded=True: the client's path and query go on byte for byte, never re-quoted
        base = self._base.get(service) or service_url(self.settings, service)
        return URL(base + path_and_query, encoded=True)

    def upstream_headers(
        self, request: Request | None, identity: Identity | None, service: str | None = None
    ) -> dict[str, str]:
        """What every call to a service carries: the correlation id, the caller's signed
        identity and their consistency token (the client's, merged with the one the
        gateway remembers for them, less what ``service`` is known to have applied; a
        public call passes the client's on as it is)."""
        headers = {CORRELATION_HEADER: current_correlation_id() or new_correlation_id()}
        sent = request.headers.get(CONSISTENCY_HEADER) if request is not None else None
        if identity is not None:
            headers[IDENTITY_HEADER] = self.signed(identity)
            token = self.tokens.outgoing(identity.user_id, sent, service)
        else:
            token = sent
        if token:
            headers[CONSISTENCY_HEADER] = token
        return headers

    def _streamed_body(
        self, route: Route, request: Request, headers: dict[str, str]
    ) -> _Body | None:
        """The client's body passed on as it arrives (an upload is never held whole in
        the gateway), unchanged, within the route's limit for this request (413 beyond,
        checked on the declared length first, then while streaming; reached only once the
        caller is authenticated); None when there is none."""
        limit = route.max_body_bytes(self.settings, request.method, request.scope["path"])
        allow_body(request.scope, limit)  # the kernel's BodyLimit counts against the same
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if not chunked and (not declared or declared == "0"):
            return None
        if declared and declared.isdigit():
            headers["Content-Length"] = declared
        return _Body(request, limit)

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Answer:
        """One call of the gateway's own (person view, access export), read whole."""
        url = self.url(service, path)
        if params:
            url = url.with_query(params)
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        with _upstream_errors(service, self.settings.upstream_retry_after_seconds):
            async with self.session.request(
                method, url, headers=headers, data=data, allow_redirects=False
            ) as response:
                content = await response.read()
        self.tokens.answered(service, response.headers.get(APPLIED_HEADER))
        return Answer(response.status, response.headers, content)

    async def forward(self, route: Route, request: Request, identity: Identity | None) -> Response:
        """Same method, path, query and body to the owning service; its answer as is."""
        headers = self.upstream_headers(request, None if route.public else identity, route.service)
        if content_type := request.headers.get("content-type"):
            headers["Content-Type"] = content_type
        for name in REQUEST_HEADERS:
            if (value := request.headers.get(name)) is not None:
                headers[name] = value
        if route.public:
            for name in (*WEBHOOK_HEADERS, *route.signature_headers, *PUBLIC_CORS_HEADERS):
                if (value := request.headers.get(name)) is not None:
                    headers[name] = value
        # Where the request came from (set here, never taken from the client): services
        # that keep it as proof or audit minimise it (tribune_shared.client_info).
        if request.client is not None and request.client.host:
            headers[CLIENT_IP_HEADER] = request.client.host
        if user_agent := request.headers.get("user-agent"):
            headers[CLIENT_USER_AGENT_HEADER] = user_agent[:512]
        # the path the gateway routed and audited on (gateway.paths), never the raw one
        target = wire(request.scope["path"])
        if query := request.scope.get("query_string", b""):
            target += "?" + query.decode("latin-1")
        body = self._streamed_body(route, request, headers)
        try:
            with _upstream_errors(route.service, self.settings.upstream_retry_after_seconds):
                upstream = await self.session.request(
                    request.method,
                    self.url(route.service, target),
                    headers=headers,
                    data=body.chunks() if body is not None else None,
                    allow_redirects=False,
                )
        except (ServiceUnavailable, GatewayTimeout):
            if body is not None and body.too_large:
                raise too_large(body.limit) from None
            raise
        self.tokens.answered(route.service, upstream.headers.get(APPLIED_HEADER))
        passed = _passed_back(upstream.raw_headers)
        length = upstream.content_length
        if length is not None and length <= BUFFERED_BODY_BYTES:
            try:
                with _upstream_errors(route.service, self.settings.upstream_retry_after_seconds):
                    content = await upstream.read()
            finally:
                upstream.release()
            return Response(content, status_code=upstream.status, headers=passed)
        # The answer is streamed back as it comes (an export is never held whole here).
        return StreamingResponse(
            upstream.content.iter_any(),
            status_code=upstream.status,
            headers=passed,
            background=BackgroundTask(upstream.release),
        )

    # ------------------------------------------------------------ person view
    async def _fetch(self, part: Part, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        """(status, JSON body, consistency token): status 0 when the service failed (down,
        5xx, not the JSON the view expects...)."""
        try:
            answer = await self.call(part.service, "GET", part.path, headers, params=part.params)
        except (ServiceUnavailable, GatewayTimeout):
            return 0, b"", None
        token = answer.headers.get(CONSISTENCY_HEADER)
        if answer.status_code == 404:
            return 404, b"null", token
        if not answer.is_success:
            log.warning(
                "gateway.person_part_failed", service=part.service, status=answer.status_code
            )
            return 0, b"", token
        try:
            # Checked, not re-encoded: the service's JSON is spliced into the view as is.
            kind = type(pydantic_core.from_json(answer.content))
        except ValueError:
            kind = None
        if kind not in part.kinds:
            log.warning("gateway.person_part_not_json", service=part.service)
            return 0, b"", token
        return answer.status_code, answer.content, token

    async def person(self, request: Request, identity: Identity, contact_id: str) -> Response:
        """Everything about one person, fetched concurrently; a failing service degrades its
        part (listed in ``unavailable``) instead of failing the view."""
        parts = (
            Part("contact", "contacts", f"/api/v1/contacts/{contact_id}", kinds=(dict,)),
            Part("consents", "consent", f"/api/v1/consents/{contact_id}"),
            Part("memberships", "memberships", "/api/v1/memberships", {"contact_id": contact_id}),
            Part("messages", "messaging", "/api/v1/messages", {"contact_id": contact_id}),
        )
        results = await asyncio.gather(
            *(self._fetch(p, self.upstream_headers(request, identity, p.service)) for p in parts)
        )
        if results[0][0] == 404:
            raise NotFound("contact not found")
        unavailable = [part.service for part, r in zip(parts, results, strict=True) if not r[0]]
        body = b"{" + b",".join(
            b'"%s":%s' % (part.name.encode(), r[1] if r[0] else b"null")
            for part, r in zip(parts, results, strict=True)
        )
        body += b',"unavailable":' + json.dumps(unavailable).encode() + b"}"
        # what the client sent and the services answered (the view writes nothing)
        token = merged_token(
            [request.headers.get(CONSISTENCY_HEADER), *(r[2] for r in results)], self.settings
        )
        return Response(
            body,
            media_type="application/json",
            headers={CONSISTENCY_HEADER: token} if token else None,
        )


def merged_token(raw_tokens: Iterable[str | None], settings: GatewaySettings) -> str | None:
    """One token naming every write the given ones name (a service's bad token is
    dropped: it is not the client's fault)."""
    entries = []
    for raw in raw_tokens:
        if raw:
            with contextlib.suppress(InvalidFields):
                entries.append(consistency.parse(raw))
    if not entries:
        return None
    merged = consistency.merge(
        *entries,
        max_entries=settings.consistency_max_entries,
        horizon_seconds=settings.consistency_horizon_seconds,
    )
    return consistency.render(merged) or None


def _passed_back(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    passed = {}
    for name, value in raw:
        name = name.lower()
        if name in _PASSED_BACK:
            passed[name.decode("latin-1")] = value.decode("latin-1")
    return passed


@contextlib.contextmanager
def _upstream_errors(service: str, retry_after: int) -> Iterator[None]:
    """The HTTP client's failures as answers a client can act on (503 unreachable or busy,
    with Retry-After: nothing was applied; 504 reached but late: the request may have
    been applied)."""
    again = {"Retry-After": str(retry_after)}
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        # ConnectionTimeoutError: no pooled connection within upstream_pool_wait_seconds
        # (every one busy: the service is not keeping up) or no TCP connection at all
        log.warning("gateway.service_unreachable", service=service, error=repr(exc))
        raise ServiceUnavailable(
            f"the {service} service is busy or unreachable; try again in {retry_after} s",
            service=service,
            headers=again,
            retry_after=retry_after,
        ) from exc
    except TimeoutError as exc:  # aiohttp's read timeouts are TimeoutErrors too
        log.warning("gateway.service_timeout", service=service, error=repr(exc))
        raise GatewayTimeout(
            f"the {service} service did not answer in time", service=service
        ) from exc
    except aiohttp.ClientError as exc:
        log.warning("gateway.service_failed", service=service, error=repr(exc))
        raise ServiceUnavailable(
            f"the {service} service is unavailable; try again in {retry_after} s",
            service=service,
            headers=again,
            retry_after=retry_after,
        ) from exc
