"""Benchmark: the person view (``GET /api/v1/people/{id}``) under 8 concurrent clients.

    uv run python bench/person_view.py [--concurrency 8] [--seconds 20] [--contacts 5]

Starts an isolated platform like bench/gateway_proxy.py (every service API, and the
workers of the four services behind the view, as real processes), logs in as the
administrator, creates a few contacts through the gateway and grants each an email
consent, waits until every service's view of them is there (the person view has their
consents), then ``--concurrency`` clients (one keep-alive connection each) ask for the
person view of those contacts in turn for ``--seconds``. The gateway fetches the contact,
consents, memberships and messages concurrently from the four services and audits the
read. It prints throughput and p50/p90/p99 latency next to the goal (p99 <= 100 ms with 8
clients) and, as a yardstick measured in the same run, the contacts API answering one
contact directly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import httpx
from gateway_proxy import (
    HEADER,
    CpuMeter,
    Run,
    admin_token,
    cpu_table,
    create_contact,
    identity_of,
    load,
    platform,
    row,
)
from tribune_devstack.platform import RunningStack
from tribune_shared.auth import IDENTITY_HEADER, sign_identity

GOAL_P99_MS = 100.0
GRANT = {"channel": "email", "purpose": "news", "source": "bench"}


async def ready_view(stack: RunningStack, token: str, ids: list[str], timeout: float = 120) -> None:
    """Each contact consenting, and its person view whole (consent's projection has it)."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, trust_env=False) as http:
        for cid in ids:
            while True:
                r = await http.post(f"/api/v1/consents/{cid}/grant", json=GRANT, headers=headers)
                if r.status_code == 200:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"grant refused: {r.status_code} {r.text[:300]}")
                await asyncio.sleep(0.2)
            while True:
                view = await http.get(f"/api/v1/people/{cid}", headers=headers)
                body = view.json() if view.status_code == 200 else {}
                if body.get("consents") and not body.get("unavailable"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"person view incomplete: {view.status_code} {view.text}")
                await asyncio.sleep(0.2)


async def bench(stack: RunningStack, args: argparse.Namespace, workers: bool) -> int:
    token = admin_token(stack)
    ids = [create_contact(stack, token, i) for i in range(args.contacts)]
    if workers:
        await ready_view(stack, token, ids)
    identity = identity_of(stack, token)
    signed = sign_identity(identity, stack.env["TRIBUNE_IDENTITY_SECRET"], 3600)
    bearer = {"Authorization": f"Bearer {token}"}
    people = [f"{stack.gateway_url}/api/v1/people/{c}" for c in ids]
    direct = [f"{stack.url('contacts')}/api/v1/contacts/{c}" for c in ids]
    print(
        f"person view of {len(ids)} contacts: {args.concurrency} concurrent clients, "
        f"{args.seconds:g} s (after {args.warmup:g} s of warm-up)",
        flush=True,
    )
    await load("warm-up", people, bearer, concurrency=args.concurrency, seconds=args.warmup)
    meter = CpuMeter(
        stack,
        [
            "gateway-api",
            "contacts-api",
            "consent-api",
            "memberships-api",
            "messaging-api",
            *stack.cfg.stores,
        ],
    )
    view = await load(
        "person", people, bearer, concurrency=args.concurrency, seconds=args.seconds, meter=meter
    )
    yardstick: Run = await load(
        "contact", direct, {IDENTITY_HEADER: signed}, concurrency=args.concurrency, seconds=5
    )
    print()
    print(HEADER)
    print(row(view))
    print(row(yardstick) + "   (contacts API directly, one contact: yardstick)")
    print()
    print(cpu_table([view]))
    print()
    p99 = view.p(99)
    print(f"{'figure':<28}{'value':>10}{'goal':>12}  met")
    print(f"{'person view p99 (ms)':<28}{p99:>10.1f}{'<= 100':>12}  {p99 <= GOAL_P99_MS}")
    print(f"{'person view p50 (ms)':<28}{view.p(50):>10.1f}{'-':>12}")
    return 0 if not view.errors else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--contacts", type=int, default=5)
    args = parser.parse_args()
    if args.concurrency < 1 or args.contacts < 1 or args.seconds <= 0:
        parser.error("--concurrency, --contacts and --seconds must be positive")
    services = ["gateway", "contacts", "consent", "memberships", "messaging"]
    # every service's view of the new contacts (and the gateway forwards the token of the
    # writes: a service whose consumer never ran would wait, then answer 503)
    with platform("people", services, services[1:]) as (stack, workers):
        return asyncio.run(bench(stack, args, workers))


if __name__ == "__main__":
    sys.exit(main())
