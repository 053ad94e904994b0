"""Benchmark: a projection consumer's throughput against the store's batched floor.

    uv run python bench/consumer_throughput.py [--events 20000] [--sample 2000]
        [--trickle-rate 150] [--trickle-events 6000]

On a Kafka and a store of its own (free ports, a folder under .local/tests, stopped and
deleted at the end), with messaging's real contact projection (contact-created events:
check the processed ids, record them, upsert the projection), in one run:

1. floor: the store doing exactly the consumer's writes for the same events, no Kafka, in
   transactions of 500 events (bulk reads and writes): the fastest the consumer can be;
2. consumer: messaging's real worker consumers reading the events from Kafka (batched,
   partition-parallel), from the first poll until every event is applied;
3. one by one: the same consumer with batches of one event and one partition at a time
   (how the consumers worked before), on a sample;
4. store, one per transaction: the floor's work with one transaction per event, on a sample;
5. trickle: the consumer fed while the events are published, ``--trickle-rate`` events/s
   (an import publishes a batch at a time, spread over every partition, so a poll brings a
   few events per partition): how many transactions it took, events per transaction, and
   how far behind the last publish it finished. With 0, skipped.

It prints events/s for each and the ratio consumer / floor (goal >= 0.5; it was ~0.03).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from bench_env import isolate
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig


def configure(cfg: StackConfig) -> None:
    isolate(cfg)


def events(count: int, tag: str):
    from tribune_shared.events import new_envelope
    from tribune_shared.events.contracts import ContactCreatedV1, ContactState

    return [
        new_envelope(
            ContactCreatedV1(
                contact_id=f"{tag}-{i:07d}",
                contact_version=1,
                contact=ContactState(
                    given_name="Marianne", family_name=f"Dupont{i}", email=f"m{i}@example.fr"
                ),
            ),
            producer="contacts",  # consumers accept contact events from their owner only
            federation_id="bench",
            federation_path="/root/bench/",
        )
        for i in range(count)
    ]


def settings_for(label: str, **overrides):
    from messaging.settings import MessagingSettings

    base = MessagingSettings()
    return base.model_copy(
        update={"database_prefix": f"{base.database_prefix}{label}_", **overrides}
    )


async def store_floor(envs, per_transaction: int) -> float:
    """The consumer's store work for ``envs`` without Kafka: events/s."""
    from messaging.handlers import contact_state
    from messaging.store import MessagingStore
    from tribune_shared.bus import ProcessedEvents
    from tribune_shared.store import Store

    settings = settings_for(f"floor{per_transaction}")
    store = Store(settings)
    projection = MessagingStore(store)
    processed = ProcessedEvents(store, "messaging")
    try:
        started = time.perf_counter()
        for start in range(0, len(envs), per_transaction):
            chunk = envs[start : start + per_transaction]

            async def work(session, chunk=chunk):
                fresh = await processed.claim(chunk, session)
                await projection.project_contacts([contact_state(e) for e in fresh], session)

            await store.run_transaction(work)
        return len(envs) / (time.perf_counter() - started)
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()


async def publish(settings, envs) -> None:
    from tribune_shared.bus import EventPublisher, ensure_topics

    await ensure_topics(settings)  # the consumer subscribes to all of its lane's topics
    publisher = EventPublisher(settings, producer="contacts")  # standing in for contacts
    await publisher.start()
    try:
        for start in range(0, len(envs), 2000):
            await publisher.publish_many(envs[start : start + 2000])
    finally:
        await publisher.stop()


async def consumer_rate(envs, label: str, **overrides) -> float:
    """messaging's real bulk-lane consumer on ``envs`` (already on Kafka): events/s."""
    from messaging.store import CONTACTS
    from messaging.worker import build_worker
    from prometheus_client import REGISTRY
    from tribune_shared.events.contracts import Lane

    settings = settings_for(label, **overrides)
    worker = build_worker(settings)
    [consumer] = [c for c in worker.consumers if c.lane is Lane.bulk]
    store = worker.store
    # Progress is read from the consumer's own counter of applied events (in this
    # process), not from the store: polling the store (even count_documents, a scan of
    # the growing projection every 100 ms) took about a quarter of the store's time from
    # the consumer it measures. The projection is counted once at the end, as the check.
    labels = {"service": settings.service_name, "topic": "contact-created", "outcome": "ok"}

    def applied() -> float:
        return REGISTRY.get_sample_value("tribune_events_handled_total", labels) or 0.0

    before = applied()
    try:
        await consumer.start()
        started = time.perf_counter()
        task = asyncio.create_task(consumer.run())
        while applied() - before < len(envs):
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        consumer.request_stop()
        await task
        stored = await store[CONTACTS].count_documents({})
        if stored != len(envs):
            raise RuntimeError(f"{stored} contacts projected for {len(envs)} events")
        return len(envs) / elapsed
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()


async def trickle(envs, rate: float) -> dict[str, float]:
    """messaging's bulk consumer applying ``envs`` while they are published at ``rate``/s."""
    from messaging.worker import build_worker
    from prometheus_client import REGISTRY
    from tribune_shared.bus import EventPublisher, ensure_topics
    from tribune_shared.events.contracts import Lane

    settings = settings_for("trickle")
    await ensure_topics(settings)
    publisher = EventPublisher(settings, producer="contacts")
    worker = build_worker(settings)
    [consumer] = [c for c in worker.consumers if c.lane is Lane.bulk]
    labels = {"service": settings.service_name, "topic": "contact-created"}

    def applied() -> float:
        ok = labels | {"outcome": "ok"}
        return REGISTRY.get_sample_value("tribune_events_handled_total", ok) or 0.0

    def transactions() -> float:
        return REGISTRY.get_sample_value("tribune_consumer_batch_events_count", labels) or 0.0

    before, batches_before = applied(), transactions()
    await publisher.start()
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        started = time.perf_counter()
        chunk = max(1, int(rate / 10))  # a chunk every 100 ms
        for first in range(0, len(envs), chunk):
            await publisher.publish_many(envs[first : first + chunk])
            due = started + (first + chunk) / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        published = time.perf_counter()
        while applied() - before < len(envs):
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        done = time.perf_counter()
    finally:
        consumer.request_stop()
        await task
        await publisher.stop()
        await worker.store.client.drop_database(settings.database_name)
        await worker.store.close()
    count = transactions() - batches_before
    return {
        "trickle_transactions": count,
        "trickle_per_transaction": len(envs) / max(1.0, count),
        "trickle_lag_seconds": done - published,
    }


async def run(args: argparse.Namespace) -> dict[str, float]:
    bulk = events(args.events, "bulk")
    sample = events(args.sample, "sample")
    figures: dict[str, float] = {}
    figures["floor"] = await store_floor(bulk, 500)
    print(f"  floor measured: {figures['floor']:.0f} events/s", flush=True)
    figures["store_single"] = await store_floor(sample, 1)
    print(f"  one per transaction measured: {figures['store_single']:.0f} events/s", flush=True)
    # each consumer reads its own copy of the topics (its own prefix), from the beginning
    prefix = os.environ["TRIBUNE_TOPIC_PREFIX"]
    os.environ["TRIBUNE_TOPIC_PREFIX"] = prefix + "c."
    await publish(settings_for("pub"), bulk)
    figures["consumer"] = await consumer_rate(bulk, "consumer")
    print(f"  consumer measured: {figures['consumer']:.0f} events/s", flush=True)
    os.environ["TRIBUNE_TOPIC_PREFIX"] = prefix + "s."
    await publish(settings_for("pub"), sample)
    figures["consumer_single"] = await consumer_rate(
        sample, "single", consumer_batch_max_records=1, consumer_partition_concurrency=1
    )
    if args.trickle_rate > 0:
        os.environ["TRIBUNE_TOPIC_PREFIX"] = prefix + "t."
        figures |= await trickle(events(args.trickle_events, "trickle"), args.trickle_rate)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=2_000)
    parser.add_argument("--trickle-rate", type=float, default=150.0)
    parser.add_argument("--trickle-events", type=int, default=6_000)
    args = parser.parse_args()
    cfg = StackConfig.for_tests(
        name=f"bench-consumer-{uuid.uuid4().hex[:6]}", store_in_memory=False
    )
    with RunningStack(cfg, platform=False):
        configure(cfg)
        figures = asyncio.run(run(args))
    ratio = figures["consumer"] / figures["floor"]
    old_ratio = figures["consumer_single"] / figures["floor"]
    print(f"events: {args.events} (one-by-one samples: {args.sample})")
    print(f"{'path':<48} {'events/s':>10}")
    print(f"{'store floor: 500 events per transaction':<48} {figures['floor']:>10.0f}")
    print(f"{'store: one event per transaction':<48} {figures['store_single']:>10.0f}")
    print(f"{'consumer: batched, partitions in parallel':<48} {figures['consumer']:>10.0f}")
    print(
        f"{'consumer: one event per transaction (before)':<48} {figures['consumer_single']:>10.0f}"
    )
    print(
        f"consumer vs floor: {ratio:.2f}x (goal >= 0.5; before: ~0.03, "
        f"one-by-one in this run: {old_ratio:.2f}x)"
    )
    if args.trickle_rate > 0:
        print(
            f"trickle: {args.trickle_events} events published at {args.trickle_rate:g}/s: "
            f"{figures['trickle_transactions']:.0f} transactions "
            f"({figures['trickle_per_transaction']:.1f} events each), the last applied "
            f"{figures['trickle_lag_seconds']:.1f} s after the last publish"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
