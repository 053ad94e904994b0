"""Which service owns which part of the API (prefix -> service), resolved without I/O."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str  # contacts | consent | memberships | messaging
    public: bool = False  # no client token; the request is forwarded untouched (webhooks)
    #: methods forwarded; default: POST for a public route, every method otherwise
    methods: tuple[str, ...] | None = None

    @property
    def tag(self) -> str:
        return self.prefix.removeprefix("/api/v1/").replace("/", "-")


#: Longest prefixes first, so /api/v1/webhooks/payments is not taken for a shorter one.
ROUTES: tuple[Route, ...] = (
    Route("/api/v1/webhooks/payments", "memberships", public=True),
    Route("/api/v1/webhooks/sms", "consent", public=True),  # inbound SMS (STOP), signed
    # pages behind the links in emails (confirm a consent, unsubscribe; RFC 8058 one-click)
    Route("/api/v1/public/consents", "consent", public=True, methods=("GET", "POST")),
    Route("/api/v1/contacts", "contacts"),
    Route("/api/v1/segments", "contacts"),
    Route("/api/v1/consents", "consent"),
    Route("/api/v1/memberships", "memberships"),
    Route("/api/v1/payments", "memberships"),
    Route("/api/v1/messages", "messaging"),
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
