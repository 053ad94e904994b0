"""Benchmark: tax receipt numbering under concurrency (issue 11: 1,000 concurrent receipts
give 1,000 distinct, gap-free numbers).

    uv run python bench/receipt_numbering.py [--receipts 1000] [--workers 8] [--batch 25]

On a store of its own (free ports, a folder under .local/tests, stopped and deleted at the
end), ``--receipts`` accepted payments are receipted by ``--workers`` concurrent
consumers (each with its own store client, like separate worker processes), taking
payment-received batches of ``--batch`` events from one queue and running memberships'
real receipt handler in a transaction, as the kernel consumer does. One batch crashes
after taking its numbers (the transaction aborts; the batch is delivered again) and a few
batches are delivered twice. Then it checks the year's series: distinct, gap-free,
1..N, one receipt per payment, the counter at N.

It prints receipts/s and the transactions run again after a conflict on the counter,
then the same with batches of one receipt (every receipt a transaction: the contention
the batching avoids), next to a floor measured in the same run: the same receipt
documents inserted in the same batches without a counter.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench_env import isolate
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig


def configure(cfg: StackConfig) -> None:
    isolate(cfg, MEMBERSHIPS_WEBHOOK_SECRET=secrets.token_urlsafe(32))


def payments(count: int, tag: str):
    """Accepted payments and their payment-received events."""
    from tribune_shared.events import new_envelope
    from tribune_shared.events.contracts import PaymentReceivedV1

    paid_at = datetime.now(UTC) - timedelta(minutes=1)
    docs, envelopes = [], []
    for i in range(count):
        pid = f"{tag}-{i:06d}"
        contact = f"{tag}-c{i % 200}"
        docs.append(
            {
                "_id": pid,
                "provider": "bench",
                "provider_payment_id": pid,
                "contact_id": contact,
                "amount_cents": 1000,
                "currency": "EUR",
                "method": "card",
                "purpose": "donation",
                "status": "accepted",
                "paid_at": paid_at,
                "federation_id": "bench",
                "federation_path": "/bench/",
            }
        )
        envelopes.append(
            new_envelope(
                PaymentReceivedV1(
                    payment_id=pid,
                    provider="bench",
                    provider_payment_id=pid,
                    contact_id=contact,
                    amount_cents=1000,
                    currency="EUR",
                    method="card",
                    purpose="donation",
                    received_at=paid_at,
                ),
                producer="memberships",
                federation_id="bench",
                federation_path="/bench/",
            )
        )
    return docs, envelopes


class Conflicts:
    """Counts the transactions the store runner ran again (its log line per retry)."""

    def __init__(self) -> None:
        self.count = 0

    def attach(self) -> None:
        import tribune_shared.store as kernel_store

        original = kernel_store.is_transient
        counter = self

        def counted(exc: BaseException) -> bool:
            transient = original(exc)
            counter.count += int(transient)
            return transient

        kernel_store.is_transient = counted


async def issue_all(
    settings, store_cls, envelopes, *, workers: int, batch: int, crash: bool, seed: int
) -> tuple[float, int]:
    """Run the receipt handler over ``envelopes`` with ``workers`` concurrent consumers.
    Returns (seconds, crashes)."""
    from memberships.receipts.service import ReceiptsService

    batches = [envelopes[i : i + batch] for i in range(0, len(envelopes), batch)]
    rng = random.Random(seed)
    deliveries = batches + rng.sample(batches, min(5, len(batches)))  # redeliveries
    rng.shuffle(deliveries)
    crash_at = deliveries[len(deliveries) // 2] if crash else None
    queue: asyncio.Queue = asyncio.Queue()
    for b in deliveries:
        queue.put_nowait(b)
    crashed: list[int] = []

    async def worker() -> None:
        own = store_cls(settings)
        receipts = ReceiptsService(settings, own)
        try:
            while not queue.empty():
                items = queue.get_nowait()

                async def work(session, items=items) -> None:
                    await receipts.issue_for_payments(items, session)
                    if items is crash_at and not crashed:
                        crashed.append(1)
                        raise RuntimeError("worker died mid-batch")

                try:
                    await own.run_transaction(work, what="bench receipts")
                except RuntimeError:
                    queue.put_nowait(items)  # never committed: delivered again
        finally:
            await own.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started, len(crashed)


async def floor(settings, store_cls, count: int, batch: int, workers: int) -> float:
    """The same receipt documents, in the same batches, without a counter."""
    docs = [
        {"_id": uuid.uuid4().hex, "issue_key": f"floor-{i}", "series": "floor", "seq": i + 1}
        for i in range(count)
    ]
    chunks = [docs[i : i + batch] for i in range(0, count, batch)]
    queue: asyncio.Queue = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)

    async def worker() -> None:
        own = store_cls(settings)
        try:
            while not queue.empty():
                chunk = queue.get_nowait()

                async def work(session, chunk=chunk) -> None:
                    await own["receipts_floor"].insert_many(chunk, session=session)

                await own.run_transaction(work)
        finally:
            await own.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


async def check(store, series: str, count: int) -> dict[str, object]:
    from memberships.receipts.numbering import gaps
    from memberships.receipts.store import RECEIPT_COUNTERS, RECEIPTS

    docs = await store[RECEIPTS].find({"series": series}, {"seq": 1, "payment_id": 1}).to_list()
    seqs = sorted(d["seq"] for d in docs)
    counter = await store[RECEIPT_COUNTERS].find_one({"_id": series})
    return {
        "receipts": len(docs),
        "distinct": len(set(seqs)),
        "payments": len({d["payment_id"] for d in docs}),
        "gaps": len(gaps(seqs)),
        "range_ok": seqs == list(range(1, count + 1)),
        "counter": counter["last"] if counter else 0,
    }


async def run(args: argparse.Namespace) -> int:
    from memberships.receipts.store import INDEXES as RECEIPT_INDEXES
    from memberships.receipts.store import RECEIPT_COUNTERS, RECEIPTS
    from memberships.settings import MembershipsSettings
    from memberships.store import INDEXES, PAYMENTS
    from tribune_shared.outbox import OUTBOX
    from tribune_shared.store import Store

    settings = MembershipsSettings()
    conflicts = Conflicts()
    conflicts.attach()
    store = Store(settings)
    await store.ensure_indexes([*INDEXES, *RECEIPT_INDEXES])
    series = str(datetime.now(UTC).astimezone(settings.zone).year)
    results = []
    ok = True
    try:
        for label, batch, crash in (
            (f"batches of {args.batch}, one crash", args.batch, True),
            ("batches of 1 (no batching)", 1, False),
        ):
            for name in (RECEIPTS, RECEIPT_COUNTERS, PAYMENTS, OUTBOX):
                await store[name].delete_many({})
            docs, envelopes = payments(args.receipts, uuid.uuid4().hex[:6])
            await store[PAYMENTS].insert_many(docs)
            conflicts.count = 0
            seconds, crashes = await issue_all(
                settings,
                Store,
                envelopes,
                workers=args.workers,
                batch=batch,
                crash=crash,
                seed=7,
            )
            verdict = await check(store, series, args.receipts)
            ok = ok and verdict["range_ok"] and verdict["gaps"] == 0
            ok = ok and verdict["payments"] == args.receipts == verdict["counter"]
            results.append((label, seconds, conflicts.count, crashes, verdict))
        floor_seconds = await floor(settings, Store, args.receipts, args.batch, args.workers)
    finally:
        await store.close()

    print(
        f"{args.receipts} receipts, {args.workers} concurrent consumers "
        f"(+5 batches delivered twice)"
    )
    print(
        f"{'path':<36} {'receipts/s':>10} {'retried tx':>10} {'crashes':>8} "
        f"{'distinct':>8} {'gaps':>5} {'1..N':>5}"
    )
    for label, seconds, retried, crashes, verdict in results:
        print(
            f"{label:<36} {args.receipts / seconds:>10.0f} {retried:>10} {crashes:>8} "
            f"{verdict['distinct']:>8} {verdict['gaps']:>5} {verdict['range_ok']!s:>5}"
        )
    print(f"{'floor: same inserts, no counter':<36} {args.receipts / floor_seconds:>10.0f}")
    first = results[0][4]
    print(
        f"goal: {args.receipts} concurrent receipts -> {first['distinct']} distinct numbers, "
        f"{first['gaps']} gaps, counter at {first['counter']}: {'MET' if ok else 'NOT MET'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--receipts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=25)
    args = parser.parse_args()
    cfg = StackConfig.for_tests(
        name=f"bench-receipts-{uuid.uuid4().hex[:6]}", store_in_memory=False
    )
    with RunningStack(cfg, platform=False):
        configure(cfg)
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
