"""Which service owns which part of the API (prefix -> service), and how large a body each
request may carry, resolved without I/O."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class LargeBody:
    """Requests under a route whose body may exceed ``max_body_bytes`` (the JSON limit): an
    upload, a long text. The service declares the same route (``limits.larger_body``)."""

    method: str
    #: the exact path; a ``{name}`` segment stands for any one segment
    path: str
    #: the GatewaySettings field holding their limit in bytes
    setting: str

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        want, got = self.path.split("/"), path.split("/")
        return len(want) == len(got) and all(
            w == g or (w.startswith("{") and g != "") for w, g in zip(want, got, strict=True)
        )


#: what a private route forwards when it names no methods
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str  # contacts | consent | memberships | messaging | live
    public: bool = False  # no client token; the request is forwarded untouched (webhooks)
    #: methods forwarded; default: POST for a public route, every method otherwise
    methods: tuple[str, ...] | None = None
    #: the requests that may carry more than ``max_body_bytes``; every other one may not
    large_bodies: tuple[LargeBody, ...] = ()
    #: a public route's own signature headers, passed on untouched besides the Tribune ones
    #: (a provider signs its own way: Stripe-Signature, x-ha-signature)
    signature_headers: tuple[str, ...] = ()

    @property
    def forwarded_methods(self) -> tuple[str, ...]:
        """The methods forwarded: the route's own, else POST for a public route (a webhook),
        else every method."""
        return self.methods or (("POST",) if self.public else METHODS)

    @property
    def tag(self) -> str:
        return self.prefix.removeprefix("/api/v1/").replace("/", "-")

    def max_body_bytes(self, settings: GatewaySettings, method: str, path: str) -> int:
        """The largest body this request may carry (413 beyond)."""
        for large in self.large_bodies:
            if large.matches(method, path):
                return int(getattr(settings, large.setting))
        return settings.max_body_bytes


#: Longest prefixes first, so /api/v1/webhooks/payments is not taken for a shorter one.
ROUTES: tuple[Route, ...] = (
    Route("/api/v1/webhooks/payments", "memberships", public=True),
    # payment providers' own webhooks (memberships.providers), signed their way
    Route(
        "/api/v1/webhooks/stripe",
        "memberships",
        public=True,
        signature_headers=("Stripe-Signature",),
    ),
    Route(
        "/api/v1/webhooks/helloasso",
        "memberships",
        public=True,
        signature_headers=("x-ha-signature",),
    ),
    Route("/api/v1/webhooks/sms", "consent", public=True),  # inbound SMS (STOP), signed
    # delivery feedback (messaging.feedback), signed: SMS receipts, email events, DSN/ARF
    Route("/api/v1/webhooks/sms-receipts", "messaging", public=True),
    Route(
        "/api/v1/webhooks/email-events",
        "messaging",
        public=True,
        large_bodies=(LargeBody("POST", "/api/v1/webhooks/email-events", "max_text_body_bytes"),),
    ),
    Route(
        "/api/v1/webhooks/email-dsn",
        "messaging",
        public=True,
        large_bodies=(LargeBody("POST", "/api/v1/webhooks/email-dsn", "max_text_body_bytes"),),
    ),
    # pages behind the links in emails (confirm a consent, unsubscribe; RFC 8058 one-click)
    Route("/api/v1/public/consents", "consent", public=True, methods=("GET", "POST")),
    # public forms (contacts.forms): the page, its JSON definition, submissions, counter;
    # OPTIONS for the CORS preflight of party websites posting themselves
    Route("/api/v1/public/forms", "contacts", public=True, methods=("GET", "POST", "OPTIONS")),
    # the tracked links and the open pixel of campaign emails (signed tokens; read only)
    Route("/api/v1/public/t", "messaging", public=True, methods=("GET",)),
    Route(
        "/api/v1/contacts",
        "contacts",
        large_bodies=(LargeBody("POST", "/api/v1/contacts/imports", "max_upload_body_bytes"),),
    ),
    Route("/api/v1/segments", "contacts"),
    Route("/api/v1/forms", "contacts"),  # form definitions, submissions (contacts.forms)
    Route("/api/v1/meetings", "contacts"),  # meetings, RSVPs, check-in (contacts.meetings)
    Route(
        "/api/v1/consents",
        "consent",
        large_bodies=(
            LargeBody("POST", "/api/v1/consents/texts", "max_text_body_bytes"),
            LargeBody("PUT", "/api/v1/consents/texts/{text_id}", "max_text_body_bytes"),
        ),
    ),
    Route("/api/v1/memberships", "memberships"),
    Route("/api/v1/payments", "memberships"),
    # legal gift rules: the pre-capture check, elections and their campaign accounts
    Route("/api/v1/donations", "memberships"),
    # live figures (faust, memberships.live): JSON and a Server-Sent Events stream; an
    # answer without Content-Length is streamed back as it comes (gateway.proxy)
    Route("/api/v1/live", "live"),
    Route("/api/v1/receipts", "memberships"),  # tax receipts (and their PDFs)
    Route("/api/v1/treasury", "memberships"),  # CNCCFP file, ledger
    Route(
        "/api/v1/messages",
        "messaging",
        large_bodies=(LargeBody("POST", "/api/v1/messages", "max_text_body_bytes"),),
    ),
    Route(
        "/api/v1/templates",
        "messaging",
        # a template's HTML and text parts, JSON-escaped, are far above the JSON limit
        large_bodies=(
            LargeBody("POST", "/api/v1/templates", "max_text_body_bytes"),
            LargeBody("POST", "/api/v1/templates/{template_id}/versions", "max_text_body_bytes"),
            LargeBody(
                "PUT", "/api/v1/templates/{template_id}/versions/{version}", "max_text_body_bytes"
            ),
        ),
    ),
    Route("/api/v1/campaigns", "messaging"),
    Route("/api/v1/privacy", "consent"),  # privacy requests (DPO); export: gateway.privacy
)


def service_url(settings: GatewaySettings, service: str) -> str:
    return str(getattr(settings, f"{service}_url")).rstrip("/")


def resolve(path: str, routes: tuple[Route, ...] = ROUTES) -> Route | None:
    """The route owning ``path``: its prefix exactly or followed by ``/`` (not ``/contactsX``)."""
    for route in sorted(routes, key=lambda r: len(r.prefix), reverse=True):
        if path == route.prefix or path.startswith(route.prefix + "/"):
            return route
    return None
