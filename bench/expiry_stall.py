"""Benchmark: what keeping documents with an expiry costs every other command of the store.

    uv run --frozen python bench/expiry_stall.py [--documents 200000] [--seconds 65]

It starts a store of its own (the local stack's SecantusDB, on disk, default settings:
its TTL monitor runs every 60 s), stores ``--documents`` documents that will not expire
for days (as 30 days of processed event ids do) and, for ``--seconds`` (long enough for
one TTL pass), reads one small document every 10 ms as any service's request would:

1. **TTL index** (what services declared before): ``expireAfterSeconds`` on the date.
2. **Kernel expiry** (now): a plain index on the date, swept by ``tribune_shared.expiry``
   every 5 s during the window (12x as often as the TTL monitor).

Printed: the reads' p50, p99 and slowest, and how many took over 100 ms. The baseline is
row 1, same run, same store.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import timedelta

from bench_env import on_own_store
from pymongo import ASCENDING
from tribune_shared.events import utcnow
from tribune_shared.expiry import expiry_task
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store


class BenchSettings(ServiceSettings):
    service_name = "expirybench"


async def fill(store: Store, collection: str, n: int) -> None:
    at = utcnow()
    for start in range(0, n, 1000):
        await store[collection].insert_many(
            [
                {"_id": f"g:{uuid.uuid4().hex}", "at": at, "type": "contact-created"}
                for _ in range(min(1000, n - start))
            ]
        )


async def probe(store: Store, seconds: float, sweeping: bool) -> list[float]:
    await store["probe"].replace_one({"_id": 1}, {"_id": 1}, upsert=True)
    stop = asyncio.Event()
    # the services' own sweep task, at the run's interval (BenchSettings)
    task = asyncio.create_task(expiry_task(store, store.settings)(stop)) if sweeping else None
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.perf_counter()
        await store["probe"].find_one({"_id": 1})
        latencies.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.01)
    stop.set()
    if task:
        await task
    return sorted(latencies)


def row(name: str, lat: list[float]) -> str:
    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * p))]

    slow = sum(1 for x in lat if x > 100)
    return f"{name:<34} {len(lat):>7} {q(0.5):>8.1f} {q(0.99):>8.1f} {lat[-1]:>9.0f} {slow:>9}"


async def run(args: argparse.Namespace, mongo_url: str) -> list[str]:
    settings = BenchSettings(
        mongo_url=mongo_url, database_prefix="bench_expiry_", expiry_interval_seconds=5
    )
    store = Store(settings)
    rows = []
    try:
        # 1. a TTL index (created directly: the kernel refuses to declare one)
        await store["ttl_kept"].create_index(
            [("at", ASCENDING)], expireAfterSeconds=int(timedelta(days=30).total_seconds())
        )
        await fill(store, "ttl_kept", args.documents)
        print(f"{args.documents} documents under a TTL index; probing {args.seconds:.0f} s")
        rows.append(row("TTL index (before)", await probe(store, args.seconds, False)))
        await store["ttl_kept"].drop()
        # 2. the kernel's expiry index and sweep
        spec = IndexSpec("kept", [("at", ASCENDING)], expire_after_seconds=30 * 86400)
        await store.ensure_indexes([spec])
        await fill(store, "kept", args.documents)
        print(f"{args.documents} documents under the kernel's expiry; probing")
        rows.append(row("kernel expiry sweep (now)", await probe(store, args.seconds, True)))
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=65.0)
    args = parser.parse_args()
    rows = on_own_store("bench-expiry", lambda mongo_url: run(args, mongo_url))
    print(
        f"{'a read every 10 ms, with':<34} {'reads':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>9} {'> 100 ms':>9}"
    )
    for line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
