"""Backup and restore, the use cases: Kafka positions, the databases, the vault.

Restore, in this order, and nothing changes before step 5:

1. the manifest and every file's size and SHA-256 are checked (a damaged backup is
   refused);
2. no worker group may have members (the workers must be stopped: the broker would refuse
   to move their offsets, and they would write into databases being replaced);
3. without ``--force`` every target database must be empty;
4. the people to erase again are gathered and written to a journal next to the backup
   (``restores/<time>/erasures.jsonl``) BEFORE anything is overwritten, from three
   sources, because each can be missing: the live vault's tombstones (gone if the store
   was lost: then the vault is what is being restored), consent's live erasure requests
   (the keys each destroyed, merged contacts' included; gone with the store too), and the
   erasure-requested events on Kafka after the backup's positions (Kafka survives a lost
   store; its retention must outlast the oldest backup kept). Journals of earlier attempts
   are read too, so a restore cut short and run again loses none of them;
5. the databases and the vault are replaced by the backup's;
6. every key named in step 4 is destroyed again in the restored vault (``redestroy``):
   before any worker starts, no sealed field of those people can be opened;
7. every worker group is sent back to its committed offsets of the backup: when the
   workers start they apply again everything since, erasures included (each service
   deletes those people again and answers erasure-completed), and the projections catch
   up with every event published since the backup.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from consent.cli import erasure_receipts, redestroy, tombstones
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ErasureRequestedV1
from tribune_shared.store import Store
from tribune_shared.vault import KeyVault

from tribune_ops.backups import archive
from tribune_ops.backups.domain import (
    ERASURE_TOPIC,
    MANIFEST,
    VAULT,
    CollectionCopy,
    DatabaseCopy,
    GroupReset,
    Manifest,
    ManifestError,
    busy_groups,
    check_file,
    copy_order,
    erasure_scan_from,
    file_name,
    group_resets,
    positions,
)
from tribune_ops.backups.store import Database
from tribune_ops.groups import worker_groups
from tribune_ops.kafka import Kafka, Tick
from tribune_ops.settings import OpsSettings, platform_services, service_settings

#: ui.progress: (description, total) -> a context giving the tick
Progress = Callable[[str, int], AbstractContextManager[Tick]]
JOURNALS = "restores"
JOURNAL = "erasures.jsonl"


class BackupError(Exception):
    """The backup or the restore cannot go on; nothing was changed unless it says so."""


def tool_version() -> str:
    try:
        return f"tribune-ops {version('tribune-ops')}"
    except PackageNotFoundError:  # run from a source tree
        return "tribune-ops (unknown version)"


def _timeout_ms(settings: OpsSettings) -> int:
    return int(settings.request_timeout_seconds * 1000)


def _databases(settings: OpsSettings) -> dict[str, Database]:
    """Every database of the platform by role: each service's, as that service names it
    (``<SERVICE>_MONGO_URL``, ``<SERVICE>_DATABASE_PREFIX`` honoured), and the vault."""
    timeout = _timeout_ms(settings)
    found = {s: Database.of_service(service_settings(s), timeout) for s in platform_services()}
    found[VAULT] = Database.of_vault(settings, timeout)
    return found


async def _close(databases: Iterable[Database]) -> None:
    for db in databases:
        await db.close()


def _unprefixed_worker_groups(settings: OpsSettings) -> dict[str, list[str]]:
    prefix = settings.topic_prefix
    return {g[len(prefix) :]: ts for g, ts in worker_groups(prefix).items()}


# ---------------------------------------------------------------- backup


async def take_backup(
    settings: OpsSettings, folder: Path, progress: Progress, batch_size: int
) -> Manifest:
    """Copy every database and the vault into ``folder`` (new or empty), after recording
    the Kafka positions; the manifest is written last."""
    if not archive.prepare_folder(folder):
        raise BackupError(f"{folder} is not empty: back up into a new folder")
    started = datetime.now(UTC)
    async with Kafka(settings) as kafka:
        topics = await kafka.topics()
        _, ends = await kafka.bounds([(t, p) for t, ps in topics.items() for p in ps])
        committed = {}
        for group in await kafka.groups():
            offsets = await kafka.committed(group)
            committed[group] = {part: meta.offset for part, meta in offsets.items()}
    kafka_positions = positions(settings.topic_prefix, ends, committed)

    databases = _databases(settings)
    try:
        plan: list[tuple[str, Database, list[str]]] = []
        total = 0
        for role, db in databases.items():
            names = copy_order(await db.collections())
            plan.append((role, db, names))
            for name in names:
                total += await db.estimated_count(name)
        copies: list[DatabaseCopy] = []
        with progress("copying documents", total) as tick:
            for role, db, names in plan:
                collections = []
                for name in names:
                    collections.append(await _copy(db, role, name, folder, batch_size, tick))
                copies.append(DatabaseCopy(role=role, name=db.name, collections=collections))
    finally:
        await _close(databases.values())
    manifest = Manifest(
        started_at=started,
        finished_at=datetime.now(UTC),
        tool_version=tool_version(),
        topic_prefix=settings.topic_prefix,
        database_prefix=settings.database_prefix,
        kafka=kafka_positions,
        databases=copies,
    )
    archive.write_manifest(folder, manifest.to_text())
    return manifest


async def _copy(
    db: Database, role: str, name: str, folder: Path, batch_size: int, tick: Tick
) -> CollectionCopy:
    relative = file_name(role, name)
    writer = archive.CollectionWriter(folder / relative)
    try:
        async for batch in db.batches(name, batch_size):
            for document in batch:
                writer.write(document.raw)
            tick(len(batch))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return CollectionCopy(
        name=name,
        file=relative,
        documents=writer.documents,
        bytes=writer.size,
        sha256=writer.sha256,
        indexes=await db.indexes(name),
    )


# ---------------------------------------------------------------- restore


def verify(folder: Path) -> Manifest:
    """The backup's manifest, once it and every file it lists check out."""
    text = archive.read_manifest(folder)
    if text is None:
        raise ManifestError(f"{folder} holds no {MANIFEST}: not a backup (or one cut short)")
    manifest = Manifest.from_text(text)
    problems = [
        problem
        for db in manifest.databases
        for copy in db.collections
        if (problem := check_file(copy, archive.digest(folder, copy.file))) is not None
    ]
    if problems:
        raise ManifestError("; ".join(problems))
    return manifest


@dataclass(frozen=True)
class Erasure:
    request_id: str
    contact_id: str
    requested_at: str
    partition: int
    offset: int

    def as_json(self) -> dict[str, Any]:
        return vars(self)


async def _erasures_since(
    kafka: Kafka, settings: OpsSettings, manifest: Manifest, progress: Progress
) -> tuple[list[Erasure], int]:
    """The erasure-requested events after the backup's positions (and how many records
    could not be read as one)."""
    topic = settings.topic(ERASURE_TOPIC)
    partitions = (await kafka.topics()).get(topic, [])
    if not partitions:
        return [], 0
    readers = [g for g, ts in _unprefixed_worker_groups(settings).items() if ERASURE_TOPIC in ts]
    scan = erasure_scan_from(manifest.kafka, readers, partitions)
    starts, ends = await kafka.bounds([(topic, p) for p in partitions])
    bounds = {(topic, p): (max(scan[p], starts[(topic, p)]), ends[(topic, p)]) for p in partitions}
    with progress("reading erasures since the backup", sum(e - s for s, e in bounds.values())) as t:
        records = await kafka.read(bounds, t)
    found: list[Erasure] = []
    unreadable = 0
    for record in records:
        try:
            event = decode_as(Envelope.from_bytes(record.value), ErasureRequestedV1)
        except Exception:  # a foreign record: it names nobody
            unreadable += 1
            continue
        found.append(
            Erasure(
                event.request_id,
                event.contact_id,
                event.requested_at.isoformat(),
                record.partition,
                record.offset,
            )
        )
    return found, unreadable


def _earlier_journals(root: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if not root.is_dir():
        return records
    for path in sorted(root.glob(f"*/{JOURNAL}")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def _write_journal(root: Path, records: list[dict[str, Any]]) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = root / stamp / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, default=str) + "\n")
        f.flush()
    return path


async def _live_erasure_records(settings: OpsSettings) -> list[dict[str, Any]]:
    """What the live store knows of erasures (its vault's tombstones, consent's erasure
    requests), before the restore replaces it; nothing if it is gone."""
    vault = KeyVault(settings)
    consent = Store(service_settings("consent"), server_timeout_ms=_timeout_ms(settings))
    try:
        records: list[dict[str, Any]] = [
            {"source": "live-vault", **t} for t in await tombstones(vault)
        ]
        records += [
            {"source": "live-consent", **r, "_id": str(r.get("_id"))}
            for r in await erasure_receipts(consent)
        ]
        return records
    finally:
        await vault.close()
        await consent.close()


async def restore(
    settings: OpsSettings,
    folder: Path,
    progress: Progress,
    *,
    force: bool,
    journal_root: Path | None,
    batch_size: int,
) -> dict[str, Any]:
    manifest = verify(folder)
    known = set(platform_services()) | {VAULT}
    unknown = sorted({d.role for d in manifest.databases} - known)
    if unknown:
        raise BackupError(f"the backup holds databases this platform has no service for: {unknown}")
    prefix = settings.topic_prefix
    worker = _unprefixed_worker_groups(settings)
    databases = _databases(settings)
    try:
        async with Kafka(settings) as kafka:
            existing = [g for g in await kafka.groups() if g[len(prefix) :] in worker]
            info = await kafka.group_info(existing)
            busy = busy_groups({g: (i.state, i.members) for g, i in info.items()})
            if busy:
                raise BackupError(
                    f"workers are running ({', '.join(busy)}): stop every worker and API, "
                    "then restore; nothing was changed"
                )
            occupied = {role: await db.non_empty() for role, db in databases.items()}
            occupied = {r: c for r, c in occupied.items() if c}
            if occupied and not force:
                named = "; ".join(
                    f"{databases[r].name} ({', '.join(c)})" for r, c in occupied.items()
                )
                raise BackupError(
                    f"these databases hold data: {named}. Restoring replaces them: "
                    "use --force; nothing was changed"
                )

            # 4. who must stay erased, written down before anything is overwritten
            root = journal_root or folder / JOURNALS
            erasures, unreadable = await _erasures_since(kafka, settings, manifest, progress)
            records = [
                *_earlier_journals(root),
                *await _live_erasure_records(settings),
                *({"source": "kafka", **e.as_json()} for e in erasures),
            ]
            journal = _write_journal(root, records)

            # 5. the databases and the vault
            restored = []
            total = sum(c.documents for d in manifest.databases for c in d.collections)
            with progress("restoring documents", total) as tick:
                for copy in manifest.databases:
                    target = databases[copy.role]
                    await target.drop()
                    for collection in copy.collections:
                        await _restore_collection(folder, target, collection, batch_size, tick)
                    restored.append(
                        {
                            "role": copy.role,
                            "database": target.name,
                            "collections": len(copy.collections),
                            "documents": sum(c.documents for c in copy.collections),
                        }
                    )

            # 6. their keys destroyed again in the restored vault
            vault = KeyVault(settings)
            try:
                destroyed = await redestroy(vault, records)
            finally:
                await vault.close()

            # 7. the workers resume where the backup was taken
            topics = await kafka.topics()
            starts, _ = await kafka.bounds([(t, p) for t, ps in topics.items() for p in ps])
            resets = group_resets(manifest.kafka, worker, topics, starts, prefix)
            for reset in resets:
                await kafka.reset_group(reset.group, reset.offsets)
    finally:
        await _close(databases.values())
    return _report(manifest, restored, erasures, unreadable, destroyed, resets, journal)


async def _restore_collection(
    folder: Path, target: Database, copy: CollectionCopy, batch_size: int, tick: Tick
) -> None:
    await target.ensure_collection(copy.name)
    batch = []
    count = 0
    for document in archive.documents(folder, copy.file):
        batch.append(document)
        if len(batch) >= batch_size:
            await target.insert(copy.name, batch)
            tick(len(batch))
            count += len(batch)
            batch = []
    await target.insert(copy.name, batch)
    tick(len(batch))
    count += len(batch)
    if count != copy.documents:  # the checksum held, so the backup was written wrong
        raise BackupError(
            f"{copy.file}: {count} documents restored, the manifest says {copy.documents}; "
            "the restore is incomplete: restore another backup with --force"
        )
    await target.create_indexes(copy.name, copy.indexes)


def _report(
    manifest: Manifest,
    restored: list[dict[str, Any]],
    erasures: list[Erasure],
    unreadable: int,
    destroyed: dict[str, int],
    resets: list[GroupReset],
    journal: Path,
) -> dict[str, Any]:
    lost = sum(n for r in resets for n in r.lost.values())
    return {
        "backup_started_at": manifest.started_at.isoformat(),
        "databases": restored,
        "documents": manifest.documents,
        "erasures_since_backup": [e.as_json() for e in erasures],
        "unreadable_erasure_records": unreadable,
        "keys_listed": destroyed["listed"],
        "keys_destroyed_again": destroyed["revived_and_destroyed"],
        "journal": str(journal),
        "groups_reset": [r.as_json() for r in resets],
        "events_lost_to_retention": lost,
    }
