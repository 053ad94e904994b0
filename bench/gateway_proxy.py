"""Benchmark: GET one contact through the gateway, next to the contacts API directly.

    uv run python bench/gateway_proxy.py [--concurrency 8] [--seconds 10] [--rounds 2]

Starts an isolated platform (tribune_devstack's RunningStack on StackConfig.for_tests(): the
gateway and contacts APIs as real processes on a Kafka and a store of the test stack), logs
in as the administrator, creates one contact through the gateway, then loads, in the same
run and with the same number of concurrent clients (each with one keep-alive connection):

- direct: ``GET /api/v1/contacts/{id}`` on the contacts API with a signed identity (what the
  gateway sends), and
- gateway: the same ``GET`` on the gateway with the administrator's bearer token (the
  gateway checks the user, signs the identity, forwards, audits the read).

- bare hop: the same ``GET`` through ``BareHop`` below, a proxy that only forwards
  (served and forwarding like the gateway: uvicorn on uvloop and httptools, aiohttp's
  pooled client; no users, identities, audit or middleware). It is the floor of any
  Python gateway on these CPUs: what the gateway costs above it is its own work.

Rounds alternate (direct, bare hop, gateway, direct, ...) so a noisy neighbour hits all.
It prints throughput, p50/p90/p99 latency, the throughput ratio gateway/direct and the p50
overhead in ms, next to the goals (ratio >= 0.7, p50 overhead <= 5 ms), and the same
figures for the bare hop.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio streams (an httpx
client costs more CPU than the servers it measures on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import uvicorn
from gateway.settings import GatewaySettings
from tribune_devstack.platform import RunningStack, start_platform, stop_processes
from tribune_devstack.procs import DevstackError
from tribune_devstack.stack import StackConfig, find_free_ports
from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity
from yarl import URL

GOAL_RATIO = 0.7
GOAL_OVERHEAD_MS = 5.0


# ---------------------------------------------------------------- the platform


@contextmanager
def platform(
    label: str, apis: list[str], workers: list[str] = ()
) -> Iterator[tuple[RunningStack, bool]]:
    """An isolated platform for one bench run (tribune_devstack's test stack: its own ports,
    prefixes and folder) with only the processes the bench needs: nothing else competes
    for the 2 CPUs. Workers are optional: if they cannot start, the bench goes on without
    them (and says so). Yields the stack and whether the workers run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started
    cfg = StackConfig.for_tests(name=f"bench-{label}-{uuid.uuid4().hex[:6]}")
    print(f"starting an isolated platform ({cfg.name}) ...", flush=True)
    began = time.perf_counter()
    with RunningStack(cfg, environment="test", platform=False) as stack:
        started = start_platform(cfg, "test", only=[f"{s}-api" for s in apis])
        try:
            with_workers = not workers
            if workers:
                try:
                    started += start_platform(cfg, "test", only=[f"{s}-worker" for s in workers])
                    with_workers = True
                except DevstackError as exc:
                    print(f"WITHOUT WORKERS (they did not start): {str(exc)[:500]}", flush=True)
            print(f"platform ready in {time.perf_counter() - began:.0f}s", flush=True)
            yield stack, with_workers
        finally:
            stop_processes(cfg, started)


def admin_token(stack: RunningStack) -> str:
    email, password = stack.admin_credentials
    r = httpx.post(
        f"{stack.gateway_url}/api/v1/auth/token",
        data={"username": email, "password": password},
        timeout=30,
        trust_env=False,
    )
    r.raise_for_status()
    return r.json()["access_token"]


def create_contact(stack: RunningStack, token: str, i: int = 0) -> str:
    r = httpx.post(
        f"{stack.gateway_url}/api/v1/contacts",
        json={
            "given_name": "Bench",
            "family_name": f"Person{i}",
            "email": f"bench.{uuid.uuid4().hex[:12]}@example.org",
            "phone": f"06 12 {secrets.randbelow(10**6):06d}",
            "origin": {"kind": "web_form", "detail": "bench"},
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    r.raise_for_status()
    return r.json()["id"]


def identity_of(stack: RunningStack, token: str) -> Identity:
    r = httpx.get(
        f"{stack.gateway_url}/api/v1/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    r.raise_for_status()
    me = r.json()
    return Identity(
        user_id=me["id"],
        email=me["email"],
        role=Role(me["role"]),
        federation_id=me["federation_id"],
        federation_path=me["federation_path"],
    )


# ---------------------------------------------------------------- the load generator


class Connection:
    """One keep-alive HTTP/1.1 connection: a request's bytes in, its status out (the body
    is read and dropped; Content-Length and chunked answers)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                await self.reader.readexactly(size + 2)
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status


def raw_get(url: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return parts.hostname or "127.0.0.1", parts.port or 80, raw


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU time of the platform's processes over a run: what a request costs each of them,
    a figure the other loads of a shared machine do not move (wall-clock ones do)."""

    def __init__(
        self, stack: RunningStack, names: list[str], others: dict[str, int | None] | None = None
    ) -> None:
        self.pids = {n: stack.pid(n) for n in names} | (others or {})
        self.pids["load generator"] = os.getpid()

    def snapshot(self) -> dict[str, float]:
        return {n: cpu_seconds(p) if p else float("nan") for n, p in self.pids.items()}


@dataclass
class Run:
    label: str
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: Run) -> None:
        self.seconds += other.seconds
        self.latencies_ms += other.latencies_ms
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        for k, v in other.cpu.items():
            self.cpu[k] = self.cpu.get(k, 0.0) + v

    def cpu_ms_per_request(self) -> dict[str, float]:
        n = len(self.latencies_ms) or 1
        return {k: v * 1000 / n for k, v in self.cpu.items()}

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def load(
    label: str,
    urls: list[str],
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
    meter: CpuMeter | None = None,
) -> Run:
    """``concurrency`` clients, each sending its next request when the last one answered,
    for ``seconds``; only 200 answers count, others are tallied as errors."""
    requests = [raw_get(u, headers) for u in urls]
    run = Run(label)
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        conn = Connection(requests[0][0], requests[0][1])
        i = n
        try:
            while time.perf_counter() < deadline:
                _, _, raw = requests[i % len(requests)]
                i += 1
                t = time.perf_counter()
                try:
                    status = await conn.request(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    conn.close()
                    status = 0
                if status == 200:
                    run.latencies_ms.append((time.perf_counter() - t) * 1000)
                else:
                    run.errors[status] = run.errors.get(status, 0) + 1
        finally:
            conn.close()

    before = meter.snapshot() if meter else {}
    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    run.seconds = time.perf_counter() - started
    if meter:
        run.cpu = {k: v - before[k] for k, v in meter.snapshot().items()}
    return run


def cpu_table(runs: list[Run]) -> str:
    names = list(runs[0].cpu)
    lines = [f"{'CPU ms per request':<22}" + "".join(f"{n:>16}" for n in names) + f"{'total':>10}"]
    for run in runs:
        per = run.cpu_ms_per_request()
        lines.append(
            f"{run.label:<22}"
            + "".join(f"{per[n]:>16.2f}" for n in names)
            + f"{sum(v for v in per.values() if v == v):>10.2f}"
        )
    return "\n".join(lines)


def row(run: Run) -> str:
    errors = sum(run.errors.values())
    return (
        f"{run.label:<10}{run.rate:>9.0f}{run.p(50):>9.1f}{run.p(90):>9.1f}{run.p(99):>9.1f}"
        f"{max(run.latencies_ms, default=float('nan')):>9.1f}"
        f"{statistics.fmean(run.latencies_ms) if run.latencies_ms else float('nan'):>9.1f}"
        f"{len(run.latencies_ms):>9}{errors:>7}" + (f"  {dict(run.errors)}" if errors else "")
    )


HEADER = (
    f"{'':<10}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'mean ms':>9}"
    f"{'ok':>9}{'errors':>7}"
)


# ---------------------------------------------------------------- the bare hop

#: hop-by-hop headers (RFC 9110 7.6.1) and the ones the client library sets itself
_DROPPED = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"})


class BareHop:
    """The floor of any Python gateway on these CPUs: one HTTP hop and nothing else.

    A plain ASGI app, served the way every Tribune API is served (uvicorn on uvloop and
    httptools, no access log), forwarding each request with the HTTP client the gateway
    uses (one aiohttp session, pooled kept-alive connections) and passing the answer back
    as it is. No authentication, no identity of its own (the client's headers go on), no
    audit, no middleware, no metrics: what the gateway costs above it is its own work;
    what it costs against the direct calls is what any extra Python hop costs here."""

    def __init__(self, upstream: str, max_connections: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if self.session is not None:
                await self.session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.session is None:  # made on first use: a session belongs to the running loop
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                trust_env=False,
            )
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k not in _DROPPED
        }
        async with self.session.request(
            scope["method"],
            URL(self.upstream + target, encoded=True),
            headers=headers,
            data=body or None,
        ) as answer:
            content = await answer.read()
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [
                        (k, v)
                        for k, v in answer.raw_headers
                        if k.lower() not in _DROPPED and k.lower() != b"content-length"
                    ]
                    + [(b"content-length", str(len(content)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": content})


def serve_bare_hop(port: int, upstream: str) -> None:
    """The bare hop's process (``--serve-bare-hop PORT``), served as every Tribune API is."""
    uvicorn.run(
        BareHop(upstream, GatewaySettings.model_fields["upstream_max_connections"].default),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


@contextmanager
def bare_hop(stack: RunningStack) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The bare hop in front of the contacts API, as a process of its own (this script
    with ``--serve-bare-hop``): its base URL and its process, once it answers."""
    (port,) = find_free_ports(1)
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            f"--serve-bare-hop={port}",
            f"--upstream={stack.url('contacts')}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bare hop did not start") from None
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------- the bench


async def bench(stack: RunningStack, args: argparse.Namespace, hop_url: str, hop_pid: int) -> int:
    token = admin_token(stack)
    contact_id = create_contact(stack, token)
    identity = identity_of(stack, token)
    # Services check only the signature and expiry of an identity: one for the whole run.
    signed = sign_identity(identity, stack.env["TRIBUNE_IDENTITY_SECRET"], 3600)
    path = f"/api/v1/contacts/{contact_id}"
    direct_url, gateway_url = stack.url("contacts") + path, stack.gateway_url + path
    hop_target = hop_url + path
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        r = await http.get(direct_url, headers={IDENTITY_HEADER: signed})
        h = await http.get(hop_target, headers={IDENTITY_HEADER: signed})
        g = await http.get(gateway_url, headers={"Authorization": f"Bearer {token}"})
    if {r.status_code, h.status_code, g.status_code} != {200} or not (
        r.json() == h.json() == g.json()
    ):
        for label, answer in (("direct", r), ("bare hop", h), ("gateway", g)):
            print(f"{label} {answer.status_code} {answer.text[:200]}")
        return 1
    targets = {
        "direct": ([direct_url], {IDENTITY_HEADER: signed}),
        "bare hop": ([hop_target], {IDENTITY_HEADER: signed}),
        "gateway": ([gateway_url], {"Authorization": f"Bearer {token}"}),
    }
    print(
        f"GET {path}: {args.concurrency} concurrent clients, {args.rounds} round(s) of "
        f"{args.seconds:g} s per side, alternating (after {args.warmup:g} s of warm-up each)",
        flush=True,
    )
    for label, (urls, headers) in targets.items():
        await load(label, urls, headers, concurrency=args.concurrency, seconds=args.warmup)
    meter = CpuMeter(
        stack, ["gateway-api", "contacts-api", *stack.cfg.stores], {"bare hop": hop_pid}
    )
    totals = {label: Run(label) for label in targets}
    for n in range(args.rounds):
        for label, (urls, headers) in targets.items():
            run = await load(
                label,
                urls,
                headers,
                concurrency=args.concurrency,
                seconds=args.seconds,
                meter=meter,
            )
            print(f"  round {n + 1} {row(run)}", flush=True)
            totals[label].add(run)
    # One client at a time: the gateway's own latency, without the queueing that a
    # saturated closed loop adds (there, the p50 gap follows from the throughput ratio).
    alone = {}
    for label, (urls, headers) in targets.items():
        alone[label] = await load(
            f"{label} x1", urls, headers, concurrency=1, seconds=args.seconds / 2
        )
        print(f"  unloaded {row(alone[label])}", flush=True)
    direct, hop, gateway = totals["direct"], totals["bare hop"], totals["gateway"]
    print()
    print(HEADER)
    for run in (direct, hop, gateway, *alone.values()):
        print(row(run))
    print()
    print(cpu_table([direct, hop, gateway]))
    print()
    print(f"{'figure':<34}{'value':>10}{'goal':>12}  met")
    for label, through in (("gateway", gateway), ("bare hop", hop)):
        ratio = through.rate / direct.rate if direct.rate else float("nan")
        overhead = through.p(50) - direct.p(50)
        alone_overhead = alone[label].p(50) - alone["direct"].p(50)
        goal_ratio, goal_overhead = (">= 0.7", "<= 5") if label == "gateway" else ("-", "-")
        met_ratio = str(ratio >= GOAL_RATIO) if label == "gateway" else ""
        met_overhead = str(overhead <= GOAL_OVERHEAD_MS) if label == "gateway" else ""
        print(f"{f'throughput {label}/direct':<34}{ratio:>10.2f}{goal_ratio:>12}  {met_ratio}")
        name = f"p50 overhead {label} (ms)"
        print(f"{name:<34}{overhead:>10.1f}{goal_overhead:>12}  {met_overhead}")
        print(f"{f'p99 overhead {label} (ms)':<34}{through.p(99) - direct.p(99):>10.1f}{'-':>12}")
        print(f"{f'p50 overhead {label}, 1 client (ms)':<34}{alone_overhead:>10.1f}{'-':>12}")
    rate_above = gateway.rate / hop.rate if hop.rate else float("nan")
    print(f"{'throughput gateway/bare hop':<34}{rate_above:>10.2f}{'-':>12}")
    return 0 if not any(run.errors for run in totals.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10, help="per round and side")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--serve-bare-hop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare_hop:  # the bare hop's own process (started by bare_hop below)
        serve_bare_hop(args.serve_bare_hop, args.upstream)
        return 0
    if args.concurrency < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--concurrency, --rounds and --seconds must be positive")
    with platform("gw", ["gateway", "contacts"]) as (stack, _), bare_hop(stack) as (hop, proc):
        return asyncio.run(bench(stack, args, hop, proc.pid))


if __name__ == "__main__":
    sys.exit(main())
