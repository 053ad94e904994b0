"""Operator commands of the key vault (consent owns privacy; the vault is the kernel's).

The ops CLI's ``tribune vault status|rotate|destroyed|redestroy`` (tribune_ops.vault) runs
the same functions (``tombstones``, ``erasure_receipts``, ``redestroy``, ``subjects_in``)
with progress bars and ``--json``; this module stays for running them where consent runs.

    python -m consent.cli vault-status
    python -m consent.cli vault-rewrap [--batch-size N]
    python -m consent.cli vault-destroyed [--out FILE]
    python -m consent.cli vault-redestroy FILE... | --from-receipts

- ``vault-status``: keys per KEK, keys still stored unwrapped, tombstones, merge links.
- ``vault-rewrap``: KEK rotation. Set the new ``TRIBUNE_VAULT_KEK``, move the old one to
  ``TRIBUNE_VAULT_PREVIOUS_KEKS`` (every process, rolling restart: the services keep
  running), run this until it reports nothing left, then drop the old KEK.
- ``vault-destroyed``: every destroyed key (JSON lines ``{"subject", "destroyed_at"}``).
- ``vault-redestroy``: after restoring a backup of the vault older than some erasures,
  destroy again every key listed in the given files (``vault-destroyed`` output taken
  before the restore, or erasure receipts: JSON lines or a JSON list of objects with
  ``subject``, ``contact_id`` or ``keys_destroyed``), or with ``--from-receipts`` every key
  consent's erasure requests list. See the README's "Security model".

Runs with the consent service's settings (the same environment as its processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tribune_shared.store import Store
from tribune_shared.vault import KeyVault, vault_for

from consent.privacy_store import PrivacyStore
from consent.settings import ConsentSettings


def subjects_in(records: Iterable[Any]) -> list[str]:
    """The subjects a tombstone export or erasure receipts name (in order, each once)."""
    found: list[str] = []
    for record in records:
        if isinstance(record, str):
            found.append(record)
        elif isinstance(record, dict):
            for name in ("subject", "contact_id"):
                if isinstance(record.get(name), str):
                    found.append(record[name])
            for nested in (record, record.get("receipt") or {}):
                keys = nested.get("keys_destroyed") if isinstance(nested, dict) else None
                if isinstance(keys, list):
                    found += [k for k in keys if isinstance(k, str)]
    return list(dict.fromkeys(found))


def read_records(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        loaded = json.loads(text)
        return loaded if isinstance(loaded, list) else [loaded]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def tombstones(vault: KeyVault) -> list[dict[str, str]]:
    """Every destroyed key as a record ``{"subject", "destroyed_at"}`` (what
    ``vault-destroyed`` writes and ``subjects_in`` reads back)."""
    return [
        {"subject": s, "destroyed_at": at.isoformat()} for s, at in await vault.destroyed_subjects()
    ]


async def erasure_receipts(store: Store) -> list[dict[str, Any]]:
    """consent's erasure requests as records ``subjects_in`` reads (ids only): the keys
    each erasure destroyed, merged contacts' included. ``store``: consent's database."""
    return await PrivacyStore(store).erasure_receipts()


async def redestroy(vault: KeyVault, records: Iterable[Any]) -> dict[str, int]:
    """Destroy again every key the records name (tombstone exports, receipts): how many
    were listed, and how many were live (brought back by a restore) and are gone now."""
    subjects = subjects_in(records)
    revived = await vault.redestroy(subjects)
    return {"listed": len(subjects), "revived_and_destroyed": revived}


async def _run(
    args: argparse.Namespace, settings: ConsentSettings, records: list[Any]
) -> tuple[int, str]:
    """(exit code, what to print or write)."""
    store = Store(settings)
    vault: KeyVault = vault_for(store)
    try:
        if args.command == "vault-status":
            return 0, json.dumps(await vault.status(), indent=2) + "\n"
        if args.command == "vault-rewrap":
            report = await vault.rewrap(args.batch_size)
            out = {"rewrapped": report.rewrapped, "failed": report.failed}
            return (1 if report.failed else 0), json.dumps(out) + "\n"
        if args.command == "vault-destroyed":
            return 0, "".join(json.dumps(t) + "\n" for t in await tombstones(vault))
        # vault-redestroy
        if args.from_receipts:
            records = [*records, *await erasure_receipts(store)]
        return 0, json.dumps(await redestroy(vault, records)) + "\n"
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consent.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("vault-status", help="keys per KEK, unwrapped, destroyed, linked")
    rewrap = commands.add_parser("vault-rewrap", help="move every key to the current KEK")
    rewrap.add_argument("--batch-size", type=int, default=None)
    destroyed = commands.add_parser("vault-destroyed", help="export the destroyed keys")
    destroyed.add_argument("--out", default=None, help="file (default: standard output)")
    redestroy = commands.add_parser("vault-redestroy", help="destroy listed keys again")
    redestroy.add_argument("files", nargs="*", help="vault-destroyed exports or receipts")
    redestroy.add_argument(
        "--from-receipts", action="store_true", help="every key consent's erasures list"
    )
    args = parser.parse_args(argv)
    if args.command == "vault-redestroy" and not (args.files or args.from_receipts):
        parser.error("vault-redestroy needs files or --from-receipts")
    if args.command == "vault-rewrap" and args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    records: list[Any] = []
    for name in getattr(args, "files", None) or ():
        records += read_records(Path(name))
    code, text = asyncio.run(_run(args, ConsentSettings(), records))
    if getattr(args, "out", None):
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
