"""Load shedding at the gateway (gateway.proxy): when every connection to a service is
busy, a call waits at most GATEWAY_UPSTREAM_POOL_WAIT_SECONDS for one and then gets a
503 with Retry-After (a deliberate answer a client can act on), instead of queueing until
the read timeout; against a real loopback server that takes connections and answers
slowly."""

from __future__ import annotations

import asyncio

import pytest
from gateway.proxy import Proxy
from gateway.settings import GatewaySettings
from tribune_shared.errors import ServiceUnavailable


async def slow_service(delay: float) -> tuple[asyncio.Server, str]:
    """An HTTP service answering every request after ``delay`` seconds."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def proxy(url: str) -> Proxy:
    settings = GatewaySettings(
        contacts_url=url,
        upstream_max_connections=1,
        upstream_pool_wait_seconds=0.2,
        upstream_retry_after_seconds=7,
    )
    return Proxy(settings)


def test_a_call_finding_every_connection_busy_is_shed_with_a_retry_after():
    async def scenario() -> tuple[int, ServiceUnavailable]:
        server, url = await slow_service(delay=1.5)
        gateway = proxy(url)
        try:
            first = asyncio.create_task(gateway.call("contacts", "GET", "/slow", {}))
            await asyncio.sleep(0.1)  # the only connection is now busy
            with pytest.raises(ServiceUnavailable) as shed:
                await gateway.call("contacts", "GET", "/also-slow", {})
            return (await first).status_code, shed.value
        finally:
            await gateway.close()
            server.close()

    served, shed = asyncio.run(scenario())
    assert served == 200  # the call holding the connection is answered
    assert shed.status_code == 503
    assert shed.headers == {"Retry-After": "7"}
    assert "busy or unreachable" in shed.message and shed.extra["service"] == "contacts"
