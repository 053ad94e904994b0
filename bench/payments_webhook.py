"""Benchmark: payments through the signed webhook until the member's standing is updated,
against the store's floor for the same writes.

    uv run python bench/payments_webhook.py [--payments 2000] [--concurrency 16]

On a store (and Kafka) of its own (free ports, a folder under .local/tests, stopped and
deleted at the end), with memberships' real API app in this process (its lifespan, called
over ASGI: no socket in the measure), in one run:

1. webhook: ``--payments`` dues payments, each a signed POST /api/v1/webhooks/payments of
   its own contact, ``--concurrency`` at a time; a 201 means the payment, the membership
   it activates, the contact's current membership and the events are committed (payments
   arriving at once share transactions: ``MEMBERSHIPS_WEBHOOK_BATCH_*``, the defaults
   unless set in the environment);
2. floor: the same documents (payments, memberships, outbox entries, the contacts'
   current membership) written raw, with ``insert_many`` / one ``bulk_write`` per
   collection in batches of 500: the fastest the store takes those writes. The same
   writes means the same collections: the floor's get the webhook's secondary indexes
   (copied from its database), which every payment keeps up (a unique key per provider
   payment, the treasurer's lists, the outbox's relay order...). It is measured bare too,
   to show what the indexes cost.

It prints payments/s for each and the ratio webhook / floor (goal >= 0.5), and
webhook / bare floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench_env import isolate
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig

SECRET = secrets.token_urlsafe(32)
PATH = "/root/bench/"
BATCH = 500


def configure(cfg: StackConfig) -> None:
    isolate(cfg, MEMBERSHIPS_WEBHOOK_SECRET=SECRET)


async def seed(settings, count: int) -> list[str]:
    """Contacts memberships knows (its contact directory), one per payment, and the
    federation tree."""
    from tribune_shared.contact_directory import ContactDirectory
    from tribune_shared.events import new_envelope
    from tribune_shared.events.contracts import (
        ContactCreatedV1,
        ContactState,
        FederationCreatedV1,
    )
    from tribune_shared.federations import FederationDirectory
    from tribune_shared.store import Store
    from tribune_shared.subscriptions import apply_steps

    store = Store(settings)
    ids = [f"c{i:06d}" for i in range(count)]
    try:
        for path in ("/root/", PATH):
            fid = path.strip("/").rsplit("/", 1)[-1]
            parent = "root" if path != "/root/" else None
            event = new_envelope(
                FederationCreatedV1(federation_id=fid, parent_id=parent, name=fid, path=path),
                producer="gateway",
                federation_id=fid,
                federation_path=path,
            )
            async with store.transaction() as session:
                await FederationDirectory(store).on_federation_event(event, session)
        steps = ContactDirectory(store).handlers()["contact-created"]
        envs = [
            new_envelope(
                ContactCreatedV1(contact_id=c, contact_version=1, contact=ContactState()),
                producer="contacts",
                federation_id="bench",
                federation_path=PATH,
            )
            for c in ids
        ]
        for start in range(0, count, BATCH):
            async with store.transaction() as session:
                await apply_steps((steps,), envs[start : start + BATCH], session)
    finally:
        await store.close()
    return ids


#: what each notice pays
WEBHOOK_CENTS = 3000


def notice(contact_id: str) -> bytes:
    return json.dumps(
        {
            "provider": "bench",
            "provider_payment_id": f"pi_{contact_id}",
            "contact_id": contact_id,
            "amount_cents": WEBHOOK_CENTS,
            "currency": "EUR",
            "method": "card",
            "purpose": "dues",
            "paid_at": datetime.now(UTC).isoformat(),
            "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
        }
    ).encode()


async def send_notices(
    client: Any, secret: str, ids: list[str], concurrency: int
) -> tuple[list[float], int]:
    """Each id's dues notice, signed with ``secret``, posted by ``concurrency`` clients at
    once: when each call answered 201 (``time.perf_counter``), and how many did not."""
    from tribune_shared.webhooks import signature_headers

    queue: asyncio.Queue[str] = asyncio.Queue()
    for c in ids:
        queue.put_nowait(c)
    accepted_at: list[float] = []
    failures = 0

    async def pay() -> None:
        nonlocal failures
        while not queue.empty():
            raw = notice(queue.get_nowait())
            headers = {"Content-Type": "application/json", **signature_headers(secret, raw)}
            r = await client.post("/api/v1/webhooks/payments", content=raw, headers=headers)
            if r.status_code == 201:
                accepted_at.append(time.perf_counter())
            else:
                failures += 1

    await asyncio.gather(*(pay() for _ in range(concurrency)))
    return accepted_at, failures


async def webhook_rate(settings, ids: list[str], concurrency: int) -> tuple[float, int]:
    import httpx
    from memberships.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            started = time.perf_counter()
            _, failures = await send_notices(client, SECRET, ids, concurrency)
            return len(ids) / (time.perf_counter() - started), failures


def batches() -> dict[str, float]:
    """How the webhook's shared transactions ended, from memberships' metric."""
    from prometheus_client import REGISTRY

    return {
        outcome: REGISTRY.get_sample_value(
            "tribune_payment_batches_total", {"service": "memberships", "outcome": outcome}
        )
        or 0.0
        for outcome in ("committed", "one_by_one")
    }


async def copy_indexes(settings, store, pairs: list[tuple[str, str]]) -> int:
    """The secondary indexes of the webhook's collections (as the service made them),
    created on the floor's: (service collection, floor collection). How many."""
    from tribune_shared.store import Store

    service = Store(settings)
    made = 0
    try:
        for source, target in pairs:
            async for index in await service.db[source].list_indexes():
                if index["name"] == "_id_":
                    continue
                options = {k: v for k, v in index.items() if k not in ("key", "v", "ns", "name")}
                await store[target].create_index(list(index["key"].items()), **options)
                made += 1
    finally:
        await service.close()
    return made


async def floor_rate(settings, ids: list[str], *, indexed: bool) -> tuple[float, int]:
    """The webhook's writes for the same payments, raw and batched: payments/s, and how
    many secondary indexes they kept up (``indexed``: the same as the webhook's
    collections, copied from them; otherwise bare collections)."""
    from memberships.store import CONTACTS, MEMBERSHIPS, PAYMENTS
    from pymongo import UpdateOne
    from tribune_shared.outbox import OUTBOX
    from tribune_shared.store import Store

    suffix = "fi" if indexed else "f"
    store = Store(
        settings.model_copy(update={"database_prefix": settings.database_prefix + suffix})
    )
    now = datetime.now(UTC)
    indexes = 0
    if indexed:
        indexes = await copy_indexes(
            settings,
            store,
            [
                (PAYMENTS, "payments"),
                (MEMBERSHIPS, "memberships"),
                (OUTBOX, "outbox"),
                (CONTACTS, "contacts_floor"),
            ],
        )

    def docs(contact_id: str) -> dict[str, Any]:
        pid, mid = uuid.uuid4().hex, uuid.uuid4().hex
        common = {"federation_id": "bench", "federation_path": PATH}
        return {
            "payment": {
                "_id": pid,
                "provider": "bench",
                "provider_payment_id": f"pi_{contact_id}",
                "contact_id": contact_id,
                "amount_cents": WEBHOOK_CENTS,
                "currency": "EUR",
                "method": "card",
                "purpose": "dues",
                "status": "accepted",
                "paid_at": now,
                "recorded_at": now,
                "membership_id": mid,
                **common,
            },
            "membership": {
                "_id": mid,
                "contact_id": contact_id,
                "plan": "annual",
                "status": "active",
                "starts_on": now.date().isoformat(),
                "ends_on": f"{now.year}-12-31",
                "grace_days": 90,
                "history": [{"status": "active", "at": now, "payment_id": pid}],
                **common,
            },
            "outbox": [
                {"_id": uuid.uuid4().hex, "envelope": {"type": t, "key": k}, "created_at": now}
                for t, k in (("payment-received", pid), ("membership-activated", mid))
            ],
        }

    try:
        await store["contacts_floor"].insert_many([{"_id": c} for c in ids])
        prepared = [docs(c) for c in ids]
        started = time.perf_counter()
        for start in range(0, len(ids), BATCH):
            chunk = prepared[start : start + BATCH]

            async def work(session, chunk=chunk) -> None:
                await store["payments"].insert_many([d["payment"] for d in chunk], session=session)
                await store["memberships"].insert_many(
                    [d["membership"] for d in chunk], session=session
                )
                await store["outbox"].insert_many(
                    [e for d in chunk for e in d["outbox"]], session=session
                )
                await store["contacts_floor"].bulk_write(
                    [
                        UpdateOne(
                            {"_id": d["payment"]["contact_id"]},
                            {"$set": {"current_membership_id": d["membership"]["_id"]}},
                        )
                        for d in chunk
                    ],
                    ordered=False,
                    session=session,
                )

            await store.run_transaction(work)
        return len(ids) / (time.perf_counter() - started), indexes
    finally:
        await store.client.drop_database(store.db.name)
        await store.close()


async def run(count: int, concurrency: int) -> dict[str, float]:
    from memberships.settings import MembershipsSettings

    settings = MembershipsSettings()
    ids = await seed(settings, count)
    webhook, failures = await webhook_rate(settings, ids, concurrency)
    floor, _ = await floor_rate(settings, ids, indexed=False)
    indexed, indexes = await floor_rate(settings, ids, indexed=True)
    return {
        "webhook": webhook,
        "floor": floor,
        "indexed": indexed,
        "indexes": indexes,
        "failures": failures,
        **batches(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with RunningStack(StackConfig.for_tests(), platform=False) as stack:
        configure(stack.cfg)
        out = asyncio.run(run(args.payments, args.concurrency))
    ratio = out["webhook"] / out["indexed"]
    print(f"payments through the webhook to standing updated ({args.payments:,} payments)")
    print(f"  webhook (x{args.concurrency})      {out['webhook']:>10,.0f} payments/s")
    print(
        f"  store floor (batched) {out['indexed']:>10,.0f} payments/s   the same collections "
        f"with the webhook's {out['indexes']:.0f} secondary indexes"
    )
    print(f"  bare floor            {out['floor']:>10,.0f} payments/s   no secondary index")
    print(f"  ratio webhook/floor   {ratio:>10.2f}   (goal >= 0.5)")
    print(f"  ratio webhook/bare    {out['webhook'] / out['floor']:>10.2f}")
    print(
        f"  shared transactions   {out['committed']:>10,.0f} committed, "
        f"{out['one_by_one']:,.0f} recorded one by one "
        f"(mean {args.payments / max(out['committed'], 1):,.1f} payments each)"
    )
    if out["failures"]:
        print(f"  {out['failures']:.0f} webhook calls did not answer 201")
    return 0


if __name__ == "__main__":
    sys.exit(main())
