"""The import job runner: reads a job's CSV file in batches and writes each batch's
contacts, their events, its rejected/flagged rows and the job's progress in ONE
transaction (nothing half written; a crashed run resumes after its last committed
batch). The contacts worker runs queued jobs (``run_import_jobs``) and publishes their
events go through the kernel outbox, one packed row per batch (``Outbox.pack``); the CLI
runs the same ``ImportRunner`` on a local file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure, DuplicateKeyError
from tribune_shared.events import Envelope, utcnow
from tribune_shared.events.contracts import DataOrigin
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.suppression import email_hash, phone_hash

from contacts.domain import (
    Contact,
    ContactFields,
    build_contact,
    contact_created,
    contact_updated,
    new_contact_id,
    updated_contact,
)
from contacts.imports import (
    DuplicateRule,
    ImportMapping,
    ImportRules,
    ParsedRow,
    RawRow,
    ReadLimits,
    RejectedRow,
    data_signature,
    fold_into,
    parse_row,
    read_records,
)
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import (
    CustomFieldStore,
    ImportStore,
    JobGone,
    StaleContacts,
    from_document,
    replacement_document,
    to_document,
)

log = get_logger(__name__)

COUNTS = ("created", "updated", "merged", "unchanged", "skipped", "rejected", "flagged")
#: attempts at a batch that lost a race (a concurrent create of the same email/phone, a
#: merged contact changed meanwhile) before the job fails; write conflicts are retried by
#: the store's transaction runner
BATCH_ATTEMPTS = 8


def now_ms() -> datetime:
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# ---------------------------------------------------------------- duplicate keys


class KeyMap:
    """Which contact of the federation holds each email and phone. Federations up to
    ``max_contacts`` are read once into memory (a lookup per batch would cost more than
    the batch on a store without partial-index lookups); larger ones are asked per batch.
    A contact created meanwhile by someone else makes the batch's insert fail on the
    unique indexes: the map is then read again and the batch redone."""

    def __init__(self, imports: ImportStore, federation: tuple[str, str], max_contacts: int):
        self.imports = imports
        self.federation_id, self.federation_path = federation
        self.max_contacts = max_contacts
        self.map: dict[str, str] | None = None

    async def load(self) -> None:
        count = await self.imports.count_federation(self.federation_id, self.federation_path)
        if count > self.max_contacts:
            self.map = None
            return
        mapping: dict[str, str] = {}
        async for contact_id, keys in self.imports.federation_keys(
            self.federation_id, self.federation_path
        ):
            for key in keys:
                mapping[key] = contact_id
        self.map = mapping

    async def lookup(self, keys: set[str]) -> dict[str, str]:
        if self.map is None:
            return await self.imports.ids_by_keys(self.federation_id, sorted(keys))
        return {k: self.map[k] for k in keys if k in self.map}

    def commit(self, added: dict[str, str]) -> None:
        if self.map is not None:
            self.map.update(added)


class SuppressedHashes:
    """The suppression list's hashes, read into memory (and again every minute) when it
    is small enough, else asked per batch."""

    REFRESH_SECONDS = 60.0

    def __init__(self, imports: ImportStore, max_size: int) -> None:
        self.imports = imports
        self.max_size = max_size
        self.hashes: set[str] | None = None
        self.loaded_at = -1e9

    async def matching(self, hashes: list[str]) -> set[str]:
        if time.monotonic() - self.loaded_at > self.REFRESH_SECONDS:
            size = await self.imports.suppressed_count()
            self.hashes = await self.imports.suppressed_all() if size <= self.max_size else None
            self.loaded_at = time.monotonic()
        if self.hashes is None:
            return await self.imports.suppressed(hashes)
        return {h for h in hashes if h in self.hashes}


# ---------------------------------------------------------------- one batch


@dataclass
class _Work:
    """A contact a batch creates or changes."""

    contact_id: str
    fields: ContactFields
    custom: dict[str, Any]
    original: Contact | None = None  # None: created by this batch
    original_doc: dict[str, Any] | None = None


@dataclass
class BatchPlan:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    replaces: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    added_keys: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    #: the sealed events document, once prepared
    events_doc: dict[str, Any] | None = None

    def documents(self) -> dict[str, dict[str, Any]]:
        """The contacts as this batch writes them (the next batch may build on them)."""
        return {d["_id"]: d for d in [*self.inserts, *(d for d, _ in self.replaces)]}


@dataclass(frozen=True)
class JobContext:
    job_id: str
    owner: str
    federation: tuple[str, str]
    origin: DataOrigin
    rule: DuplicateRule
    user_id: str
    correlation_id: str
    expires_at: datetime
    width: int


ProgressCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class ImportRunner:
    """Runs one job over a local copy of its file (the worker's spool, or the CLI's)."""

    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.imports = ImportStore(store)
        self.custom_fields = CustomFieldStore(store)
        self.outbox = Outbox(store)
        # The very rules of the create endpoint.
        self.rules = ContactsService(settings, store).rules

    # ------------------------------------------------------------ the whole job
    async def run(
        self,
        job_id: str,
        path: Path,
        *,
        owner: str,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> dict[str, Any] | None:
        """Import the rows of ``path`` after the job's last committed one. Returns the
        job as it ended (done, cancelled, failed), or None when it was stopped or taken
        over (it stays resumable)."""
        job = await self.imports.job(job_id)
        if job is None or job.get("owner") != owner or job.get("status") != "running":
            return job
        try:
            return await self._run(job, path, owner, on_progress, stop)
        except JobGone:
            return await self._after_gone(job_id, owner)
        except ConnectionFailure as exc:
            # The store is unreachable: leave the job leased; another run resumes it.
            log.warning("imports.store_unreachable", job_id=job_id, error=repr(exc))
            return None
        except Exception as exc:
            log.exception("imports.failed", job_id=job_id)
            await self._finish(job_id, owner, "failed", error=f"{type(exc).__name__}: {exc}")
            return await self.imports.job(job_id)

    async def _run(
        self,
        job: dict[str, Any],
        path: Path,
        owner: str,
        on_progress: ProgressCallback | None,
        stop: asyncio.Event | None,
    ) -> dict[str, Any] | None:
        job_id = job["_id"]
        federation = (job["federation_id"], job["federation_path"])
        mapping = ImportMapping.from_list(job["mapping"])
        definitions = await self.custom_fields.applicable(federation[1])
        rules = ImportRules(
            contact=self.rules,
            definitions=definitions,
            max_custom_text=self.settings.max_custom_text_length,
            extra_tags=tuple(job.get("tags") or ()),
        )
        ctx = JobContext(
            job_id=job_id,
            owner=owner,
            federation=federation,
            origin=DataOrigin.model_validate(job["origin"]),
            rule=DuplicateRule(job["rule"]),
            user_id=job["created_by"],
            correlation_id=job.get("correlation_id") or job_id,
            expires_at=job["expires_at"],
            width=len(job["header"]),
        )
        encoding, delimiter = job["encoding"], job["delimiter"]
        progress = job.get("progress") or {}
        limits = read_limits(self.settings)
        if progress.get("total") is None:
            total = await asyncio.to_thread(_count_rows, path, encoding, delimiter, limits)
            await self._set(job_id, owner, {"progress.total": total})
        keys = KeyMap(self.imports, federation, self.settings.import_key_cache_max_contacts)
        await keys.load()
        touched: set[str] = set()
        self.suppression = SuppressedHashes(
            self.imports, self.settings.import_key_cache_max_contacts
        )
        started = time.monotonic()
        await self._set(
            job_id,
            owner,
            {
                "started_at": job.get("started_at") or now_ms(),
                "progress.run_started_at": now_ms(),
                "progress.rows_at_run_start": progress.get("rows_done", 0),
            },
        )
        resume_after = progress.get("next_row", 0)
        batch_size = self.settings.import_batch_size
        handle = await asyncio.to_thread(_open_text, path, encoding)
        with handle:
            records = (r for r in read_records(handle, delimiter, limits) if r.row > resume_after)

            def next_batch() -> list[ParsedRow | RejectedRow]:
                return [
                    parse_row(raw, ctx.width, mapping, rules)
                    for raw in itertools.islice(records, batch_size)
                ]

            # A pipeline: batch N is written while batch N+1 is parsed (in a thread) and
            # prepared (its contacts, events sealed) on what batch N will have written.
            pending = asyncio.ensure_future(asyncio.to_thread(next_batch))
            inflight: asyncio.Future[bool] | None = None
            inflight_plan: BatchPlan | None = None

            async def committed() -> tuple[bool, bool]:
                """Wait for the batch being written: (the job must stop here, the batch
                had to be redone)."""
                nonlocal inflight
                assert inflight is not None
                raced = await inflight
                inflight = None
                if on_progress is not None:
                    view = await self.imports.job(job_id)
                    if view is not None:
                        result = on_progress(view)
                        if asyncio.iscoroutine(result):
                            await result
                if stop is not None and stop.is_set():
                    await self._release(job_id, owner)
                    log.info("imports.released", job_id=job_id)
                    return True, raced
                return False, raced

            try:
                while True:
                    parsed = await pending
                    if not parsed:
                        break
                    pending = asyncio.ensure_future(asyncio.to_thread(next_batch))
                    plan = await self._prepare(ctx, parsed, keys, touched, inflight_plan)
                    if inflight is not None:
                        stopping, raced = await committed()
                        if stopping:
                            return None
                        if raced:  # the previous batch was redone: so is this plan
                            plan = await self._prepare(ctx, parsed, keys, touched, None)
                    inflight = asyncio.ensure_future(self._write(ctx, parsed, plan, keys, touched))
                    inflight_plan = plan
                if inflight is not None and (await committed())[0]:
                    return None
            finally:
                for task in (pending, inflight):
                    if task is not None and not task.done():
                        with contextlib.suppress(Exception):
                            await task
        log.info("imports.done", job_id=job_id, seconds=round(time.monotonic() - started, 1))
        return await self._finish(job_id, owner, "done")

    # ------------------------------------------------------------ one batch
    async def _prepare(
        self,
        ctx: JobContext,
        parsed: list[ParsedRow | RejectedRow],
        keys: KeyMap,
        touched: set[str],
        ahead: BatchPlan | None,
    ) -> BatchPlan:
        """The batch's plan and its sealed events document (``ahead``: the batch being
        written meanwhile, whose contacts this one may build on)."""
        plan = await self._plan(ctx, parsed, keys, touched, ahead)
        if plan.envelopes:
            plan.events_doc = await self.outbox.pack(plan.envelopes)
        return plan

    async def _write(
        self,
        ctx: JobContext,
        parsed: list[ParsedRow | RejectedRow],
        plan: BatchPlan,
        keys: KeyMap,
        touched: set[str],
    ) -> bool:
        """Commit a batch (redone on the current state when it lost a race); True if it
        had to be redone."""
        last_row = max(p.row for p in parsed)
        raced = False

        async def write(session: AsyncClientSession) -> None:
            now = now_ms()  # per attempt: the lease runs from this commit
            await self.imports.write_batch(
                session,
                job_id=ctx.job_id,
                owner=ctx.owner,
                inserts=plan.inserts,
                replaces=plan.replaces,
                events=plan.events_doc,
                issues=plan.issues,
                job_update={
                    "$set": {
                        "progress.next_row": last_row,
                        "lease_until": now + timedelta(seconds=self.settings.import_lease_seconds),
                        "updated_at": now,
                    },
                    "$inc": {
                        "progress.rows_done": len(parsed),
                        **{f"counts.{k}": v for k, v in plan.counts.items() if v},
                    },
                },
            )

        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                await self.store.run_transaction(write, what="contacts.import_batch")
            except (DuplicateKeyError, StaleContacts) as exc:
                # Someone else created or changed a contact this batch relies on: that
                # write committed, so the plan is made again on it at once.
                log.info("imports.batch_raced", job_id=ctx.job_id, attempt=attempt, error=repr(exc))
                await keys.load()
                raced = True
                plan = await self._prepare(ctx, parsed, keys, touched, None)
            else:
                keys.commit(plan.added_keys)
                touched |= plan.touched
                return raced
        raise RuntimeError(f"a batch lost {BATCH_ATTEMPTS} races in a row; try again later")

    async def _plan(
        self,
        ctx: JobContext,
        parsed: list[ParsedRow | RejectedRow],
        keys: KeyMap,
        touched: set[str],
        ahead: BatchPlan | None = None,
    ) -> BatchPlan:
        """What the batch writes: new contacts, contacts rows merge into, their events,
        the rows rejected or flagged, and the counts."""
        plan = BatchPlan()
        valid = [p for p in parsed if isinstance(p, ParsedRow)]
        for p in parsed:
            if isinstance(p, RejectedRow):
                plan.issues.append(self._issue(ctx, p.row, "rejected", p.reason, p.cells))
                plan.counts["rejected"] += 1
        wanted = {k for p in valid for k in p.keys}
        ahead_keys = ahead.added_keys if ahead is not None else {}
        ahead_docs = ahead.documents() if ahead is not None else {}
        ahead_touched = ahead.touched if ahead is not None else set()
        base = {k: ahead_keys[k] for k in wanted if k in ahead_keys}
        base.update(await keys.lookup(wanted - set(base)))
        ids = set(base.values())
        docs = {i: ahead_docs[i] for i in ids if i in ahead_docs}
        docs.update(await self.imports.contacts_by_ids(sorted(ids - set(docs))))
        if ids - set(docs):
            raise StaleContacts()  # a contact of the map is gone: read the map again
        work: dict[str, _Work] = {}
        overlay: dict[str, str] = {}
        for row in valid:
            row_ids = {cid for k in row.keys if (cid := overlay.get(k) or base.get(k)) is not None}
            if len(row_ids) > 1:
                shown = ", ".join(sorted(row_ids))
                reason = f"its emails/phones belong to different contacts ({shown})"
                plan.issues.append(
                    self._issue(
                        ctx, row.row, "flagged", reason, row.cells, contact_id=sorted(row_ids)[0]
                    )
                )
                plan.counts["flagged"] += 1
                continue
            if not row_ids:
                contact_id = new_contact_id()
                work[contact_id] = _Work(contact_id, row.fields, dict(row.custom))
                for key in row.keys:
                    overlay[key] = contact_id
                plan.counts["created"] += 1
                continue
            target = row_ids.pop()
            in_file = (
                target in touched
                or target in ahead_touched
                or target in work
                or (ctx.job_id in (docs.get(target, {}).get("import_ids") or ()))
            )
            if ctx.rule is DuplicateRule.skip:
                plan.counts["skipped"] += 1
                continue
            if ctx.rule is DuplicateRule.flag:
                reason = (
                    "same email or phone as an earlier row of the file"
                    if in_file
                    else "same email or phone as an existing contact"
                )
                plan.issues.append(
                    self._issue(ctx, row.row, "flagged", reason, row.cells, contact_id=target)
                )
                plan.counts["flagged"] += 1
                continue
            current = work.get(target)
            if current is None:
                original = from_document(docs[target])
                current = work[target] = _Work(
                    target,
                    original.fields(),
                    dict(original.custom_fields),
                    original=original,
                    original_doc=docs[target],
                )
            before = data_signature(current.fields, current.custom)
            current.fields, current.custom = fold_into(
                current.fields, current.custom, row.fields, row.custom, self.rules
            )
            for key in [
                *(e.address for e in current.fields.emails or ()),
                *(p.number for p in current.fields.phones or ()),
            ]:
                overlay.setdefault(key, target)
            if in_file:
                plan.counts["merged"] += 1
            elif data_signature(current.fields, current.custom) != before:
                plan.counts["updated"] += 1
            else:
                plan.counts["unchanged"] += 1
            plan.touched.add(target)
        await self._materialise(ctx, work, plan)
        plan.added_keys = overlay
        return plan

    async def _materialise(self, ctx: JobContext, work: dict[str, _Work], plan: BatchPlan) -> None:
        now = now_ms()
        suppressed = await self._suppressed(work.values())
        for item in work.values():
            flagged = any(k in suppressed for k in _keys(item.fields))
            if item.original is None:
                contact = build_contact(
                    contact_id=item.contact_id,
                    federation=ctx.federation,
                    version=1,
                    fields=item.fields,
                    custom=item.custom,
                    origin=ctx.origin,
                    created=(now, ctx.user_id),
                    updated=(now, None),
                    suppressed=flagged,
                )
                doc = to_document(contact)
                doc["import_ids"] = [ctx.job_id]
                plan.inserts.append(doc)
                plan.touched.add(contact.id)
                plan.envelopes.append(
                    contact_created(contact, self.settings.service_name, ctx.correlation_id)
                )
                continue
            outcome = updated_contact(
                item.original,
                item.fields,
                item.custom,
                suppressed=flagged,
                now=now,
                updated_by=ctx.user_id,
            )
            if outcome is None:
                continue
            updated, changed = outcome
            doc = replacement_document(updated, item.original_doc or {})
            doc["import_ids"] = [
                *[i for i in (item.original_doc or {}).get("import_ids") or () if i != ctx.job_id],
                ctx.job_id,
            ]
            plan.replaces.append((doc, item.original.version))
            plan.envelopes.append(
                contact_updated(
                    updated,
                    changed,
                    self.settings.service_name,
                    ctx.correlation_id,
                )
            )

    async def _suppressed(self, items) -> set[str]:
        """The emails/phones of these contacts that are on the suppression list."""
        salt = self.settings.suppression_salt
        by_hash: dict[str, str] = {}
        for item in items:
            for email in item.fields.emails or ():
                if h := email_hash(email.address, salt):
                    by_hash[h] = email.address
            for phone in item.fields.phones or ():
                if h := phone_hash(phone.number, salt):
                    by_hash[h] = phone.number
        found = await self.suppression.matching(list(by_hash))
        return {by_hash[h] for h in found}

    @staticmethod
    def _issue(
        ctx: JobContext,
        row: int,
        kind: str,
        reason: str,
        cells,
        contact_id: str | None = None,
    ) -> dict[str, Any]:
        doc = {
            "_id": f"{ctx.job_id}:{row:09d}",
            "job_id": ctx.job_id,
            "row": row,
            "kind": kind,
            "reason": reason,
            "cells": list(cells),
            "expires_at": ctx.expires_at,
        }
        if contact_id is not None:
            doc["contact_id"] = contact_id
        return doc

    # ------------------------------------------------------------ job state
    async def _set(self, job_id: str, owner: str, values: dict[str, Any]) -> None:
        if not await self.imports.update_job(job_id, {"$set": values}, owner=owner):
            raise JobGone()

    async def _release(self, job_id: str, owner: str) -> None:
        await self.imports.update_job(
            job_id,
            {"$set": {"status": "queued", "owner": None, "lease_until": None}},
            owner=owner,
            status="running",
        )

    async def _finish(
        self, job_id: str, owner: str, status: str, error: str | None = None
    ) -> dict[str, Any] | None:
        values: dict[str, Any] = {"status": status, "finished_at": now_ms(), "lease_until": None}
        if error is not None:
            values["error"] = error[:2000]
        await self.imports.update_job(job_id, {"$set": values}, owner=owner)
        await self.imports.drop_chunks(job_id)
        return await self.imports.job(job_id)

    async def _after_gone(self, job_id: str, owner: str) -> dict[str, Any] | None:
        job = await self.imports.job(job_id)
        if job is not None and job.get("cancel_requested") and job.get("owner") == owner:
            log.info("imports.cancelled", job_id=job_id)
            return await self._finish(job_id, owner, "cancelled")
        return None if job is None or job.get("owner") != owner else job


def _keys(fields: ContactFields) -> list[str]:
    return [*(e.address for e in fields.emails or ()), *(p.number for p in fields.phones or ())]


def _open_text(path: Path, encoding: str):
    return open(path, encoding=encoding, errors="replace", newline="")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def read_limits(settings: ContactsSettings) -> ReadLimits:
    return ReadLimits(
        max_columns=settings.import_max_columns,
        max_cell_chars=settings.import_max_cell_chars,
        max_row_chars=settings.import_max_row_chars,
    )


def _count_rows(path: Path, encoding: str, delimiter: str, limits: ReadLimits) -> int:
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        return sum(1 for _ in read_records(handle, delimiter, limits))


def iter_rows(path: Path, encoding: str, delimiter: str, limits: ReadLimits) -> Iterator[RawRow]:
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        yield from read_records(handle, delimiter, limits)


# ---------------------------------------------------------------- the worker's part


async def spool(imports: ImportStore, job: dict[str, Any], directory: str | None) -> Path:
    """A local copy of an uploaded job's file, written chunk by chunk."""
    fd, name = tempfile.mkstemp(prefix=f"import-{job['_id']}-", suffix=".csv", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for n in range(job["file"]["chunks"]):
                data = await imports.chunk(job["_id"], n)
                if data is None:
                    raise FileNotFoundError(f"chunk {n} of the uploaded file is missing")
                out.write(data)
    except BaseException:
        _remove(path)
        raise
    return path


async def run_claimed(
    runner: ImportRunner, job: dict[str, Any], owner: str, stop: asyncio.Event | None
) -> dict[str, Any] | None:
    try:
        path = await spool(runner.imports, job, runner.settings.import_temp_dir)
    except FileNotFoundError as exc:
        return await runner._finish(job["_id"], owner, "failed", error=str(exc))
    try:
        return await runner.run(job["_id"], path, owner=owner, stop=stop)
    finally:
        _remove(path)


async def run_import_jobs(settings: ContactsSettings, store: Store, stop: asyncio.Event) -> None:
    """The worker's import loop: take a queued job (or one whose runner died), run it,
    repeat until SIGTERM (a job in hand is released after its current batch)."""
    runner = ImportRunner(settings, store)
    owner = worker_id()
    interval = settings.import_poll_interval_seconds
    while not stop.is_set():
        try:
            now = now_ms()
            job = await runner.imports.claim(
                owner, now, now + timedelta(seconds=settings.import_lease_seconds)
            )
            if job is not None:
                log.info("imports.claimed", job_id=job["_id"])
                await run_claimed(runner, job, owner, stop)
                continue
        except Exception as exc:  # the store is down: try again later
            log.warning("imports.loop_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
