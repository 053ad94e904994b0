"""What every answer of the gateway carries (security headers), and which other websites'
pages may call the API from a browser (CORS).

Every answer, the gateway's own and the services' it passes on, gets:

- ``X-Content-Type-Options: nosniff`` (a JSON answer is never run as a script);
- ``Referrer-Policy: no-referrer`` (URLs may hold ids or tokens);
- ``X-Frame-Options: DENY`` and, for API answers, ``Content-Security-Policy:
  default-src 'none'; frame-ancestors 'none'`` (an API answer loads nothing and is framed
  by nobody). An answer that sets its own (consent's public pages, the back office, the
  API docs' HTML) keeps it: HTML pages carry their own policy;
- ``Strict-Transport-Security`` when ``GATEWAY_HSTS_SECONDS`` > 0 (behind TLS).

CORS is off unless ``GATEWAY_CORS_ALLOWED_ORIGINS`` names origins; never on the public
routes (the public forms answer their own, per form, from contacts).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api_keys.domain import API_KEY_HEADER
from gateway.routing import ROUTES

API_CSP = "default-src 'none'; frame-ancestors 'none'"
#: request headers a browser page may send the API
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    API_KEY_HEADER,
    "X-Correlation-ID",
    "X-Tribune-Consistency",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
)
#: answer headers its script may read
CORS_EXPOSED_HEADERS = (
    "Retry-After",
    "ETag",
    "Location",
    "Content-Disposition",
    "X-Correlation-ID",
    "X-Tribune-Consistency",
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts_seconds: int = 0) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_seconds}; includeSubDomains" if hsts_seconds else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                # A page that says who may frame it (a public form embedded in a party's
                # site: CSP frame-ancestors) keeps that word alone; old browsers that only
                # know X-Frame-Options would otherwise refuse the embedding it allows.
                if "frame-ancestors" not in headers.get("content-security-policy", ""):
                    headers.setdefault("X-Frame-Options", "DENY")
                if "content-security-policy" not in headers and not headers.get(
                    "content-type", ""
                ).startswith("text/html"):
                    headers["Content-Security-Policy"] = API_CSP
                if self.hsts is not None:
                    headers.setdefault("Strict-Transport-Security", self.hsts)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ApiCors:
    """Starlette's CORS for the listed origins, on every path but the public routes."""

    def __init__(self, app: ASGIApp, *, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            # bearer tokens and keys, never cookies: a page of another origin is not the
            # back office
            allow_credentials=False,
            max_age=600,
        )
        self.public = tuple(r.prefix for r in ROUTES if r.public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path and not any(path == p or path.startswith(p + "/") for p in self.public):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
