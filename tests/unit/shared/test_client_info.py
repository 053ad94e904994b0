"""What is kept of where a request came from: IPv4 /24, IPv6 /48, a truncated user agent."""

from __future__ import annotations

import pytest
from tribune_shared.client_info import (
    CLIENT_IP_HEADER,
    CLIENT_USER_AGENT_HEADER,
    ClientInfo,
    minimise_ip,
    minimise_user_agent,
)


@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        (" 198.51.100.1 ", "198.51.100.0/24"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::/48"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),  # IPv4-mapped counts as IPv4
        ("::1", "::/48"),
    ],
)
def test_addresses_are_cut_to_their_network(address, kept):
    assert minimise_ip(address) == kept


@pytest.mark.parametrize("value", [None, "", "not an ip", "203.0.113.300", "example.org"])
def test_anything_else_is_not_kept(value):
    assert minimise_ip(value) is None


def test_a_user_agent_is_truncated_and_cleaned():
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
    assert minimise_user_agent(ua) == ua[:64].rstrip()
    assert minimise_user_agent("curl/8.5\r\nX-Injected: 1", 100) == "curl/8.5X-Injected: 1"
    assert minimise_user_agent("  ", 64) is None
    assert minimise_user_agent(ua, 0) is None
    assert minimise_user_agent(None) is None


def test_client_info_from_the_gateway_headers():
    info = ClientInfo.from_headers(
        {CLIENT_IP_HEADER: "203.0.113.77", CLIENT_USER_AGENT_HEADER: "Thunderbird/128.0 " * 10},
        user_agent_max_chars=20,
    )
    assert info == ClientInfo(ip="203.0.113.0/24", user_agent="Thunderbird/128.0 Th")
    assert info.as_proof() == {"ip": "203.0.113.0/24", "user_agent": "Thunderbird/128.0 Th"}
    assert ClientInfo.from_headers({}).as_proof() == {}
