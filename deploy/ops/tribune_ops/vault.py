"""`tribune vault status|rotate|destroyed|redestroy`: the key vault (tribune_shared.vault).

The same operations as ``python -m consent.cli vault-*`` (the functions are consent.cli's
and the kernel's ``KeyVault``: one way to do each), with tables, a progress bar and
``--json``. The vault is the platform's (``<database prefix>vault``, ``TRIBUNE_VAULT_*``):
these commands read the platform settings, KEKs included (``TRIBUNE_VAULT_KEK`` wraps,
``TRIBUNE_VAULT_PREVIOUS_KEKS`` still unwrap); ``--from-receipts`` reads consent's
database as consent names it (``CONSENT_*`` first).

Key rotation (``rotate``), the documented way, without downtime:

1. every process gets the new KEK as ``TRIBUNE_VAULT_KEK`` and the old one in
   ``TRIBUNE_VAULT_PREVIOUS_KEKS`` (rolling restart: new keys are wrapped with the new KEK,
   old ones still open);
2. ``tribune vault rotate`` rewraps every live key under the new KEK, again until nothing
   is left under another one (a process not restarted yet may still wrap with the old);
3. it then names the old KEKs that wrap nothing any more: drop them from every process,
   but keep a copy for as long as backups taken before the rotation are kept (their vault
   copy holds keys wrapped by them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from consent.cli import erasure_receipts, read_records, redestroy, tombstones
from rich.table import Table
from tribune_shared.store import Store
from tribune_shared.vault import KeyVault, key_wrapper_for

from tribune_ops.settings import OpsSettings, SettingsError, service_settings

if TYPE_CHECKING:
    from tribune_ops.cli import Ui

vault_app = typer.Typer(
    help="The key vault: key status, KEK rotation, destroyed keys (tombstones).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="print one JSON document on stdout (for scripts)")
]


# ---------------------------------------------------------------- pure


def left_under_old(status: Mapping[str, Any]) -> dict[str, int]:
    """Live keys not under the current KEK, by KEK id (``"unwrapped"``: stored in clear by
    an older version): what a rotation still has to rewrap."""
    current = status["current_kek"]
    left = {k: n for k, n in status["wrapped_by_kek"].items() if k != current and n}
    if status.get("unwrapped"):
        left["unwrapped"] = int(status["unwrapped"])
    return left


@dataclass(frozen=True)
class Rotation:
    current_kek: str
    rewrapped: int
    #: keys that could not be unwrapped here (their KEK is not configured), last pass
    failed: int
    passes: int
    left: dict[str, int]
    #: configured previous KEKs that wrap no key any more: can be dropped
    droppable: list[str]

    @property
    def done(self) -> bool:
        return not self.left and not self.failed

    def as_json(self) -> dict[str, Any]:
        return {
            "current_kek": self.current_kek,
            "rewrapped": self.rewrapped,
            "failed": self.failed,
            "passes": self.passes,
            "left_by_kek": self.left,
            "droppable_keks": self.droppable,
            "done": self.done,
        }


def droppable_keks(configured: list[str], current: str, left: Mapping[str, int]) -> list[str]:
    """The previous KEKs (configured besides ``current``) no live key is wrapped by."""
    return [k for k in configured if k != current and not left.get(k)]


# ---------------------------------------------------------------- work


def _vault(settings: OpsSettings) -> KeyVault:
    try:  # the KEK settings are checked before anything connects
        wrapper = key_wrapper_for(settings)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    return KeyVault(settings, wrapper=wrapper)


async def _status(settings: OpsSettings) -> dict[str, Any]:
    vault = _vault(settings)
    try:
        status = await vault.status()
    finally:
        await vault.close()
    return {**status, "left_under_old_keks": left_under_old(status)}


async def _rotate(ui: Ui, settings: OpsSettings, max_passes: int) -> Rotation:
    vault = _vault(settings)
    try:
        status = await vault.status()
        left = left_under_old(status)
        rewrapped = failed = passes = 0
        with ui.progress("rewrapping data keys", sum(left.values())) as tick:
            while left and passes < max_passes:
                passes += 1
                report = await vault.rewrap(on_batch=tick)
                rewrapped += report.rewrapped
                failed = report.failed
                left = left_under_old(await vault.status())
                # nothing moved: what is left cannot be unwrapped here (or a process still
                # wraps with the old KEK faster than we move keys): say so, do not spin
                if report.rewrapped == 0:
                    break
        configured = list(getattr(vault.wrapper, "kek_ids", [status["current_kek"]]))
        return Rotation(
            current_kek=status["current_kek"],
            rewrapped=rewrapped,
            failed=failed,
            passes=passes,
            left=left,
            droppable=droppable_keks(configured, status["current_kek"], left),
        )
    finally:
        await vault.close()


async def _destroyed(settings: OpsSettings) -> list[dict[str, str]]:
    vault = _vault(settings)
    try:
        return await tombstones(vault)
    finally:
        await vault.close()


async def _redestroy(
    settings: OpsSettings, records: list[Any], from_receipts: bool
) -> dict[str, int]:
    vault = _vault(settings)
    try:
        if from_receipts:
            consent = Store(service_settings("consent"))
            try:
                records = [*records, *await erasure_receipts(consent)]
            finally:
                await consent.close()
        return await redestroy(vault, records)
    finally:
        await vault.close()


# ---------------------------------------------------------------- commands


def _ui(as_json: bool) -> Ui:
    from tribune_ops.cli import Ui  # the CLI's plumbing (it imports this module)

    return Ui(as_json)


def _run(ui: Ui, work: Any) -> Any:
    from tribune_ops.cli import _run as run

    return run(ui, work)


@vault_app.command("status")
def status(as_json: JsonOption = False) -> None:
    """Live keys per KEK (and still stored unwrapped), destroyed keys (tombstones), merge
    links; which live keys a rotation still has to move."""
    ui = _ui(as_json)
    found = _run(ui, _status)
    if as_json:
        ui.document(found)
        return
    table = Table(title="Key vault", title_justify="left")
    table.add_column("KEK")
    table.add_column("live keys", justify="right")
    for kek, n in sorted(found["wrapped_by_kek"].items()):
        label = f"{kek} (current)" if kek == found["current_kek"] else kek
        table.add_row(label, f"{n:,}")
    table.add_row("stored unwrapped", f"{found['unwrapped']:,}")
    ui.out.print(table)
    ui.note(
        f"current KEK {found['current_kek']}; {found['destroyed']:,} destroyed key(s) "
        f"(tombstones); {found['linked']:,} merge link(s)"
    )
    if found["left_under_old_keks"]:
        ui.note("keys left under an old KEK: run `tribune vault rotate`")


@vault_app.command("rotate")
def rotate(
    max_passes: Annotated[
        int,
        typer.Option(
            "--max-passes",
            min=1,
            max=100,
            help="rewrap passes at most (each moves every key under an old KEK)",
        ),
    ] = 5,
    as_json: JsonOption = False,
) -> None:
    """Rewrap every live data key under the current KEK (TRIBUNE_VAULT_KEK), in batches,
    while the services run, until none is left under an old one; then name the old KEKs
    (TRIBUNE_VAULT_PREVIOUS_KEKS) that can be dropped. Exit 1 while keys are left."""
    ui = _ui(as_json)
    rotation: Rotation = _run(ui, lambda s: _rotate(ui, s, max_passes))
    if as_json:
        ui.document(rotation.as_json())
    else:
        ui.note(
            f"{rotation.rewrapped:,} key(s) rewrapped under {rotation.current_kek} "
            f"in {rotation.passes} pass(es)."
        )
        if rotation.done:
            dropped = ", ".join(rotation.droppable) or "none configured"
            ui.note(
                f"Nothing is left under an old KEK. Can be dropped from "
                f"TRIBUNE_VAULT_PREVIOUS_KEKS once every process runs with the new "
                f"TRIBUNE_VAULT_KEK: {dropped}. Keep a copy of them while backups taken "
                "before this rotation are kept (their vault holds keys they wrap)."
            )
    if not rotation.done:
        left = ", ".join(f"{k}: {n:,}" for k, n in rotation.left.items())
        ui.err.print(
            f"keys left under old KEKs ({left}; {rotation.failed} could not be unwrapped): "
            "is every KEK that wraps them in TRIBUNE_VAULT_PREVIOUS_KEKS, and does every "
            "process run with the new TRIBUNE_VAULT_KEK? Then run rotate again.",
            highlight=False,
        )
        raise typer.Exit(1)


@vault_app.command("destroyed")
def destroyed(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="write the JSON lines to this file"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every destroyed key (tombstone) as JSON lines {"subject", "destroyed_at"}: what
    `tribune vault redestroy` reads after restoring an older backup of the vault."""
    ui = _ui(as_json)
    found: list[dict[str, str]] = _run(ui, _destroyed)
    lines = "".join(json.dumps(t) + "\n" for t in found)
    if out is not None:
        out.write_text(lines, encoding="utf-8")
    if as_json:
        ui.document({"destroyed": len(found), "out": str(out) if out else None, "keys": found})
    elif out is None:
        ui.out.print(lines, end="", highlight=False, markup=False)
    else:
        ui.note(f"{len(found):,} destroyed key(s) written to {out}")


@vault_app.command("redestroy")
def redestroy_command(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="`tribune vault destroyed` exports or erasure receipts (JSON lines or a "
            "JSON list)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    from_receipts: Annotated[
        bool,
        typer.Option("--from-receipts", help="also every key consent's erasure requests list"),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Destroy again every key the files (or consent's erasure receipts) name: after a
    vault was restored from a backup older than some erasures. Idempotent."""
    ui = _ui(as_json)
    if not files and not from_receipts:
        ui.fail("name tombstone files or --from-receipts", 2)
    records: list[Any] = []
    for path in files or ():
        try:
            records += read_records(path)
        except ValueError as exc:  # json.JSONDecodeError included
            ui.fail(f"{path}: not JSON lines nor a JSON list ({exc})", 2)
    outcome: dict[str, int] = _run(ui, lambda s: _redestroy(s, records, from_receipts))
    if as_json:
        ui.document(outcome)
    else:
        ui.note(
            f"{outcome['listed']:,} key(s) listed; {outcome['revived_and_destroyed']:,} "
            "were live again and are destroyed now."
        )
