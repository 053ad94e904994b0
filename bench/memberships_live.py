"""Benchmark: how far memberships' live figures (faust, memberships.live) trail a burst
of payments, and faust's throughput.

    uv run python bench/memberships_live.py [--payments 10000] [--rate PAYMENTS_PER_S]

On a Kafka and a store of its own (free ports, a folder under .local/tests, stopped and
deleted at the end): the live app runs in this process (its real HTTP app and faust app);
a burst of ``--payments`` payment-received events (one federation, 1.00 EUR each, signed
as memberships signs them) is published as fast as the producer goes, or with ``--rate``
at that pace (a chunk every 10 ms: how payments reach Kafka from the webhook). A watcher reads the
federation's figures every millisecond: the k-th payment is counted once the federation's
dues reach k EUR, and its trail is that moment minus the moment it was published.

It prints the trail's p50/p99/max (goal: p99 <= 1 s), and faust's throughput (events/s
from the first publish to the last payment counted) beside the producer's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from datetime import UTC, datetime

from bench_env import isolate
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig

FEDERATION = ("bench", "/root/bench/")
CENTS = 100


def configure(cfg: StackConfig) -> None:
    isolate(cfg, TRIBUNE_WEBHOOK_SECRET=secrets.token_urlsafe(32))


def payments(count: int):
    from tribune_shared.events import new_envelope
    from tribune_shared.events.contracts import PaymentReceivedV1

    now = datetime.now(UTC)
    return [
        new_envelope(
            PaymentReceivedV1(
                payment_id=f"p{i:07d}",
                provider="bench",
                provider_payment_id=f"b{i}",
                contact_id=f"c{i}",
                amount_cents=CENTS,
                currency="EUR",
                method="card",
                purpose="dues",
                received_at=now,
            ),
            producer="memberships",
            federation_id=FEDERATION[0],
            federation_path=FEDERATION[1],
        )
        for i in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(count: int, rate: float | None = None) -> dict[str, float]:
    from memberships.live.main import create_app, live_settings
    from tribune_shared.bus import EventPublisher

    settings = live_settings()
    app = create_app(settings)
    envs = payments(count)
    async with app.router.lifespan_context(app):
        live = app.state.live
        # wait until faust owns its partitions (the figures are complete)
        while not live.ready:  # noqa: ASYNC110 - a flag faust sets, polled
            await asyncio.sleep(0.05)
        publisher = EventPublisher(settings, producer="memberships")
        await publisher.start()
        sent_at: list[float] = [0.0] * count
        counted_at: list[float] = [0.0] * count

        async def watch() -> None:
            seen = 0
            while seen < count:
                figures = live.figures.get(FEDERATION[0])
                done = (
                    figures.view(datetime.now(settings.zone).year)["dues_cents"] // CENTS
                    if figures
                    else 0
                )
                now = time.perf_counter()
                for k in range(seen, min(done, count)):
                    counted_at[k] = now
                seen = max(seen, done)
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        # as fast as the producer goes: chunks of 500; paced: a chunk every 10 ms, sent at
        # its planned time (payments arrive from the webhook a few at a time, not in 500s)
        batch = 500 if rate is None else max(1, round(rate / 100))
        for start in range(0, count, batch):
            chunk = envs[start : start + batch]
            if rate is not None:
                planned = started + start / rate
                if (wait := planned - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
            now = time.perf_counter()
            for k in range(start, start + len(chunk)):
                sent_at[k] = now
            await publisher.publish_many(chunk)
        published = time.perf_counter()
        await asyncio.wait_for(watcher, timeout=600)
        finished = max(counted_at)
        await publisher.stop()
        # the figures count payments, not their order: the k-th counted is compared with the
        # k-th published (the latest possible publish time of any payment counted by then)
        trail = [max(0.0, c - s) for s, c in zip(sent_at, counted_at, strict=True)]
    return {
        "payments": count,
        "publish_rate": count / (published - started),
        "faust_rate": count / (finished - started),
        "p50": percentile(trail, 0.50),
        "p99": percentile(trail, 0.99),
        "max": max(trail),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="payments per second (default: as fast as the producer goes)",
    )
    args = parser.parse_args()
    with RunningStack(StackConfig.for_tests(), platform=False) as stack:
        configure(stack.cfg)
        figures = asyncio.run(run(args.payments, args.rate))
    pace = "as fast as the producer goes" if args.rate is None else f"paced at {args.rate:,.0f}/s"
    print(f"live figures, burst of {figures['payments']:,} payments (one federation, {pace})")
    print(f"  producer rate       {figures['publish_rate']:>10,.0f} events/s")
    print(f"  faust throughput    {figures['faust_rate']:>10,.0f} events/s (publish to counted)")
    print(f"  trail p50           {figures['p50'] * 1000:>10,.0f} ms")
    print(f"  trail p99           {figures['p99'] * 1000:>10,.0f} ms   (goal <= 1000 ms)")
    print(f"  trail max           {figures['max'] * 1000:>10,.0f} ms")
    ok = figures["p99"] <= 1.0
    print(f"  goal p99 <= 1 s: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
