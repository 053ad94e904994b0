"""What the admin commands show: tables and a tree for a person, JSON documents for a
script. Pure: the gateway's answers in, renderables and documents out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

USER_FIELDS = ("id", "email", "role", "federation_id", "federation_path", "active", "created_at")
FEDERATION_FIELDS = ("id", "name", "parent_id", "path", "created_at", "version")
COUNTS = ("created", "updated", "merged", "unchanged", "skipped", "rejected", "flagged")


def user_document(user: Mapping[str, Any], names: Mapping[str, str] | None = None) -> dict:
    doc = {k: user.get(k) for k in USER_FIELDS}
    if names is not None:
        doc["federation_name"] = names.get(user["federation_id"])
    return doc


def users_table(
    users: Sequence[Mapping[str, Any]], names: Mapping[str, str], title: str = "Users"
) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("email", "role", "federation", "active", "id", "created"):
        table.add_column(column)
    for user in users:
        federation = names.get(user["federation_id"]) or user["federation_id"]
        table.add_row(
            user["email"],
            user["role"],
            federation,
            Text("yes", style="green") if user["active"] else Text("no", style="bold red"),
            user["id"],
            str(user.get("created_at", ""))[:19],
        )
    return table


def federation_document(federation: Mapping[str, Any]) -> dict:
    return {k: federation.get(k) for k in FEDERATION_FIELDS if k in federation}


def federations_table(
    federations: Sequence[Mapping[str, Any]], title: str = "Federations"
) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("name", "id", "parent", "path"):
        table.add_column(column)
    for f in federations:
        table.add_row(f["name"], f["id"], f.get("parent_id") or "-", f["path"])
    return table


def federation_tree(federations: Sequence[Mapping[str, Any]]) -> Tree | Text:
    """The subtree as the gateway lists it (by path): each federation under its parent;
    the caller's own federation is the root."""
    if not federations:
        return Text("No federation visible.")
    ordered = sorted(federations, key=lambda f: f["path"])
    root = Tree(_label(ordered[0]))
    nodes = {ordered[0]["id"]: root}
    for federation in ordered[1:]:
        parent = nodes.get(federation.get("parent_id") or "", root)
        nodes[federation["id"]] = parent.add(_label(federation))
    return root


def _label(federation: Mapping[str, Any]) -> Text:
    label = Text(federation["name"], style="bold")
    label.append(f"  {federation['id']}", style="dim")
    return label


def import_document(job: Mapping[str, Any], rejected: Sequence[Mapping[str, str]]) -> dict:
    return {
        "id": job["id"],
        "status": job["status"],
        "federation_id": job.get("federation_id"),
        "progress": job.get("progress"),
        "counts": job.get("counts"),
        "error": job.get("error"),
        "rejected_rows": list(rejected),
        "links": job.get("links"),
    }


def import_lines(job: Mapping[str, Any], rejected: Sequence[Mapping[str, str]]) -> list[str]:
    counts = job.get("counts") or {}
    progress = job.get("progress") or {}
    lines = [
        f"import {job['id']}: {job['status']}, {progress.get('rows_done', 0):,} rows; "
        + ", ".join(f"{k} {counts.get(k, 0):,}" for k in COUNTS)
    ]
    if job.get("error"):
        lines.append(f"error: {job['error']}")
    for row in rejected:
        lines.append(f"  row {row['row']}: {row['reason']}")
    shown, total = len(rejected), counts.get("rejected", 0)
    links = job.get("links") or {}
    if total > shown:
        lines.append(f"  ... {total - shown:,} more rejected rows: GET {links.get('rejected_csv')}")
    if counts.get("flagged"):
        lines.append(f"flagged duplicates to review: GET {links.get('flagged_csv')}")
    if job["status"] not in ("done", "failed", "cancelled"):
        lines.append(f"still {job['status']}: follow it with GET {links.get('self')}")
    return lines
