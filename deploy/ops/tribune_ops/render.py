"""What the CLI shows: rich tables for a person at a terminal, one JSON document for a
script (``--json``). Pure: each function turns results into a renderable or a document."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from tribune_ops.dlq import DlqSummary, Parked, error_kind
from tribune_ops.lag import GroupLag
from tribune_ops.store import OutboxBacklog


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def lag_table(report: Sequence[GroupLag]) -> Table:
    table = Table(title="Consumer lag", title_justify="left")
    for name, justify in (
        ("group", "left"),
        ("state", "left"),
        ("topic", "left"),
        ("partition", "right"),
        ("committed", "right"),
        ("end", "right"),
        ("lag", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for group in report:
        state = group.state
        if group.members is not None:
            state += f" ({group.members} member{'s' if group.members != 1 else ''})"
        for row in group.partitions:
            table.add_row(
                group.group,
                state,
                row.topic,
                str(row.partition),
                _number(row.committed),
                _number(row.end),
                Text(_number(row.lag), style="bold red" if row.lag else ""),
            )
        table.add_row(
            Text(group.group, style="bold"),
            state,
            Text("total", style="bold"),
            "",
            "",
            "",
            Text(_number(group.total), style="bold red" if group.total else "bold green"),
            end_section=True,
        )
    return table


def lag_document(report: Sequence[GroupLag]) -> dict[str, Any]:
    return {
        "groups": [g.as_json() for g in report],
        "total_lag": sum(g.total for g in report),
    }


def dlq_list_table(summaries: Sequence[DlqSummary]) -> Table:
    table = Table(title="Dead-letter queues", title_justify="left")
    for name, justify in (
        ("dead-letter queue", "left"),
        ("messages", "right"),
        ("pending", "right"),
        ("group", "left"),
        ("by group", "right"),
        ("errors (most frequent first)", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for dlq in summaries:
        if not dlq.groups:
            continue
        for i, group in enumerate(dlq.groups):
            errors = "\n".join(f"{n} × {e}" for e, n in group.errors)
            table.add_row(
                dlq.topic if i == 0 else "",
                _number(dlq.messages) if i == 0 else "",
                Text(_number(dlq.pending), style="bold red" if dlq.pending else "")
                if i == 0
                else "",
                group.group,
                f"{group.messages:,} ({group.pending:,} pending)",
                errors,
                end_section=i == len(dlq.groups) - 1,
            )
    return table


def dlq_list_footer(summaries: Sequence[DlqSummary]) -> str:
    empty = sum(1 for s in summaries if not s.messages)
    parked = sum(s.messages for s in summaries)
    pending = sum(s.pending for s in summaries)
    return (
        f"{parked:,} parked message(s), {pending:,} not replayed yet; "
        f"{empty} of {len(summaries)} dead-letter queue(s) empty"
    )


def dlq_list_document(summaries: Sequence[DlqSummary]) -> dict[str, Any]:
    return {
        "dlqs": [s.as_json() for s in summaries],
        "messages": sum(s.messages for s in summaries),
        "pending": sum(s.pending for s in summaries),
    }


def parked_table(title: str, messages: Sequence[tuple[Parked, bool]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("partition:offset", "right"),
        ("event id", "left"),
        ("type", "left"),
        ("group", "left"),
        ("attempts", "right"),
        ("replayed", "left"),
        ("error", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for parked, replayed in messages:
        table.add_row(
            f"{parked.partition}:{parked.offset}",
            parked.event_id or "-",
            parked.event_type or "-",
            parked.group or "-",
            _number(parked.attempts),
            "yes" if replayed else "no",
            error_kind(parked.error, width=200),
        )
    return table


def parked_document(
    topic: str, matched: int, messages: Sequence[tuple[Parked, bool]], **extra: Any
) -> dict[str, Any]:
    return {
        "topic": topic,
        "matched": matched,
        "shown": len(messages),
        **extra,
        "messages": [p.as_json(replayed) for p, replayed in messages],
    }


def outbox_table(rows: Sequence[OutboxBacklog], now: datetime) -> Table:
    table = Table(title="Outbox backlog (committed, not yet published)", title_justify="left")
    table.add_column("service")
    table.add_column("database")
    table.add_column("backlog", justify="right")
    table.add_column("oldest waiting", justify="right")
    for row in rows:
        age = row.age_seconds(now)
        table.add_row(
            row.service,
            row.database,
            Text(_number(row.backlog), style="bold red" if row.backlog else "green"),
            "-" if age is None else _duration(age),
        )
    return table


def outbox_document(rows: Sequence[OutboxBacklog], now: datetime) -> dict[str, Any]:
    return {
        "services": [r.as_json(now) for r in rows],
        "total": sum(r.backlog for r in rows),
    }


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
