"""Benchmark: a messy 100,000-row CSV imported end to end, next to a raw insert_many.

    uv run python bench/contacts_import.py [--rows 100000] [--encoding utf-8-sig|cp1252]

What is measured, in one run, on a store and a Kafka of its own (free ports, a folder under
.local/tests, stopped and deleted at the end):

1. import: the contacts API and worker run as real processes (an isolated database and
   topic prefix); the file is uploaded through the API, the worker imports it in batches
   (rows validated and normalised, duplicates merged, each batch's contacts, events and
   progress in one transaction) and its relay publishes the events to Kafka. The clock
   runs from the upload until the job is done AND every event is on Kafka (the import
   outbox is empty and the topics' end offsets hold every event).
2. raw: the very contact documents the import stored are insert_many'd, in batches of the
   same size, into a fresh collection of the same store with the same indexes.

It prints both rates (rows per second) and their ratio (import / raw; the goal is 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from contacts.messy_csv import write_messy_csv
from pymongo import IndexModel
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig
from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(infra: StackConfig, unique: str) -> dict[str, str]:
    return {
        **os.environ,
        "TRIBUNE_ENVIRONMENT": "test",
        "TRIBUNE_KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "TRIBUNE_MONGO_URL": infra.mongo_url,
        "TRIBUNE_TOPIC_PREFIX": f"bench{unique}.",
        "TRIBUNE_DATABASE_PREFIX": f"bench{unique}_",
        "TRIBUNE_IDENTITY_SECRET": secrets.token_urlsafe(32),
        "TRIBUNE_SUPPRESSION_SALT": secrets.token_urlsafe(32),
        "TRIBUNE_LOG_LEVEL": "WARNING",
        "CONTACTS_HTTP_PORT": str(free_port()),
        "CONTACTS_WORKER_PORT": str(free_port()),
    }


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready within {timeout}s")


async def end_offsets(bootstrap: str, topics: list[str]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        offsets = await consumer.end_offsets(partitions) if partitions else {}
        return sum(offsets.values())
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def bench_import(env: dict[str, str], path: Path, rows: int) -> dict[str, float]:
    from contacts.settings import ContactsSettings

    os.environ.update({k: v for k, v in env.items() if k.startswith(("TRIBUNE_", "CONTACTS_"))})
    settings = ContactsSettings()
    api_url = f"http://127.0.0.1:{env['CONTACTS_HTTP_PORT']}"
    worker_url = f"http://127.0.0.1:{env['CONTACTS_WORKER_PORT']}"
    logs = Path(tempfile.mkdtemp(prefix="bench-contacts-"))
    procs = []
    try:
        for module, url in (("contacts.worker", worker_url), ("contacts.main", api_url)):
            log = open(logs / f"{module}.log", "w")
            proc = subprocess.Popen(
                [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            procs.append((proc, log))
            wait_ready(url, proc)
        # Signed with the kernel itself, not the tests' helpers: a benchmark runs as a plain
        # script (`python bench/x.py`), where tests/ is not importable.
        identity = Identity(
            user_id=uuid.uuid4().hex,
            email="bench@tribune.test",
            role=Role.secretary,
            federation_id="bench",
            federation_path="/root/bench/",
        )

        def headers() -> dict[str, str]:  # signed identities live two minutes
            return {IDENTITY_HEADER: sign_identity(identity, settings.identity_secret)}

        params = {"origin_kind": "electoral_list", "origin_detail": "benchmark"}
        started = time.perf_counter()
        with open(path, "rb") as handle, httpx.Client(timeout=600) as client:
            r = client.post(
                f"{api_url}/api/v1/contacts/imports",
                content=handle,
                params=params,
                headers={**headers(), "Content-Type": "text/csv"},
            )
            r.raise_for_status()
            job = r.json()
            uploaded = time.perf_counter()
            last = None
            while True:
                r = client.get(f"{api_url}/api/v1/contacts/imports/{job['id']}", headers=headers())
                r.raise_for_status()
                job = r.json()
                done = job["progress"]["rows_done"]
                if done != last and sys.stderr.isatty():
                    print(
                        f"\r  imported {done}/{job['progress']['total']} rows "
                        f"({job['progress']['rate_per_second']} rows/s)",
                        end="",
                        file=sys.stderr,
                    )
                    last = done
                if job["status"] in ("done", "failed", "cancelled"):
                    break
                time.sleep(0.5)
        if job["status"] != "done":
            raise RuntimeError(f"import {job['status']}: {job.get('error')}")
        imported = time.perf_counter()
        events = asyncio.run(_wait_published(settings, job))
        published = time.perf_counter()
        print(file=sys.stderr)
        return {
            "rows": job["progress"]["rows_done"],
            "stored": job["counts"]["created"],
            "events": events,
            "upload_s": uploaded - started,
            "import_s": imported - started,
            "total_s": published - started,
            "counts": job["counts"],
        }
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


async def _wait_published(settings, job) -> int:
    """Until the worker's relay has put every event on Kafka; returns how many."""
    from tribune_shared.outbox import OUTBOX
    from tribune_shared.store import Store

    store = Store(settings)
    try:
        while True:
            if not await store[OUTBOX].count_documents({"published_at": None}):
                break
            await asyncio.sleep(0.2)
    finally:
        await store.close()
    topics = [settings.topic("contact-created"), settings.topic("contact-updated")]
    return await end_offsets(settings.kafka_bootstrap_servers, topics)


async def bench_raw(settings, sample: int) -> dict[str, dict[str, float]]:
    """The same documents insert_many'd, in batches of the import's size, into fresh
    collections of the same store with the same indexes: each batch in a transaction
    (every document), and plainly (the first ``sample`` documents, 0 = all)."""
    from contacts.store import CONTACTS, INDEXES
    from tribune_shared.store import Store

    store = Store(settings)
    try:
        docs = await store[CONTACTS].find({}).to_list()
        models = [
            IndexModel(list(s.keys), **s.options) for s in INDEXES if s.collection == CONTACTS
        ]
        size = settings.import_batch_size
        out: dict[str, dict[str, float]] = {}
        for name, chosen in (("transaction", docs), ("plain", docs[: sample or len(docs)])):
            raw = store[f"bench_raw_{name}"]
            await raw.create_indexes(models)
            started = time.perf_counter()
            for i in range(0, len(chosen), size):
                if name == "transaction":
                    async with store.transaction() as session:
                        await raw.insert_many(chosen[i : i + size], ordered=True, session=session)
                else:
                    await raw.insert_many(chosen[i : i + size], ordered=True)
            out[name] = {"rows": len(chosen), "total_s": time.perf_counter() - started}
        return out
    finally:
        for name in (settings.database_name, settings.vault_database_name):
            await store.client.drop_database(name)
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--encoding", default="utf-8-sig", choices=["utf-8-sig", "cp1252"])
    parser.add_argument(
        "--raw-sample", type=int, default=0, help="documents of the plain raw run (0: all)"
    )
    args = parser.parse_args()

    unique = uuid.uuid4().hex[:8]
    # Its own Kafka and store, deleted at the end; the store on disk, as the dev stack runs
    # it, since that is what the figures in the README measure.
    infra = StackConfig.for_tests(name=f"bench-import-{unique}", store_in_memory=False)
    handle = RunningStack(infra, platform=False).start()
    env = environment(infra, unique)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "contacts.csv"
            expected = write_messy_csv(path, args.rows, encoding=args.encoding, delimiter=";")
            size = path.stat().st_size
            print(
                f"file: {args.rows} rows, {size / 1e6:.1f} MB, {args.encoding}, semicolons; "
                f"{expected.merged} duplicates, {expected.rejected} invalid, "
                f"{expected.quoted_newlines} quoted line breaks, {expected.empty_lines} empty lines"
            )
            imported = bench_import(env, path, args.rows)
        from contacts.settings import ContactsSettings

        raw = asyncio.run(bench_raw(ContactsSettings(), args.raw_sample))
    finally:
        handle.stop()
    counts = imported["counts"]
    import_rate = imported["stored"] / imported["total_s"]
    rows_rate = imported["rows"] / imported["total_s"]
    print(
        f"import: {imported['rows']} rows -> {counts['created']} contacts stored "
        f"({counts['merged']} merged, {counts['rejected']} rejected), {imported['events']} "
        f"events on Kafka in {imported['total_s']:.1f} s (upload {imported['upload_s']:.1f} s, "
        f"job done at {imported['import_s']:.1f} s)"
    )
    print(
        f"import end to end            : {import_rate:8.0f} contacts stored+published/s "
        f"({rows_rate:.0f} rows/s)"
    )
    for name, label in (
        ("plain", "raw insert_many"),
        ("transaction", "raw insert_many, 1 txn/batch"),
    ):
        run = raw[name]
        rate = run["rows"] / run["total_s"]
        print(
            f"{label:29s}: {rate:8.0f} contacts/s ({run['rows']} docs, {run['total_s']:.1f} s)"
            f"   ratio import/raw {import_rate / rate:5.2f}"
        )
    print("goal: ratio >= 0.5")
    ok = counts["created"] == expected.created and counts["rejected"] == expected.rejected
    if not ok:
        print(f"COUNTS DIFFER from the generator's: {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
