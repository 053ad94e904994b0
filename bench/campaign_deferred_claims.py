"""Benchmark: claiming SMS that quiet hours deferred, once their time has come.

    uv run --frozen python bench/campaign_deferred_claims.py [--messages 20000]

An SMS campaign launched in the evening waits for its recipients' morning: its messages
stay queued, deferred to a handful of times (each zone's next allowed hour), thousands per
time. When those times come, the dispatchers claim them. This bench starts a store of its
own (the local stack's SecantusDB, on disk) with the message log's indexes, queues
``--messages`` messages of one campaign and claims them all, 200 at a time, as a
dispatcher does (``CampaignStore.claim``: read, then marked ``sending``):

1. **not deferred** (the reference): the messages of an email campaign.
2. **deferred, by one range of times** (the claim before 2026-12-05): the same number,
   deferred to four times that have come, each claim asking for "deferred to any time up
   to now" with a limit. The local store reads every document of the range before the
   limit applies, so each claim costs the whole remaining backlog.
3. **deferred, in windows of one time** (now, ``campaigns.domain.QueuePosition``).

Printed: messages claimed per second and the slowest claim of each row, and rows 2 and 3
against row 1 (same run, same store).
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime, timedelta

from bench_env import on_own_store
from messaging import store as messaging_store
from messaging.campaigns import store as campaign_store
from messaging.campaigns.domain import QueuePosition, message_id
from messaging.campaigns.store import CLAIMED_FIELDS, CampaignStore
from messaging.feedback import store as feedback_store
from messaging.store import MESSAGES
from tribune_shared.events import utcnow
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

CLAIM = 200  # the dispatcher's default claim (MESSAGING_CAMPAIGN_CLAIM_SIZE)
ZONES = 4  # the times the messages wait for (metropolitan France and three overseas zones)


class BenchSettings(ServiceSettings):
    service_name = "claimbench"


async def queue(store: Store, campaign_id: str, n: int, times: list[datetime | None]) -> None:
    created = utcnow()
    for start in range(0, n, 1000):
        await store[MESSAGES].insert_many(
            [
                {
                    "_id": message_id(campaign_id, f"c{i:08d}"),
                    "campaign_id": campaign_id,
                    "contact_id": f"c{i:08d}",
                    "federation_path": "/bench/",
                    "created_at": created,
                    "channel": "sms",
                    "purpose": "mobilisation",
                    "status": "queued",
                    "not_before": times[i % len(times)],
                    "claim": None,
                }
                for i in range(start, min(n, start + 1000))
            ]
        )


async def by_range(campaigns: CampaignStore, campaign_id: str, now: datetime) -> int:
    """One claim as it was: every time up to now in one query, with a limit."""
    due = {"campaign_id": campaign_id, "status": "queued", "not_before": {"$lte": now}}
    found = await campaigns.messages.find(due, CLAIMED_FIELDS).limit(CLAIM).to_list()
    if found:
        await campaigns.messages.update_many(
            {"_id": {"$in": [d["_id"] for d in found]}, "status": "queued"},
            {"$set": {"status": "sending", "claim": uuid.uuid4().hex, "claimed_at": now}},
        )
    return len(found)


async def claim_all(
    store: Store, times: list[datetime | None], n: int, ranged: bool
) -> tuple[float, float]:
    """Queue ``n`` messages deferred to ``times`` and claim them all: (messages/s, the
    slowest claim in seconds)."""
    campaigns = CampaignStore(store)
    campaign_id = uuid.uuid4().hex
    await queue(store, campaign_id, n, times)
    now = utcnow()
    positions: dict[str, QueuePosition] = {}
    claimed = 0
    slowest = 0.0
    started = time.perf_counter()
    while True:
        began = time.perf_counter()
        if ranged:
            got = await by_range(campaigns, campaign_id, now)
        else:
            got = len(
                await campaigns.claim(
                    [campaign_id],
                    now=now,
                    limit=CLAIM,
                    token=uuid.uuid4().hex,
                    positions=positions,
                )
            )
        slowest = max(slowest, time.perf_counter() - began)
        if not got:
            break
        claimed += got
    took = time.perf_counter() - started
    if claimed != n:
        raise SystemExit(f"claimed {claimed} of {n} messages")
    await store[MESSAGES].delete_many({"campaign_id": campaign_id})
    return n / took, slowest


async def run(args: argparse.Namespace, mongo_url: str) -> list[tuple[str, float, float]]:
    settings = BenchSettings(mongo_url=mongo_url, database_prefix="bench_claims_")
    store = Store(settings)
    try:
        specs = (*messaging_store.INDEXES, *campaign_store.INDEXES, *feedback_store.INDEXES)
        await store.ensure_indexes([s for s in specs if s.collection == MESSAGES])
        morning = utcnow().replace(microsecond=0) - timedelta(minutes=1)
        times: list[datetime | None] = [morning - timedelta(hours=h) for h in range(ZONES)]
        rows = []
        for name, deferred_to, ranged in (
            ("not deferred (reference)", [None], False),
            (f"deferred to {ZONES} times, one range", times, True),
            (f"deferred to {ZONES} times, windows", times, False),
        ):
            print(f"{name}: claiming {args.messages} ...", flush=True)
            rate, slowest = await claim_all(store, deferred_to, args.messages, ranged)
            rows.append((name, rate, slowest))
        return rows
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    rows = on_own_store("bench-claims", lambda mongo_url: run(args, mongo_url))
    reference = rows[0][1]
    print(f"\n{args.messages:,} messages of one campaign, claims of {CLAIM}")
    print(f"{'claimed':<34} {'msg/s':>8} {'slowest claim':>14} {'vs not deferred':>16}")
    for name, rate, slowest in rows:
        print(f"{name:<34} {rate:>8.0f} {slowest * 1000:>11.0f} ms {rate / reference:>15.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
