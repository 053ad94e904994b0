"""Command line of the contacts service.

    python -m contacts.cli import FILE --federation paris --origin-kind petition \\
        --origin-detail "pétition gare du Nord" [--mapping "Portable=phone" ...] \\
        [--duplicates merge|skip|flag] [--delimiter semicolon] [--encoding cp1252] [--tag x]

Imports FILE directly against the store with the job runner the worker uses (same rules,
same batches, same events: they are published by the contacts worker's relay), with a
progress bar and the final counts. The job is listed by the API like an uploaded one.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tribune_shared.federations import FEDERATIONS
from tribune_shared.ids import sortable_id
from tribune_shared.outbox import kernel_indexes
from tribune_shared.store import Store

from contacts.domain import InvalidFields
from contacts.import_jobs import COUNTS, ImportRunner, now_ms, worker_id
from contacts.import_service import check_options
from contacts.imports import (
    EncodingDetector,
    check_mapping_usable,
    decode_sample,
    detect_delimiter,
    read_header,
    resolve_mapping,
)
from contacts.settings import ContactsSettings
from contacts.store import INDEXES, CustomFieldStore, ImportStore

READ_CHUNK = 1024 * 1024


class CliError(Exception):
    pass


def _options(args: argparse.Namespace) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {
        "origin_kind": [args.origin_kind],
        "origin_detail": [args.origin_detail or f"CSV import of {Path(args.file).name}"],
        "duplicates": [args.duplicates] if args.duplicates else [],
        "mapping": list(args.mapping or ()),
        "tag": list(args.tag or ()),
        "filename": [Path(args.file).name],
    }
    for name in ("origin_collected_on", "delimiter", "encoding"):
        value = getattr(args, name)
        if value:
            values[name] = [value]
    return {k: v for k, v in values.items() if v}


def inspect_file(path: Path, settings: ContactsSettings) -> tuple[int, str, bytes]:
    """(size, detected encoding, sample): the file is read once, by chunks."""
    detector = EncodingDetector()
    sample = bytearray()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            detector.feed(chunk)
            if len(sample) < settings.import_sample_bytes:
                sample += chunk[: settings.import_sample_bytes - len(sample)]
    return detector.size, detector.result(), bytes(sample)


async def create_job(
    store: Store,
    settings: ContactsSettings,
    path: Path,
    federation_id: str,
    federation_path: str | None,
    options: dict[str, list[str]],
    user: str,
    owner: str,
) -> dict[str, Any]:
    """A running job owned by this process, checked as an upload is (else CliError)."""
    now = now_ms()
    try:
        checked = check_options(options, settings, now.date())
    except InvalidFields as exc:
        raise CliError("; ".join(f"{f}: {r}" for f, r in exc.problems)) from None
    if federation_path is None:
        doc = await store[FEDERATIONS].find_one({"_id": federation_id})
        if doc is None:
            raise CliError(
                f"unknown federation {federation_id!r} (not in this service's copy of the "
                "tree yet: run the worker, or give --federation-path)"
            )
        federation_path = doc["path"]
    size, detected, sample_bytes = await asyncio.to_thread(inspect_file, path, settings)
    if size == 0:
        raise CliError("the file is empty")
    encoding = checked.encoding or detected
    sample = decode_sample(sample_bytes, encoding).removeprefix("\ufeff")
    delimiter = checked.delimiter or detect_delimiter(sample)
    header = read_header(sample, delimiter)
    if not header:
        raise CliError("no header row (the first line names the columns)")
    definitions = await CustomFieldStore(store).applicable(federation_path)
    try:
        mapping = resolve_mapping(header, checked.mapping, definitions)
        check_mapping_usable(mapping)
    except InvalidFields as exc:
        raise CliError("; ".join(f"{f}: {r}" for f, r in exc.problems)) from None
    job = {
        "_id": sortable_id(),
        "source": "cli",
        "status": "running",
        "federation_id": federation_id,
        "federation_path": federation_path,
        "created_by": user,
        "created_by_email": None,
        "created_at": now,
        "updated_at": now,
        "file": {"name": checked.filename, "bytes": size, "chunks": 0},
        "encoding": encoding,
        "delimiter": delimiter,
        "header": header,
        "mapping": mapping.as_list(),
        "unmapped": list(mapping.unmapped),
        "origin": checked.origin.model_dump(mode="json"),
        "rule": checked.rule.value,
        "tags": list(checked.tags),
        "correlation_id": sortable_id(),
        "progress": {"rows_done": 0, "total": None, "next_row": 0},
        "counts": dict.fromkeys(COUNTS, 0),
        "cancel_requested": False,
        "owner": owner,
        "lease_until": now + timedelta(seconds=settings.import_lease_seconds),
        "expires_at": now + timedelta(days=settings.import_retention_days),
    }
    await ImportStore(store).insert_job(job)
    return job


async def run_import(args: argparse.Namespace, settings: ContactsSettings | None = None) -> int:
    settings = settings or ContactsSettings()
    path = Path(args.file)
    store = Store(settings)
    owner = worker_id()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await store.ensure_indexes([*kernel_indexes(settings), *INDEXES])
        try:
            job = await create_job(
                store,
                settings,
                path,
                args.federation,
                args.federation_path,
                _options(args),
                args.user or f"cli:{getpass.getuser()}",
                owner,
            )
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        mapped = ", ".join(f"{m['header']}->{m['target']}" for m in job["mapping"])
        print(
            f"import {job['_id']}: {job['encoding']}, delimiter {job['delimiter']!r}; {mapped}",
            file=sys.stderr,
        )
        if job["unmapped"]:
            print(f"columns left aside: {', '.join(job['unmapped'])}", file=sys.stderr)
        bar = tqdm(total=None, unit="row", disable=args.quiet, dynamic_ncols=True)

        def progress(view: dict[str, Any]) -> None:
            done = view["progress"]["rows_done"]
            if bar.total is None and view["progress"].get("total") is not None:
                bar.total = view["progress"]["total"]
            bar.update(done - bar.n)
            counts = view.get("counts") or {}
            bar.set_postfix({k: counts.get(k, 0) for k in ("created", "merged", "rejected")})

        runner = ImportRunner(settings, store)
        try:
            final = await runner.run(job["_id"], path, owner=owner, on_progress=progress, stop=stop)
        finally:
            bar.close()
        if final is None:  # interrupted between two batches: what is committed stays
            await runner._finish(job["_id"], owner, "cancelled")
            final = await runner.imports.job(job["_id"])
        return report(final or {})
    finally:
        await store.close()


def report(job: dict[str, Any]) -> int:
    counts = job.get("counts") or {}
    progress = job.get("progress") or {}
    print(
        f"{job.get('status')}: {progress.get('rows_done', 0)} rows; "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in COUNTS)
    )
    if job.get("error"):
        print(f"error: {job['error']}", file=sys.stderr)
    if counts.get("rejected") or counts.get("flagged"):
        print(
            f"rejected/flagged rows: GET /api/v1/contacts/imports/{job.get('_id')}/rejected.csv"
            " (and flagged.csv)",
            file=sys.stderr,
        )
    return 0 if job.get("status") == "done" else 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m contacts.cli", description=__doc__.split("\n")[0]
    )
    commands = root.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="import a CSV file of contacts")
    imp.add_argument("file")
    imp.add_argument("--federation", required=True, help="the federation's id")
    imp.add_argument("--federation-path", help="its tree path, if this service does not know it")
    imp.add_argument("--origin-kind", required=True, help="petition, event, rented_file...")
    imp.add_argument("--origin-detail", help="where the file comes from (default: its name)")
    imp.add_argument("--origin-collected-on", help="YYYY-MM-DD")
    imp.add_argument("--mapping", action="append", metavar="COLUMN=FIELD", help="repeatable")
    imp.add_argument("--duplicates", choices=["merge", "skip", "flag"])
    imp.add_argument("--delimiter", help="comma, semicolon or tab (detected by default)")
    imp.add_argument("--encoding", help="utf-8, cp1252, latin-1... (detected by default)")
    imp.add_argument("--tag", action="append", help="a tag added to every contact; repeatable")
    imp.add_argument("--user", help="recorded as the job's author (default: cli:<login>)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "import":
        if not Path(args.file).is_file():
            print(f"error: no file {args.file}", file=sys.stderr)
            return 2
        return asyncio.run(run_import(args))
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
