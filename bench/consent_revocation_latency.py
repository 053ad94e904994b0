"""How long after a revocation is accepted does messaging refuse the person?

Starts its own isolated platform (every service API and worker as real processes on the
local Kafka and store, unique topic and database prefixes: tribune_devstack's
RunningStack), creates contacts, grants each an email consent and waits until messaging's
own view lets them be reached. Then, one at a time, it revokes a consent through the
consent API and polls messaging's reachability view (GET /api/v1/messages/reachability/
{id}, which reads messaging's projection only) until it refuses the person.

Latency = from the moment the consent API's 200 arrived (the revocation is committed, its
event waits in the outbox) to the arrival of the first reachability answer that refuses:
an upper bound; the lower bound (the refusing probe was sent) is printed too.

Path measured: consent's transaction -> outbox relay (polls every
TRIBUNE_OUTBOX_POLL_INTERVAL_SECONDS, or is woken by a change stream on the outbox with
TRIBUNE_OUTBOX_WAKE_ON_INSERT) -> Kafka (acks=all) -> messaging's consumer (fetch
long-poll) -> projection transaction -> the view.

    uv run python bench/consent_revocation_latency.py [--revocations 1000]
        [--compare VAR=VALUE ...]

It starts a Kafka and a store of its own (free ports, a folder under .local/tests, stopped
and deleted at the end), so that other stacks on the machine do not weigh on the figures
and the dev stack's data is never touched. A first round runs with the
settings as configured (consent's relay woken by a change stream on its outbox, the
default); ``--compare`` (default ``CONSENT_OUTBOX_WAKE_ON_INSERT=false``: polling every
50 ms only) restarts the consent worker with other settings for a second round, and the
ratio of the two is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig
from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity

FEDERATION = "/bench/"
GRANT = {"channel": "email", "purpose": "news", "source": "bench"}
WARM_UP = 20


@dataclass
class Headers:
    """A secretary's signed identity, renewed before it expires."""

    secret: str
    identity: Identity
    _value: str = ""
    _at: float = 0.0

    def __call__(self) -> dict[str, str]:
        if time.monotonic() - self._at > 60:
            self._value = sign_identity(self.identity, self.secret, 120)
            self._at = time.monotonic()
        return {IDENTITY_HEADER: self._value}


async def retry(call, accept, timeout: float = 120.0, pause: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        r = await call()
        if accept(r):
            return r
        if time.monotonic() > deadline:
            raise RuntimeError(f"not accepted within {timeout}s: {r.status_code} {r.text[:300]}")
        await asyncio.sleep(pause)


async def prepare(stack: RunningStack, headers: Headers, count: int) -> list[str]:
    """``count`` contacts, each consenting and reachable in messaging's view (set up at a
    moderate pace: the machine also runs Kafka, the store and ten processes)."""
    contacts_url, consent_url, messaging_url = (
        stack.url("contacts"),
        stack.url("consent"),
        stack.url("messaging"),
    )
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:

        async def create(i: int) -> str:
            async with sem:
                r = await http.post(
                    f"{contacts_url}/api/v1/contacts",
                    json={
                        "given_name": "Bench",
                        "family_name": f"Person{i}",
                        "email": f"bench.{uuid.uuid4().hex[:12]}@example.org",
                        "origin": {"kind": "web_form", "detail": "bench"},
                    },
                    headers=headers(),
                )
                r.raise_for_status()
                return r.json()["id"]

        async def grant(cid: str) -> None:
            async with sem:  # 404 until consent's projection has the contact
                await retry(
                    lambda: http.post(
                        f"{consent_url}/api/v1/consents/{cid}/grant", json=GRANT, headers=headers()
                    ),
                    lambda r: r.status_code == 200,
                )

        async def reachable(cid: str) -> None:
            async with sem:
                await retry(
                    lambda: http.get(
                        f"{messaging_url}/api/v1/messages/reachability/{cid}",
                        params={"purpose": GRANT["purpose"]},
                        headers=headers(),
                    ),
                    lambda r: r.status_code == 200 and r.json()["reachable"],
                )

        ids = list(await asyncio.gather(*(create(i) for i in range(count))))
        await asyncio.gather(*(grant(c) for c in ids))
        await asyncio.gather(*(reachable(c) for c in ids))
    return ids


async def measure(
    stack: RunningStack, headers: Headers, ids: list[str]
) -> list[tuple[float, float]]:
    """(lower, upper) latency in seconds of each revocation, one at a time."""
    consent_url, messaging_url = stack.url("consent"), stack.url("messaging")
    out: list[tuple[float, float]] = []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        for cid in ids:
            r = await http.post(
                f"{consent_url}/api/v1/consents/{cid}/revoke", json=GRANT, headers=headers()
            )
            accepted = time.perf_counter()
            if r.status_code != 200 or not r.json().get("changed", True):
                raise RuntimeError(f"revocation refused: {r.status_code} {r.text[:300]}")
            while True:
                sent = time.perf_counter()
                probe = await http.get(
                    f"{messaging_url}/api/v1/messages/reachability/{cid}",
                    params={"purpose": GRANT["purpose"]},
                    headers=headers(),
                )
                answered = time.perf_counter()
                if probe.status_code == 200 and not probe.json()["reachable"]:
                    out.append((max(0.0, sent - accepted), answered - accepted))
                    break
                if answered - accepted > 30:
                    raise RuntimeError(f"messaging still reaches {cid} 30 s after revocation")
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def report(label: str, samples: list[tuple[float, float]]) -> dict[str, float]:
    upper = [u * 1000 for _, u in samples]
    lower = [lo * 1000 for lo, _ in samples]
    figures = {
        "p50": percentile(upper, 50),
        "p90": percentile(upper, 90),
        "p99": percentile(upper, 99),
        "max": max(upper),
        "mean": statistics.fmean(upper),
        "p50_lower": percentile(lower, 50),
        "p99_lower": percentile(lower, 99),
    }
    print(
        f"{label}: {len(samples)} revocations; latency ms (upper bound): "
        f"p50 {figures['p50']:.1f}  p90 {figures['p90']:.1f}  p99 {figures['p99']:.1f}  "
        f"max {figures['max']:.1f}  mean {figures['mean']:.1f}  "
        f"(lower bound p50 {figures['p50_lower']:.1f}, p99 {figures['p99_lower']:.1f})",
        flush=True,
    )
    return figures


def breakdown(stack: RunningStack, ids: list[str]) -> None:
    """Where the time went, from the services' own records (same clock): consent's commit
    -> published by its relay (outbox) -> handled by messaging's consumer."""
    from pymongo import MongoClient

    cfg = stack.cfg
    client = MongoClient(cfg.store_url("consent"), tz_aware=True)
    other = MongoClient(cfg.store_url("messaging"), tz_aware=True)
    try:
        consent = client[f"{cfg.database_prefix}consent"]
        messaging = other[f"{cfg.database_prefix}messaging"]
        rows = consent["outbox"].find(
            {"topic": "consent-revoked", "envelope.key": {"$in": ids}},
            {"created_at": 1, "published_at": 1},
        )
        relay, consume = [], []
        group = f"{cfg.topic_prefix}messaging"
        for row in rows:
            handled = messaging["processed_events"].find_one({"_id": f"{group}:{row['_id']}"})
            if row.get("published_at") is None or handled is None:
                continue
            relay.append((row["published_at"] - row["created_at"]).total_seconds() * 1000)
            consume.append((handled["at"] - row["published_at"]).total_seconds() * 1000)
    finally:
        client.close()
        other.close()
    if relay:
        print(
            f"  breakdown ms: commit -> published (relay) p50 {percentile(relay, 50):.1f} "
            f"p99 {percentile(relay, 99):.1f}; published -> handled by messaging p50 "
            f"{percentile(consume, 50):.1f} p99 {percentile(consume, 99):.1f}",
            flush=True,
        )


async def run(stack: RunningStack, args: argparse.Namespace) -> int:
    secret = stack.env["TRIBUNE_IDENTITY_SECRET"]
    identity = Identity(
        user_id="bench",
        email="bench@tribune.test",
        role=Role.secretary,
        federation_id="bench",
        federation_path=FEDERATION,
    )
    headers = Headers(secret, identity)
    rounds: list[tuple[str, dict[str, str]]] = [("as configured", {})]
    if args.compare:
        changes = dict(a.split("=", 1) for a in args.compare)
        rounds.append((" ".join(args.compare), changes))
    results = {}
    for label, changes in rounds:
        if changes:  # the consent worker (its relay publishes the revocations) again
            os.environ.update(changes)
            await asyncio.to_thread(stack.restart, "consent-worker")
        t = time.perf_counter()
        ids = await prepare(stack, headers, args.revocations + WARM_UP)
        print(f"{len(ids)} consenting contacts ready in {time.perf_counter() - t:.0f}s", flush=True)
        await measure(stack, headers, ids[:WARM_UP])  # warm-up, not counted
        results[label] = report(label, await measure(stack, headers, ids[WARM_UP:]))
        breakdown(stack, ids[WARM_UP:])
    if len(results) == 2:
        (a, fa), (b, fb) = results.items()
        p50, p99 = fb["p50"] / fa["p50"], fb["p99"] / fa["p99"]
        print(f"ratio ({b} / {a}): p50 {p50:.2f}, p99 {p99:.2f}")
    goal = results[rounds[0][0]]["p99"]
    print(f"goal p99 <= 100 ms: {'met' if goal <= 100 else 'NOT met'} ({goal:.1f} ms)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revocations", type=int, default=1000)
    parser.add_argument(
        "--compare",
        nargs="*",
        metavar="VAR=VALUE",
        default=["CONSENT_OUTBOX_WAKE_ON_INSERT=false"],
        help="a second round with these settings for the consent worker (restarted); "
        "the ratio of the two rounds is printed. Default: consent's relay polling only "
        "(no change stream); none: one round only",
    )
    args = parser.parse_args()
    if args.revocations < 1:
        parser.error("--revocations must be at least 1")
    if any("=" not in a for a in args.compare):
        parser.error("--compare takes VAR=VALUE settings")
    # SIGTERM (a timeout) stops the processes this run started, like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The store on disk, as the dev stack runs it, since that is what the README's figures measure.
    cfg = StackConfig.for_tests(name=f"bench-{uuid.uuid4().hex[:6]}", store_in_memory=False)
    print(f"starting an isolated platform ({cfg.name}) on its own Kafka and store ...", flush=True)
    started = time.perf_counter()
    with RunningStack(cfg, environment="test") as stack:
        print(f"platform ready in {time.perf_counter() - started:.0f}s", flush=True)
        return asyncio.run(run(stack, args))


if __name__ == "__main__":
    sys.exit(main())
