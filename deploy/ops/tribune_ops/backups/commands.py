"""`tribune backup <dir>` and `tribune restore <dir>` (see tribune_ops.backups.service)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tribune_ops.backups.domain import Manifest, ManifestError
from tribune_ops.backups.service import BackupError, restore, take_backup, verify
from tribune_ops.settings import OpsSettings

if TYPE_CHECKING:
    from tribune_ops.cli import Ui

JsonOption = Annotated[
    bool, typer.Option("--json", help="print one JSON document on stdout (for scripts)")
]
BatchOption = Annotated[
    int,
    typer.Option("--batch-size", min=1, max=100_000, help="documents per store round trip"),
]


def _ui(as_json: bool) -> Ui:
    from tribune_ops.cli import Ui  # the CLI's plumbing (it imports this module)

    return Ui(as_json)


def _run(ui: Ui, work: Any) -> Any:
    """The CLI's runner, with a refused backup or restore as a failure (exit 1)."""
    from tribune_ops.cli import Failure
    from tribune_ops.cli import _run as run

    async def guarded(settings: OpsSettings) -> Any:
        try:
            return await work(settings)
        except (BackupError, ManifestError) as exc:
            raise Failure(str(exc)) from exc

    return run(ui, guarded)


def _manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "started_at": manifest.started_at.isoformat(),
        "finished_at": manifest.finished_at.isoformat(),
        "tool_version": manifest.tool_version,
        "documents": manifest.documents,
        "databases": [
            {
                "role": d.role,
                "database": d.name,
                "collections": {c.name: c.documents for c in d.collections},
            }
            for d in manifest.databases
        ],
        "kafka": manifest.kafka.as_json(),
    }


def _databases_table(manifest: Manifest) -> Table:
    table = Table(title="Backup", title_justify="left")
    table.add_column("database")
    table.add_column("collections", justify="right")
    table.add_column("documents", justify="right")
    for db in manifest.databases:
        table.add_row(
            f"{db.role} ({db.name})",
            str(len(db.collections)),
            f"{sum(c.documents for c in db.collections):,}",
        )
    return table


def backup(
    folder: Annotated[Path, typer.Argument(help="a new (or empty) folder for the backup")],
    batch_size: BatchOption = 1000,
    as_json: JsonOption = False,
) -> None:
    """Back up every service database and the key vault into FOLDER: the Kafka positions
    first (every topic's end, every consumer group's committed offsets), then each
    collection as a gzip BSON file, then manifest.json (counts, sizes, SHA-256, indexes,
    positions, tool version). The services keep running. The KEKs are NOT in it: keep
    them (and the previous ones) apart, as long as the backup."""
    ui = _ui(as_json)
    manifest: Manifest = _run(ui, lambda s: take_backup(s, folder, ui.progress, batch_size))
    if as_json:
        ui.document({"folder": str(folder), **_manifest_summary(manifest)})
        return
    ui.out.print(_databases_table(manifest))
    ui.note(
        f"{manifest.documents:,} document(s) backed up into {folder} "
        f"({manifest.started_at:%Y-%m-%d %H:%M:%S} to {manifest.finished_at:%H:%M:%S} UTC)."
    )


def restore_command(
    folder: Annotated[Path, typer.Argument(help="a folder `tribune backup` wrote")],
    force: Annotated[
        bool,
        typer.Option("--force", help="replace databases that hold data (the usual restore)"),
    ] = False,
    verify_only: Annotated[
        bool,
        typer.Option("--verify", help="only check the backup (manifest, sizes, SHA-256)"),
    ] = False,
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help="where the list of people to keep erased is written before anything is "
            "replaced (default: FOLDER/restores)",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    batch_size: BatchOption = 1000,
    as_json: JsonOption = False,
) -> None:
    """Restore every service database and the vault from FOLDER, with every worker and
    API stopped. Refused, changing nothing, if the backup fails its checks, a worker runs,
    or (without --force) a database holds data. Erasures recorded since the backup are
    kept: their keys are destroyed again in the restored vault, and every worker group
    is sent back to the backup's offsets, so the workers apply again everything since,
    erasures first among them. Start the workers, wait for `tribune lag` to reach 0,
    then the APIs."""
    ui = _ui(as_json)
    if verify_only:

        async def check(_: OpsSettings) -> Manifest:
            return verify(folder)

        manifest: Manifest = _run(ui, check)
        if as_json:
            ui.document({"verified": True, **_manifest_summary(manifest)})
        else:
            ui.out.print(_databases_table(manifest))
            ui.note(f"{folder}: the manifest and every file check out.")
        return
    if not yes:
        if as_json or not sys.stdin.isatty():
            ui.fail("restoring without a terminal needs --yes (or --verify to look first)", 2)
        if not typer.confirm(f"Replace every database and the vault with the backup in {folder}?"):
            ui.fail("nothing restored (not confirmed)", 1)
    outcome: dict[str, Any] = _run(
        ui,
        lambda s: restore(
            s, folder, ui.progress, force=force, journal_root=journal, batch_size=batch_size
        ),
    )
    if as_json:
        ui.document(outcome)
        return
    ui.note(
        f"{outcome['documents']:,} document(s) restored from the backup of "
        f"{outcome['backup_started_at']}."
    )
    ui.note(
        f"{len(outcome['erasures_since_backup'])} erasure(s) since the backup; "
        f"{outcome['keys_destroyed_again']} key(s) the restore brought back destroyed "
        f"again ({outcome['keys_listed']} listed, journal {outcome['journal']})."
    )
    ui.note(
        f"{len(outcome['groups_reset'])} worker group(s) sent back to the backup's offsets: "
        "start the workers, wait for `tribune lag` to reach 0, then start the APIs."
    )
    if outcome["events_lost_to_retention"]:
        ui.err.print(
            f"{outcome['events_lost_to_retention']} event(s) since the backup were deleted "
            "by Kafka's retention before this restore: their effects are lost "
            "(see groups_reset in --json)",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore_command)
