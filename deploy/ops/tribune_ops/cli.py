"""The `tribune` command (typer): one entry point for every operation.

Every command reads the platform's settings from the environment, like the services
(TRIBUNE_KAFKA_BOOTSTRAP_SERVERS, TRIBUNE_MONGO_URL, TRIBUNE_TOPIC_PREFIX, the Kafka TLS
and SASL settings...), shows rich tables (progress bars on stderr while it reads), and
with ``--json`` prints one JSON document on stdout instead, for scripts.

Exit codes: 0 done; 1 failed (Kafka or the store unreachable, a limit crossed, a replay
refused); 2 bad usage (arguments, or settings that describe no usable platform).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import structlog
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tribune_shared.settings import ServiceSettings

from tribune_ops import rebuild as rebuilding
from tribune_ops import render
from tribune_ops.backups import commands as backup_commands
from tribune_ops.dlq import Parked, ReplayLedger, Selection, resolve_topic, summarize
from tribune_ops.groups import group_matches, worker_groups
from tribune_ops.kafka import Kafka, KafkaOpsError, Tick
from tribune_ops.lag import GroupLag, build_report
from tribune_ops.settings import (
    OpsSettings,
    SettingsError,
    load_settings,
    platform_services,
    service_settings,
)
from tribune_ops.store import OutboxBacklog, outbox_backlog
from tribune_ops.vault import vault_app

T = TypeVar("T")

app = typer.Typer(
    help="Operate Tribune: consumer lag, dead-letter queues, outbox backlog.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
dlq_app = typer.Typer(
    help="Dead-letter queues (`<topic>-dlq`): list, show and replay parked messages.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(vault_app, name="vault")
backup_commands.register(app)  # `backup` and `restore`

JsonOption = Annotated[
    bool, typer.Option("--json", help="print one JSON document on stdout (for scripts)")
]
ErrorOption = Annotated[
    str | None,
    typer.Option("--error", "-e", help="only messages whose error contains this (any case)"),
]
GroupOption = Annotated[
    str | None,
    typer.Option(
        "--group",
        "-g",
        help="only this consumer group: its id, with or without the topic prefix, or a "
        "service name (all its lanes)",
    ),
]
TopicArgument = Annotated[
    str,
    typer.Argument(
        help="the topic (contact-created) or its dead-letter queue (contact-created-dlq), "
        "with or without the topic prefix"
    ),
]


@app.callback()
def _root() -> None:
    """Every command reads the platform settings from the environment (TRIBUNE_...)."""


# ---------------------------------------------------------------- plumbing


class Failure(Exception):
    """A command could not do what was asked (exit 1), said in the message."""


class Ui:
    """Where a command's output goes: tables on stdout, or one JSON document; progress
    and diagnostics on stderr (so stdout stays the document)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(soft_wrap=False)
        self.err = Console(stderr=True)

    def document(self, doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        if not self.as_json:
            self.out.print(message)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Tick]:
        """A progress bar on stderr (only at a terminal, never with --json)."""
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
            disable=self.as_json or not self.err.is_terminal,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    def fail(self, message: str, code: int) -> NoReturn:
        if os.environ.get("TRIBUNE_OPS_TRACEBACK") and sys.exc_info()[0] is not None:
            traceback.print_exc(file=sys.stderr)  # for a bug report
        if self.as_json:
            self.document({"error": message, "exit_code": code})
        self.err.print(f"[bold red]error:[/] {message}", highlight=False)
        raise typer.Exit(code)


def _quiet_logs() -> None:
    # The kernel logs with structlog (stdout by default) and aiokafka with logging: both
    # go to stderr, warnings only, so stdout holds the table or the JSON document alone.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("aiokafka", "kafka"):  # their failures reach the user as our message
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def _run(ui: Ui, work: Callable[[OpsSettings], Coroutine[Any, Any, T]]) -> T:
    """Load the settings and run ``work``; every known failure becomes a message and an
    exit code (2: the settings, 1: the platform)."""
    _quiet_logs()
    try:
        settings = load_settings()
        return asyncio.run(work(settings))
    except SettingsError as exc:
        ui.fail(f"settings: {exc}", 2)
    except Failure as exc:
        ui.fail(str(exc), 1)
    except (KafkaError, KafkaOpsError) as exc:
        ui.fail(f"Kafka: {exc!r}", 1)
    except PyMongoError as exc:  # its message goes on with the whole topology: the gist
        ui.fail(f"store: {str(exc)[:300]}", 1)


def _kafka(settings: OpsSettings) -> Kafka:
    try:
        return Kafka(settings)
    except ValueError as exc:  # kafka_options refuses the connection settings
        raise SettingsError(str(exc)) from exc


# ---------------------------------------------------------------- lag


async def _lag(settings: OpsSettings, group: str | None) -> list[GroupLag]:
    prefix = settings.topic_prefix
    async with _kafka(settings) as kafka:
        topics = await kafka.topics()
        known = await kafka.groups()
        expected = {
            g: [settings.topic(t) for t in ts]
            for g, ts in worker_groups(prefix).items()
            if g != settings.replay_group
        }
        if group is not None:
            known = [g for g in known if group_matches(g, group, prefix)]
            expected = {g: ts for g, ts in expected.items() if group_matches(g, group, prefix)}
        committed = {}
        for name in known:
            offsets = await kafka.committed(name)
            committed[name] = {part: meta.offset for part, meta in offsets.items()}
        wanted = {part for offsets in committed.values() for part in offsets}
        for ts in expected.values():
            wanted.update((t, p) for t in ts for p in topics.get(t, ()))
        existing = sorted(part for part in wanted if part[0] in topics)
        starts, ends = await kafka.bounds(existing)
        info = await kafka.group_info(known)
    return build_report(committed, expected, topics, starts, ends, info)


@app.command()
def lag(
    group: GroupOption = None,
    max_lag: Annotated[
        int | None,
        typer.Option(
            "--max-lag",
            min=0,
            help="exit 1 when a group's total lag is above this (a check for scripts)",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Per consumer group, topic and partition: committed offset, end offset and lag,
    with each group's total. A worker group the topic registry expects but the broker
    does not know yet shows as "absent", its whole log as lag."""
    ui = Ui(as_json)
    report = _run(ui, lambda s: _lag(s, group))
    if group is not None and not report:
        ui.fail(f"no consumer group matches {group!r}", 1)
    if as_json:
        ui.document(render.lag_document(report))
    elif report:
        ui.out.print(render.lag_table(report))
    else:
        ui.note("No consumer group on this platform yet.")
    over = [g.group for g in report if max_lag is not None and g.total > max_lag]
    if over:
        ui.err.print(f"lag above {max_lag} in: {', '.join(over)}", highlight=False)
        raise typer.Exit(1)


# ---------------------------------------------------------------- dead-letter queues


async def _parked(
    ui: Ui, settings: OpsSettings, kafka: Kafka, dlqs: dict[str, list[int]]
) -> tuple[list[tuple[Parked, bool]], dict[tuple[str, int], ReplayLedger], dict]:
    """Every message of these DLQs with whether it was replayed; the ledgers; the log
    start offsets."""
    parts = [(t, p) for t, ps in dlqs.items() for p in ps]
    starts, ends = await kafka.bounds(parts)
    ledgers = await kafka.ledgers(parts)
    total = sum(ends[p] - starts[p] for p in parts)
    with ui.progress("reading dead-letter queues", total) as tick:
        messages = await kafka.read({p: (starts[p], ends[p]) for p in parts}, tick)
    return (
        [(m, ledgers[(m.dlq_topic, m.partition)].replayed(m.offset)) for m in messages],
        ledgers,
        starts,
    )


async def _one_dlq(kafka: Kafka, settings: OpsSettings, topic: str) -> dict[str, list[int]]:
    name = resolve_topic(topic, settings.topic_prefix)
    dlqs = await kafka.dlq_topics()
    if name not in dlqs:
        known = ", ".join(settings.strip_prefix(t) for t in dlqs) or "none"
        raise Failure(f"no dead-letter queue {name!r} (this platform has: {known})")
    return {name: dlqs[name]}


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[
        str | None, typer.Option("--topic", "-t", help="only this topic's dead-letter queue")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every dead-letter queue with its message count, what is not replayed yet, and per
    consumer group that parked messages, their most frequent errors."""
    ui = Ui(as_json)

    async def work(settings: OpsSettings) -> list:
        async with _kafka(settings) as kafka:
            dlqs = await _one_dlq(kafka, settings, topic) if topic else await kafka.dlq_topics()
            messages, _, _ = await _parked(ui, settings, kafka, dlqs)
        return [summarize(name, [m for m in messages if m[0].dlq_topic == name]) for name in dlqs]

    summaries = _run(ui, work)
    if as_json:
        ui.document(render.dlq_list_document(summaries))
        return
    if any(s.messages for s in summaries):
        ui.out.print(render.dlq_list_table(summaries))
    ui.note(render.dlq_list_footer(summaries))


@dlq_app.command("show")
def dlq_show(
    topic: TopicArgument,
    error: ErrorOption = None,
    group: GroupOption = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="only messages not replayed yet")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=100_000, help="show at most this many")
    ] = 50,
    as_json: JsonOption = False,
) -> None:
    """The parked messages of one dead-letter queue, oldest first: event id, type, offset,
    the group that parked it, attempts, error, and whether it was replayed."""
    ui = Ui(as_json)
    selection = Selection(error=error, group=group, pending=pending)

    async def work(settings: OpsSettings) -> tuple[str, list[tuple[Parked, bool]]]:
        async with _kafka(settings) as kafka:
            dlqs = await _one_dlq(kafka, settings, topic)
            messages, _, _ = await _parked(ui, settings, kafka, dlqs)
        prefix = settings.topic_prefix
        return next(iter(dlqs)), [m for m in messages if selection.matches(*m, prefix)]

    name, matched = _run(ui, work)
    shown = matched[:limit]
    if as_json:
        ui.document(render.parked_document(name, len(matched), shown))
        return
    if shown:
        ui.out.print(render.parked_table(f"{name}: {len(matched):,} matching", shown))
    if len(matched) > len(shown):
        ui.note(f"{len(matched) - len(shown):,} more: raise --limit or narrow with --error/--group")
    if not matched:
        ui.note(f"No parked message in {name} matches.")


@dlq_app.command("replay")
def dlq_replay(
    topic: TopicArgument,
    error: ErrorOption = None,
    group: GroupOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be replayed, change nothing")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    again: Annotated[
        bool,
        typer.Option("--again", help="replay matching messages even if replayed before"),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-publish matching parked messages to their original topic, as they were (value,
    key, headers: the signature still verifies), with a tribune-replayed-from header.
    Consumers skip events they applied (event ids), so only the group that failed
    applies it. Messages replayed before are skipped unless --again."""
    ui = Ui(as_json)
    if not (dry_run or yes) and (as_json or not sys.stdin.isatty()):
        ui.fail("replaying without a terminal needs --yes (or --dry-run to look first)", 2)
    selection = Selection(error=error, group=group)

    async def work(settings: OpsSettings) -> dict[str, Any]:
        async with _kafka(settings) as kafka:
            dlqs = await _one_dlq(kafka, settings, topic)
            name = next(iter(dlqs))
            messages, ledgers, starts = await _parked(ui, settings, kafka, dlqs)
            prefix = settings.topic_prefix
            matched = [m for m in messages if selection.matches(*m, prefix)]
            chosen = [p for p, replayed in matched if again or not replayed]
            skipped = len(matched) - len(chosen)
            updated = _updated_ledgers(settings, ledgers, starts, chosen)
            plan = {
                "topic": name,
                "dry_run": dry_run,
                "matched": len(matched),
                "skipped_replayed_before": skipped,
                "to_replay": len(chosen),
            }
            if dry_run or not chosen:
                return {**plan, "replayed": 0, "messages": [p.as_json(False) for p in chosen]}
            await _check_targets(kafka, chosen)
            if not yes and not typer.confirm(
                f"Replay {len(chosen)} message(s) from {name} to their original topic?"
            ):
                raise Failure("nothing replayed (not confirmed)")
            with ui.progress("replaying", len(chosen)) as tick:
                await kafka.republish(chosen, tick)
            # Recorded after the broker acknowledged them: a crash in between replays them
            # again next time, which the consumers' deduplication absorbs.
            await kafka.commit_ledgers(updated)
            return {**plan, "replayed": len(chosen), "messages": [p.as_json(True) for p in chosen]}

    outcome = _run(ui, work)
    if as_json:
        ui.document(outcome)
        return
    verb = "would replay" if dry_run else "replayed"
    ui.note(
        f"{outcome['topic']}: {outcome['matched']} matching, "
        f"{outcome['skipped_replayed_before']} replayed before (skipped; --again to include), "
        f"{verb} {outcome['to_replay'] if dry_run else outcome['replayed']}."
    )
    for message in outcome["messages"][:20]:
        ui.note(
            f"  {message['partition']}:{message['offset']} {message['event_id']} "
            f"-> {message['original_topic']} ({message['group']}: "
            f"{message['error'][:100]})"
        )


def _updated_ledgers(
    settings: OpsSettings,
    ledgers: dict[tuple[str, int], ReplayLedger],
    starts: dict,
    chosen: list[Parked],
) -> dict[tuple[str, int], ReplayLedger]:
    """The replay group's ledgers once ``chosen`` are replayed; refused before anything is
    sent if one would not fit in a commit's metadata."""
    by_partition: dict[tuple[str, int], list[int]] = {}
    for parked in chosen:
        by_partition.setdefault((parked.dlq_topic, parked.partition), []).append(parked.offset)
    updated = {}
    for part, offsets in by_partition.items():
        ledger = ledgers[part].with_replayed(offsets, starts.get(part, 0))
        if len(ledger.metadata().encode()) > settings.dlq_ledger_max_bytes:
            raise Failure(
                f"{part[0]}[{part[1]}]: the replayed offsets are too scattered to record "
                f"({len(ledger.metadata())} bytes > TRIBUNE_OPS_DLQ_LEDGER_MAX_BYTES="
                f"{settings.dlq_ledger_max_bytes}); replay the older messages first "
                "(a wider --error or --group), so the record compacts to a watermark"
            )
        updated[part] = ledger
    return updated


async def _check_targets(kafka: Kafka, chosen: list[Parked]) -> None:
    topics = await kafka.topics()
    missing = sorted({p.original_topic for p in chosen} - set(topics))
    if missing:
        raise Failure(f"original topic(s) missing: {', '.join(missing)}; nothing replayed")


# ---------------------------------------------------------------- outbox


@app.command()
def outbox(
    service: Annotated[
        list[str] | None,
        typer.Option("--service", "-s", help="only this service (repeatable)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Per service, the events committed in its outbox and not yet published to Kafka,
    and how long the oldest has waited. Each service's database is named as the service
    names it (`<database prefix><service>`; `<SERVICE>_DATABASE_PREFIX` and
    `<SERVICE>_MONGO_URL` are honoured)."""
    ui = Ui(as_json)
    known = platform_services()
    chosen = service or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        ui.fail(f"unknown service(s) {', '.join(unknown)} (known: {', '.join(known)})", 2)

    async def work(settings: OpsSettings) -> list[OutboxBacklog]:
        timeout_ms = int(settings.request_timeout_seconds * 1000)
        views = [(name, service_settings(name)) for name in chosen]
        return list(await asyncio.gather(*(outbox_backlog(n, s, timeout_ms) for n, s in views)))

    rows = _run(ui, work)
    now = datetime.now(UTC)
    if as_json:
        ui.document(render.outbox_document(rows, now))
    else:
        ui.out.print(render.outbox_table(rows, now))


# ---------------------------------------------------------------- projections


@app.command()
def rebuild(
    service: Annotated[str, typer.Argument(help="the service (messaging, consent...)")],
    projection: Annotated[
        str | None,
        typer.Argument(help="the projection to rebuild (none: list the service's projections)"),
    ] = None,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="switch back to the version the last rebuild replaced (caught up first)",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="say what would be read and written, change nothing"),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    as_json: JsonOption = False,
) -> None:
    """Rebuild one of a service's projections from its topics into a fresh collection,
    then switch to it atomically while the service keeps serving (the old one is kept
    for `--rollback`). One rebuild per service at a time; an event the rebuild had to park
    on a DLQ, or a federation moved meanwhile, cancels the switch. Without a projection:
    the service's projections, which can be rebuilt, and their versions. Run it where
    the service runs (its package, its settings: `<SERVICE>_*` / `TRIBUNE_*`)."""
    ui = Ui(as_json)
    try:
        registry = rebuilding.registry_of(service)
        if projection is not None:
            registry.rebuildable(projection)
    except (rebuilding.RebuildRefused, LookupError) as exc:
        ui.fail(str(exc), 2)
    if projection is None:
        rows = _run(ui, lambda _: rebuilding.status(registry, _settings_of(registry)))
        if as_json:
            ui.document({"service": service, "projections": rows})
        else:
            ui.out.print(rebuilding.projections_table(service, rows))
        return
    if not (dry_run or yes) and (as_json or not sys.stdin.isatty()):
        verb = "rollback" if rollback else "rebuild"
        ui.fail(f"a {verb} without a terminal needs --yes (or --dry-run to look first)", 2)

    async def work(settings: OpsSettings) -> rebuilding.Outcome:
        job = rebuilding.Rebuild(
            settings, registry, projection, rollback=rollback, settings=_settings_of(registry)
        )
        try:
            plan = await job.run(dry_run=True)
            if dry_run:
                return plan
            if not yes and not typer.confirm(
                f"{plan.mode.title()} {service}.{projection}: read {plan.events:,} event(s) "
                f"of {', '.join(plan.topics)} into {plan.target}, then switch to it?"
            ):
                raise Failure("nothing done (not confirmed)")
            with _rebuild_bar(ui, f"{plan.mode} {service}.{projection}") as bar:
                return await job.run(progress=bar)
        except rebuilding.RebuildRefused as exc:
            raise Failure(str(exc)) from exc

    outcome = _run(ui, work)
    if as_json:
        ui.document(outcome.as_json())
        return
    ui.note(rebuilding.summary(outcome))


def _settings_of(registry: rebuilding.ProjectionRegistry) -> ServiceSettings:
    """The service's own settings (a rebuild runs as the service)."""
    try:
        return registry.settings()
    except ValidationError as exc:
        raise SettingsError(f"{registry.service}: {exc}") from exc


@contextmanager
def _rebuild_bar(ui: Ui, description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of (events applied, events to apply) on stderr, at a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=ui.err,
        transient=True,
        disable=ui.as_json or not ui.err.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


# ---------------------------------------------------------------- administration
# users, federations, the contacts import: through the gateway's API (tribune_ops.admin,
# which takes this module's Ui: registered once everything above exists)
from tribune_ops import admin as _admin  # noqa: E402

_admin.register(app)


def main() -> None:
    app()
