"""Administration commands: `tribune users ...`, `tribune federations ...`, `tribune import`.

They act through the gateway's HTTP API as an administrator's account (why: see
tribune_ops.gateway_client), so the roles, the subtree, the DPO confirmation, the access
audit and the events are exactly the API's. Settings: ``TRIBUNE_OPS_GATEWAY_URL``,
``TRIBUNE_OPS_ADMIN_EMAIL``, ``TRIBUNE_OPS_ADMIN_PASSWORD`` (asked at a terminal when
unset), or ``TRIBUNE_OPS_API_KEY`` for `import` alone.

Passwords are never command-line arguments (a process list shows those): a new user's
password is typed at the terminal, read from stdin (``--password-stdin``) or generated
(``--generate``, shown once).

Exit codes: 0 done; 1 the gateway refused (404, 409, 403...) or could not be reached, or
an import did not end done; 2 bad usage (arguments, settings, or input the gateway
refused with 422).
"""

from __future__ import annotations

import asyncio
import getpass
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from tribune_ops import admin_render as render
from tribune_ops.gateway_client import (
    IMPORT_ENDED,
    AdminSettings,
    Gateway,
    GatewayError,
    GatewayUnreachable,
)

if TYPE_CHECKING:
    from tribune_ops.cli import Ui

T = TypeVar("T")

ROLES = ("viewer", "secretary", "treasurer", "campaign_manager", "admin", "dpo")
DUPLICATES = ("merge", "skip", "flag")

users_app = typer.Typer(
    help="User accounts of your subtree, through the gateway's API (audited like the back office).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
federations_app = typer.Typer(
    help="The federation tree of your subtree, through the gateway's API.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="print one JSON document on stdout (for scripts)")
]
UserArgument = Annotated[str, typer.Argument(help="the user's id, or their email")]
FederationArgument = Annotated[
    str, typer.Argument(help="the federation's id, or its name if no other has it")
]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="read the new password from standard input"),
]
Generate = Annotated[
    bool,
    typer.Option("--generate", help="generate a strong password and show it once"),
]


# ---------------------------------------------------------------- plumbing


def _ui(as_json: bool) -> Ui:
    from tribune_ops.cli import Ui  # cli imports this module to register its commands

    return Ui(as_json)


def _settings(ui: Ui) -> AdminSettings:
    try:
        return AdminSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TRIBUNE_OPS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        ui.fail(f"settings: {problems}", 2)


def _admin_password(ui: Ui, settings: AdminSettings) -> str:
    """The operator's own password: from the settings, else typed at a terminal."""
    if not settings.admin_email:
        ui.fail("settings: set TRIBUNE_OPS_ADMIN_EMAIL (an administrator's account)", 2)
    if settings.admin_password is not None:
        return settings.admin_password.get_secret_value()
    if sys.stdin.isatty() and not ui.as_json:
        return getpass.getpass(f"password of {settings.admin_email}: ", stream=sys.stderr)
    ui.fail("settings: set TRIBUNE_OPS_ADMIN_PASSWORD (no terminal to ask for it)", 2)


def _run(
    ui: Ui,
    work: Callable[[Gateway], Awaitable[T]],
    *,
    api_key_allowed: bool = False,
) -> T:
    """Log in to the gateway, run ``work`` and log out; a refusal becomes a message and
    an exit code (2: bad input or settings, 1: refused or unreachable)."""
    settings = _settings(ui)
    use_key = api_key_allowed and settings.api_key is not None
    password = None if use_key else _admin_password(ui, settings)

    async def go() -> T:
        async with Gateway(settings, password=password, use_api_key=use_key) as gateway:
            return await work(gateway)

    try:
        return asyncio.run(go())
    except GatewayUnreachable as exc:
        ui.fail(f"gateway unreachable: {exc}", 1)
    except GatewayError as exc:
        if exc.status == 401:
            ui.fail(f"gateway: login refused ({exc.message})", 1)
        ui.fail(f"gateway: {exc}", 2 if exc.status == 422 else 1)


def _new_password(ui: Ui, from_stdin: bool, generate: bool) -> tuple[str, bool]:
    """(the password, whether it was generated)."""
    if from_stdin and generate:
        ui.fail("--password-stdin and --generate exclude each other", 2)
    if generate:
        return secrets.token_urlsafe(24), True
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            ui.fail("no password on standard input", 2)
        return password, False
    if sys.stdin.isatty() and not ui.as_json:
        first = getpass.getpass("new password: ", stream=sys.stderr)
        if first != getpass.getpass("again: ", stream=sys.stderr):
            ui.fail("the two passwords differ", 2)
        return first, False
    ui.fail("no terminal to type the password: use --password-stdin or --generate", 2)


def _choice(ui: Ui, value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        ui.fail(f"{option}: {value!r} is not one of {', '.join(allowed)}", 2)
    return value


def _show_user(ui: Ui, user: dict[str, Any], verb: str, password: str | None = None) -> None:
    doc = render.user_document(user)
    if password is not None:
        doc["password"] = password  # generated: shown this once
    if ui.as_json:
        ui.document(doc)
        return
    ui.out.print(render.users_table([user], {}, title=f"User {verb}"))
    if password is not None:
        ui.out.print(f"password (shown once): {password}", highlight=False)


# ---------------------------------------------------------------- users


@users_app.command("list")
def users_list(
    role: Annotated[str | None, typer.Option("--role", "-r", help="only this role")] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--inactive", help="only active (or deactivated) users"),
    ] = None,
    q: Annotated[
        str | None, typer.Option("--email", "-q", help="only emails containing this")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=100_000, help="show at most this many")
    ] = 200,
    as_json: JsonOption = False,
) -> None:
    """The users of your subtree by email: role, federation, active."""
    ui = _ui(as_json)
    if role is not None:
        _choice(ui, role, ROLES, "--role")

    async def work(gw: Gateway) -> tuple[list[dict[str, Any]], dict[str, str]]:
        users = await gw.users(role=role, active=active, q=q, limit=limit)
        names = {f["id"]: f["name"] for f in await gw.federations()}
        return users, names

    users, names = _run(ui, work)
    if as_json:
        ui.document({"users": [render.user_document(u, names) for u in users]})
    elif users:
        ui.out.print(render.users_table(users, names))
    else:
        ui.note("No user matches.")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="the new user's email (their login)")],
    role: Annotated[str, typer.Option("--role", "-r", help=", ".join(ROLES))],
    federation: Annotated[
        str | None,
        typer.Option("--federation", "-f", help="id or name (default: your own federation)"),
    ] = None,
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
    as_json: JsonOption = False,
) -> None:
    """Create an account in your subtree. A role above your own is refused; a DPO account
    asks for your own password again (the gateway's second confirmation)."""
    ui = _ui(as_json)
    _choice(ui, role, ROLES, "--role")
    password, generated = _new_password(ui, password_stdin, generate)

    async def work(gw: Gateway) -> dict[str, Any]:
        federation_id = (await gw.federation(federation))["id"] if federation else None
        return await gw.create_user(email, password, role, federation_id)

    _show_user(ui, _run(ui, work), "created", password if generated else None)


@users_app.command("set-role")
def users_set_role(
    user: UserArgument,
    role: Annotated[str, typer.Argument(help=", ".join(ROLES))],
    as_json: JsonOption = False,
) -> None:
    """Change a user's role (never above your own; not your own account)."""
    ui = _ui(as_json)
    _choice(ui, role, ROLES, "role")

    async def work(gw: Gateway) -> dict[str, Any]:
        return await gw.change_user((await gw.user(user))["id"], role=role)

    _show_user(ui, _run(ui, work), "changed")


@users_app.command("move")
def users_move(
    user: UserArgument,
    federation: Annotated[str, typer.Argument(help="the federation's id, or its name")],
    as_json: JsonOption = False,
) -> None:
    """Move a user to another federation of your subtree."""
    ui = _ui(as_json)

    async def work(gw: Gateway) -> dict[str, Any]:
        target = (await gw.user(user))["id"]
        return await gw.change_user(target, federation_id=(await gw.federation(federation))["id"])

    _show_user(ui, _run(ui, work), "moved")


@users_app.command("deactivate")
def users_deactivate(user: UserArgument, as_json: JsonOption = False) -> None:
    """Deactivate a user: refused at once, their sessions end (not your own account)."""
    ui = _ui(as_json)

    async def work(gw: Gateway) -> dict[str, Any]:
        return await gw.change_user((await gw.user(user))["id"], active=False)

    _show_user(ui, _run(ui, work), "deactivated")


@users_app.command("activate")
def users_activate(user: UserArgument, as_json: JsonOption = False) -> None:
    """Reactivate a deactivated user."""
    ui = _ui(as_json)

    async def work(gw: Gateway) -> dict[str, Any]:
        return await gw.change_user((await gw.user(user))["id"], active=True)

    _show_user(ui, _run(ui, work), "reactivated")


@users_app.command("reset-password")
def users_reset_password(
    user: UserArgument,
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
    as_json: JsonOption = False,
) -> None:
    """Set a user's password: their tokens stop working and their sessions end (your own:
    change it in the back office or `POST /api/v1/me/password`)."""
    ui = _ui(as_json)
    password, generated = _new_password(ui, password_stdin, generate)

    async def work(gw: Gateway) -> dict[str, Any]:
        return await gw.reset_password((await gw.user(user))["id"], password)

    _show_user(ui, _run(ui, work), "password reset", password if generated else None)


# ---------------------------------------------------------------- federations


@federations_app.command("list")
def federations_list(as_json: JsonOption = False) -> None:
    """Your federation and everything below it, as a tree."""
    ui = _ui(as_json)
    tree = _run(ui, lambda gw: gw.federations())
    if as_json:
        ui.document({"federations": [render.federation_document(f) for f in tree]})
    else:
        ui.out.print(render.federation_tree(tree))


@federations_app.command("create")
def federations_create(
    name: Annotated[str, typer.Argument(help="its name (unique among its siblings)")],
    parent: Annotated[
        str | None,
        typer.Option("--parent", "-p", help="id or name (default: your own federation)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a federation under one of your subtree (federation-created is published)."""
    ui = _ui(as_json)

    async def work(gw: Gateway) -> dict[str, Any]:
        parent_id = (await gw.federation(parent))["id"] if parent else None
        return await gw.create_federation(name, parent_id)

    _show_federation(ui, _run(ui, work), "created")


@federations_app.command("rename")
def federations_rename(
    federation: FederationArgument,
    name: Annotated[str, typer.Argument(help="the new name")],
    as_json: JsonOption = False,
) -> None:
    """Rename a federation of your subtree (federation-updated is published)."""
    ui = _ui(as_json)

    async def work(gw: Gateway) -> dict[str, Any]:
        return await gw.change_federation((await gw.federation(federation))["id"], name=name)

    _show_federation(ui, _run(ui, work), "renamed")


@federations_app.command("move")
def federations_move(
    federation: FederationArgument,
    parent: Annotated[str, typer.Option("--parent", "-p", help="the new parent: id or name")],
    as_json: JsonOption = False,
) -> None:
    """Move a federation, with everything below it, under another of your subtree. Its
    users follow at once; every service re-paths its data in the background."""
    ui = _ui(as_json)

    async def work(gw: Gateway) -> dict[str, Any]:
        moved = (await gw.federation(federation))["id"]
        return await gw.change_federation(moved, parent_id=(await gw.federation(parent))["id"])

    _show_federation(ui, _run(ui, work), "moved")


def _show_federation(ui: Ui, federation: dict[str, Any], verb: str) -> None:
    if ui.as_json:
        ui.document(render.federation_document(federation))
    else:
        ui.out.print(render.federations_table([federation], title=f"Federation {verb}"))


# ---------------------------------------------------------------- the contacts import


def import_options(
    federation_id: str,
    origin_kind: str,
    origin_detail: str,
    origin_collected_on: str | None,
    mapping: list[str] | None,
    duplicates: str | None,
    delimiter: str | None,
    encoding: str | None,
    tags: list[str] | None,
) -> list[tuple[str, str]]:
    """The upload's query parameters (the contacts API checks them: 422 names the one)."""
    params = [
        ("federation_id", federation_id),
        ("origin_kind", origin_kind),
        ("origin_detail", origin_detail),
    ]
    for name, value in (
        ("origin_collected_on", origin_collected_on),
        ("duplicates", duplicates),
        ("delimiter", delimiter),
        ("encoding", encoding),
    ):
        if value:
            params.append((name, value))
    params += [("mapping", m) for m in mapping or ()]
    params += [("tag", t) for t in tags or ()]
    return params


class ImportBars:
    """The upload's bar (bytes), then the rows' (once the worker counted them): on
    stderr, at a terminal only."""

    def __init__(self, ui: Ui, size: int) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=ui.err,
            transient=True,
            disable=ui.as_json or not ui.err.is_terminal,
        )
        self.upload = self.bar.add_task("uploading", total=size)
        self.rows: TaskID | None = None

    def sent(self, n: int) -> None:
        self.bar.advance(self.upload, n)

    def seen(self, job: dict[str, Any]) -> None:
        progress, counts = job["progress"], job["counts"]
        extra = (
            f"{job['status']}: created {counts['created']}, merged {counts['merged']}, "
            f"rejected {counts['rejected']}"
        )
        if self.rows is None:
            self.bar.update(self.upload, visible=False)
            self.bar.columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
            )
            self.rows = self.bar.add_task("importing", total=progress.get("total"), extra=extra)
        self.bar.update(
            self.rows, completed=progress["rows_done"], total=progress.get("total"), extra=extra
        )

    @contextmanager
    def shown(self) -> Iterator[ImportBars]:
        with self.bar:
            yield self


def import_contacts(
    file: Annotated[Path, typer.Argument(help="the CSV file", dir_okay=False)],
    federation: Annotated[
        str,
        typer.Option(
            "--federation", "-f", help="the federation's id (or its name, when logged in)"
        ),
    ],
    origin_kind: Annotated[
        str,
        typer.Option(
            "--origin-kind",
            help="where the people come from: web_form, event, membership, petition, "
            "electoral_list, rented_file, import, manual",
        ),
    ],
    origin_detail: Annotated[
        str | None,
        typer.Option("--origin-detail", help="which form, event, file... (default: the file name)"),
    ] = None,
    origin_collected_on: Annotated[
        str | None, typer.Option("--origin-collected-on", help="YYYY-MM-DD")
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--mapping", "-m", help="COLUMN=FIELD (repeatable; FIELD ignore drops it)"),
    ] = None,
    duplicates: Annotated[
        str | None, typer.Option("--duplicates", help="merge (default), skip or flag")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="comma, semicolon or tab (detected)")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="utf-8, cp1252, latin-1... (detected)")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="added to every contact (repeatable)")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow/--no-follow", help="follow the job until it ends (default)"),
    ] = True,
    show_rejected: Annotated[
        int,
        typer.Option(
            "--show-rejected", min=0, max=10_000, help="print at most this many rejected rows"
        ),
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """Import a CSV of contacts: upload it through the gateway (progress bar), then follow
    the job the contacts worker runs (rows done, counts) and print the rejected rows with
    their reasons. The same upload as the back office's: same checks, same job, same
    events. With TRIBUNE_OPS_API_KEY set, the key is used instead of a login."""
    ui = _ui(as_json)
    if not file.is_file():
        ui.fail(f"no file {file}", 2)
    if duplicates is not None:
        _choice(ui, duplicates, DUPLICATES, "--duplicates")
    size = file.stat().st_size
    if size == 0:
        ui.fail(f"{file} is empty", 2)
    bars = ImportBars(ui, size)

    async def work(gw: Gateway) -> dict[str, Any]:
        federation_id = federation if gw.use_api_key else (await gw.federation(federation))["id"]
        params = import_options(
            federation_id,
            origin_kind,
            origin_detail or f"CSV import of {file.name}",
            origin_collected_on,
            mapping,
            duplicates,
            delimiter,
            encoding,
            tag,
        )
        with bars.shown():
            job = await gw.upload(file, size, params, bars.sent)
            if follow:
                bars.seen(job)
                job = await gw.follow(job, bars.seen)
        rejected = await gw.rejected(job, show_rejected)
        return {"job": job, "rejected": rejected}

    outcome = _run(ui, work, api_key_allowed=True)
    job = outcome["job"]
    if as_json:
        ui.document(render.import_document(job, outcome["rejected"]))
    else:
        for line in render.import_lines(job, outcome["rejected"]):
            ui.out.print(line, highlight=False)
    if follow and job["status"] != "done":
        raise typer.Exit(1)
    if not follow and job["status"] in IMPORT_ENDED and job["status"] != "done":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the admin commands to the `tribune` command."""
    app.add_typer(users_app, name="users")
    app.add_typer(federations_app, name="federations")
    app.command("import")(import_contacts)
