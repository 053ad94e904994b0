"""Pure rules of the back office's work screens (imports, privacy requests, users,
federations, segments, campaigns): what a page shows and how a form's input becomes an
API call. No I/O here (gateway.webapp.screens_service calls the API)."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tribune_shared.auth import Role

#: the menu's links for each role. Only what the menu lists, never who may: the API
#: decides (a page it refuses is the 403 page), this only spares a volunteer links that
#: would all lead there.
MENU: Mapping[str, tuple[str, ...]] = {
    Role.admin: ("imports", "segments", "campaigns", "users", "federations"),
    Role.secretary: ("imports", "segments", "campaigns", "federations"),
    Role.treasurer: ("federations",),
    Role.campaign_manager: ("segments", "campaigns", "federations"),
    Role.dpo: ("privacy", "users", "federations"),
    Role.viewer: ("segments", "federations"),
}

#: what the contacts import API takes (contacts.import_api): the select lists of the form
ORIGIN_KINDS = (
    "import",
    "web_form",
    "event",
    "membership",
    "petition",
    "electoral_list",
    "rented_file",
    "manual",
)
DUPLICATE_MODES = ("merge", "skip", "flag")
IMPORT_STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_IMPORT_STATUSES = ("queued", "running")
#: consent.privacy.RequestKind / RequestStatus
PRIVACY_KINDS = ("access", "erasure")
PRIVACY_STATUSES = ("open", "in_progress", "completed")
#: messaging.campaigns.domain.CampaignStatus
CAMPAIGN_STATUSES = ("draft", "scheduled", "sending", "paused", "completed", "cancelled", "failed")
#: a campaign still moving: its figures change, the page follows them
LIVE_CAMPAIGN_STATUSES = ("scheduled", "sending", "paused")
#: the actions the campaign screens offer (each a POST of the campaigns API)
CAMPAIGN_ACTIONS = ("launch", "pause", "resume")
#: the delivery figures shown (keys of the campaign's ``stats``)
CAMPAIGN_FIGURES = ("audience", "sent", "delivered", "bounced", "opened")

#: ?done=<what> after a successful POST: the notice the page shows (nothing else is read)
NOTICES: Mapping[str, str] = {
    "created": "notice.created",
    "saved": "notice.saved",
    "launched": "notice.launched",
    "paused": "notice.paused",
    "resumed": "notice.resumed",
    "cancelled": "notice.cancelled",
}


def notice_of(value: str | None) -> str | None:
    return NOTICES.get(value or "")


# ---------------------------------------------------------------- rejected / flagged rows


#: what a page reads of a rejected/flagged rows file at most, whatever its lines hold
MAX_ISSUE_TEXT = 1024 * 1024


@dataclass(frozen=True)
class IssueRow:
    """One line of an import's rejected (or flagged) rows: the file's line number (the
    header is line 1), why, the existing contact (flagged) and the row as it was."""

    row: int
    reason: str
    existing_contact_id: str | None
    cells: tuple[str, ...]

    def summary(self, max_chars: int = 160) -> str:
        text = " · ".join(c for c in self.cells if c)
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


@dataclass(frozen=True)
class IssueRows:
    rows: list[IssueRow]
    #: more lines than shown (the CSV download has them all)
    more: bool


class IssueReader:
    """Reads the first ``limit`` lines of an import's rejected.csv or flagged.csv as it
    streams in (contacts.imports.issues_csv_*: UTF-8 with a BOM, the file's delimiter; a
    cell may hold a line break), so a page never holds a whole big file."""

    def __init__(self, delimiter: str, *, flagged: bool, limit: int) -> None:
        self.delimiter = delimiter if delimiter in (",", ";", "\t", "|") else ","
        self.flagged = flagged
        self.limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._text = ""

    def feed(self, chunk: bytes) -> bool:
        """Takes a chunk; True once enough lines arrived (the rest need not be read)."""
        self._text += self._decoder.decode(chunk)
        if len(self._text) > MAX_ISSUE_TEXT:
            return True
        # the header, ``limit`` records, one more to know there is more, and the last
        # one, which may be cut
        wanted = self.limit + 3
        return self._text.count("\n") >= wanted and len(self._records()) >= wanted

    def _records(self) -> list[list[str]]:
        return list(csv.reader(self._text.splitlines(keepends=True), delimiter=self.delimiter))

    def result(self, ended: bool) -> IssueRows:
        if ended:
            self._text += self._decoder.decode(b"", final=True)
        records = self._records()
        if not ended and records:
            records = records[:-1]  # the last one may be cut in the middle
        rows: list[IssueRow] = []
        for record in records[1:]:  # the header
            row = issue_row(record, flagged=self.flagged)
            if row is not None:
                rows.append(row)
        return IssueRows(rows[: self.limit], more=len(rows) > self.limit or not ended)


def issue_row(record: Sequence[str], *, flagged: bool) -> IssueRow | None:
    """A CSV record of the issues file as a row (None for anything malformed)."""
    head = 3 if flagged else 2
    if len(record) < head or not record[0].isdigit():
        return None
    return IssueRow(
        row=int(record[0]),
        reason=_unneutralised(record[1]),
        existing_contact_id=(record[2] or None) if flagged else None,
        cells=tuple(_unneutralised(c) for c in record[head:]),
    )


def _unneutralised(cell: str) -> str:
    """The file neutralises cells for spreadsheets (a leading ' before = + - @); on a page
    (escaped HTML) the quote is noise."""
    if cell.startswith("'") and cell[1:2] in ("=", "+", "-", "@"):
        return cell[1:]
    return cell


# ---------------------------------------------------------------- federations


@dataclass(frozen=True)
class TreeNode:
    federation: dict[str, Any]
    depth: int


def federation_tree(federations: Iterable[Mapping[str, Any]]) -> list[TreeNode]:
    """The caller's subtree in reading order: each federation followed by its children
    (by name), with its depth under the top one(s) for indenting."""
    items = [dict(f) for f in federations]
    ids = {f["id"] for f in items}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for f in items:
        parent = f.get("parent_id")
        children.setdefault(parent if parent in ids else None, []).append(f)
    out: list[TreeNode] = []

    def walk(parent: str | None, depth: int) -> None:
        for f in sorted(children.get(parent, []), key=lambda f: str(f.get("name", "")).lower()):
            out.append(TreeNode(f, depth))
            walk(f["id"], depth + 1)

    walk(None, 0)
    return out


def move_targets(tree: Sequence[TreeNode], federation: Mapping[str, Any]) -> list[TreeNode]:
    """Where a federation may be moved: anywhere in the tree but under itself or its own
    descendants (the API refuses those too; the list just does not offer them)."""
    path = str(federation.get("path", ""))
    return [n for n in tree if not str(n.federation.get("path", "")).startswith(path)]


# ---------------------------------------------------------------- forms


@dataclass(frozen=True)
class UserChangeForm:
    """The user screen's form: one change at a time (the button pressed)."""

    action: str  # role | federation | deactivate | reactivate
    role: str | None = None
    federation_id: str | None = None
    confirm_password: str | None = None

    def body(self) -> dict[str, Any] | None:
        """The PATCH /api/v1/users/{id} body; None for an action the form does not have."""
        body: dict[str, Any]
        if self.action == "role" and self.role:
            body = {"role": self.role}
        elif self.action == "federation" and self.federation_id:
            body = {"federation_id": self.federation_id}
        elif self.action == "deactivate":
            body = {"active": False}
        elif self.action == "reactivate":
            body = {"active": True}
        else:
            return None
        if self.confirm_password:
            body["confirm_password"] = self.confirm_password
        return body


def field_errors(body: Any) -> list[tuple[str, str]]:
    """(field, reason) pairs of an API error answer (a 422's ``detail``; any other error's
    message under the field "")."""
    if not isinstance(body, dict):
        return []
    detail = body.get("detail")
    found: list[tuple[str, str]] = []
    if isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict):
                field = item.get("field")
                if field is None and isinstance(item.get("loc"), list):
                    field = ".".join(str(p) for p in item["loc"][1:])
                found.append((str(field or ""), str(item.get("reason") or item.get("msg") or "")))
    elif isinstance(detail, str):
        found.append(("", detail))
    elif isinstance(body.get("message"), str):
        found.append(("", body["message"]))
    return found
