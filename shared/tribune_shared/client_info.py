"""Where a request came from, as the gateway passes it to services, and how it is
minimised before anything is stored (GDPR: data minimisation).

The gateway sets ``X-Tribune-Client-IP`` and ``X-Tribune-Client-User-Agent`` on every
request it forwards (replacing whatever the client sent). A service that keeps them as
proof (consent) or in an audit log keeps only ``minimise_ip`` (IPv4 /24, IPv6 /48) and
``minimise_user_agent`` (truncated, printable characters only).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

CLIENT_IP_HEADER = "X-Tribune-Client-IP"
CLIENT_USER_AGENT_HEADER = "X-Tribune-Client-User-Agent"

IPV4_PREFIX = 24
IPV6_PREFIX = 48
USER_AGENT_MAX_CHARS = 64


def minimise_ip(
    value: str | None, prefix_ipv4: int = IPV4_PREFIX, prefix_ipv6: int = IPV6_PREFIX
) -> str | None:
    """The network the address belongs to (``203.0.113.0/24``, ``2001:db8:85a3::/48``);
    None if absent or not an IP address. IPv4-mapped IPv6 addresses count as IPv4."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = prefix_ipv4 if address.version == 4 else prefix_ipv6
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def minimise_user_agent(value: str | None, max_chars: int = USER_AGENT_MAX_CHARS) -> str | None:
    """The first ``max_chars`` printable characters of a User-Agent; None if empty."""
    if not value or max_chars <= 0:
        return None
    printable = "".join(c for c in value if c.isprintable()).strip()
    return printable[:max_chars].rstrip() or None


@dataclass(frozen=True)
class ClientInfo:
    """A request's origin, already minimised."""

    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def from_headers(cls, headers, user_agent_max_chars: int = USER_AGENT_MAX_CHARS) -> ClientInfo:
        """From the gateway's headers (any mapping with ``.get``)."""
        return cls(
            ip=minimise_ip(headers.get(CLIENT_IP_HEADER)),
            user_agent=minimise_user_agent(
                headers.get(CLIENT_USER_AGENT_HEADER), user_agent_max_chars
            ),
        )

    def as_proof(self) -> dict[str, str]:
        return {
            k: v for k, v in (("ip", self.ip), ("user_agent", self.user_agent)) if v is not None
        }


__all__ = [
    "CLIENT_IP_HEADER",
    "CLIENT_USER_AGENT_HEADER",
    "ClientInfo",
    "minimise_ip",
    "minimise_user_agent",
]
