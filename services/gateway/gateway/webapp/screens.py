"""Pure rules of the back office's work screens (imports, privacy requests, users,
federations, segments, campaigns): what a page shows and how a form's input becomes an
API call. No I/O here (gateway.webapp.screens_service calls the API)."""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tribune_shared.auth import Role

#: the menu's links for each role. Only what the menu lists, never who may: the API
#: decides (a page it refuses is the 403 page), this only spares a volunteer links that
#: would all lead there.
MENU: Mapping[str, tuple[str, ...]] = {
    Role.admin: ("imports", "duplicates", "segments", "campaigns", "users", "federations"),
    Role.secretary: ("imports", "duplicates", "segments", "campaigns", "federations"),
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
    "merged": "notice.merged",
    "deleted": "notice.deleted",
    "segment_created": "notice.segment_created",
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


# ---------------------------------------------------------------- segment editing

#: who may change a segment (contacts.segments_api.may_edit; the admin always may): the
#: page shows the forms to them only, the API still decides (a unit test holds them equal)
SEGMENT_EDITORS = (Role.admin.value, Role.secretary.value, Role.campaign_manager.value)
#: who may merge contacts (contacts.import_api.may_merge)
MERGERS = (Role.admin.value, Role.secretary.value)
#: the filter form's choices (contacts.filter_language: TagsNode.match, GEO_FIELDS)
TAG_MATCHES = ("any", "all", "none")
GEO_FIELDS = ("postcode", "commune_insee", "department", "constituency", "polling_station")
#: has_email / has_phone: either way, with, without
PRESENCE = ("", "yes", "no")
#: the filter form's choices, as its template (_segment_form.html) reads them: the new and
#: the edit pages render the one form
SEGMENT_FORM_CHOICES: dict[str, tuple[str, ...]] = {
    "tag_matches": TAG_MATCHES,
    "geo_fields": GEO_FIELDS,
    "presence": PRESENCE,
}
#: what the form's filter fields may hold (the API has its own, smaller, limits)
MAX_FILTER_JSON_CHARS = 20_000


@dataclass(frozen=True)
class SegmentForm:
    """A segment's edit form. The filter is the form's fields (AND of: tags, one
    geography, has an email, has a phone), or, for a filter they cannot say (an "or", a
    custom field, a date...), its JSON as the API takes it."""

    name: str = ""
    description: str = ""
    tags_match: str = "any"
    tags: str = ""
    geo_field: str = "postcode"
    geo_values: str = ""
    has_email: str = ""
    has_phone: str = ""
    #: set: the filter is edited as JSON (the fields above are not read)
    filter_json: str | None = None
    version: int | None = None

    @classmethod
    def of_segment(cls, segment: Mapping[str, Any]) -> SegmentForm:
        """The form filled with a segment as the API gives it."""
        version = segment.get("version")
        base = cls(
            name=str(segment.get("name") or ""),
            description=str(segment.get("description") or ""),
            version=version if isinstance(version, int) else None,
        )
        flt = segment.get("filter")
        fields = _filter_fields(flt)
        if fields is None:
            return replace(base, filter_json=json.dumps(flt, ensure_ascii=False, indent=2))
        return replace(base, **fields)

    @classmethod
    def read(cls, values: Mapping[str, str | None]) -> SegmentForm:
        """The form as posted (a choice it does not offer reads as its default)."""

        def one_of(name: str, allowed: tuple[str, ...]) -> str:
            value = values.get(name) or ""
            return value if value in allowed else allowed[0]

        version = values.get("version") or ""
        raw_json = values.get("filter_json")
        return cls(
            name=values.get("name") or "",
            description=values.get("description") or "",
            tags_match=one_of("tags_match", TAG_MATCHES),
            tags=values.get("tags") or "",
            geo_field=one_of("geo_field", GEO_FIELDS),
            geo_values=values.get("geo_values") or "",
            has_email=one_of("has_email", PRESENCE),
            has_phone=one_of("has_phone", PRESENCE),
            filter_json=None if raw_json is None else raw_json[:MAX_FILTER_JSON_CHARS],
            version=int(version) if version.isdigit() and len(version) <= 18 else None,
        )

    def nodes(self) -> list[tuple[str, dict[str, Any]]]:
        """(form field, filter node) of each condition the fields hold, in form order."""
        found: list[tuple[str, dict[str, Any]]] = []
        tags = [t.strip() for t in self.tags.split(",") if t.strip()]
        if tags:
            found.append(("tags", {"op": "tags", "match": self.tags_match, "tags": tags}))
        values = [v for v in re.split(r"[,\s]+", self.geo_values) if v]
        if values:
            found.append(("geo", {"op": "geo", "field": self.geo_field, "values": values}))
        for name, presence in (("has_email", self.has_email), ("has_phone", self.has_phone)):
            if presence:
                found.append((name, {"op": name, "value": presence == "yes"}))
        return found

    def filter(self) -> Any:
        """The filter to send (the JSON as typed when edited as JSON: the API checks it);
        ``ValueError`` for JSON that does not parse."""
        if self.filter_json is not None:
            return json.loads(self.filter_json)
        nodes = [node for _, node in self.nodes()]
        if not nodes:
            return {"op": "all"}
        return nodes[0] if len(nodes) == 1 else {"op": "and", "of": nodes}

    def create_body(self) -> dict[str, Any]:
        """The POST /api/v1/segments body: the new segment in the caller's federation
        (``ValueError``: the JSON does not parse)."""
        return {"name": self.name, "description": self.description, "filter": self.filter()}

    def patch_body(self) -> dict[str, Any]:
        """The PATCH /api/v1/segments/{id} body (``ValueError``: the JSON does not parse)."""
        body = self.create_body()
        if self.version is not None:
            body["version"] = self.version
        return body

    def field_of(self, api_field: str) -> str:
        """The form field an API error's field names (``filter.of.1.values`` -> the
        geography's values): where the reason is shown. "" for the page as a whole."""
        if api_field in ("name", "description"):
            return api_field
        parts = api_field.split(".")
        if parts[0] != "filter":
            return ""
        if self.filter_json is not None:
            return "filter_json"
        kinds = [kind for kind, _ in self.nodes()]
        rest = parts[1:]
        if len(kinds) > 1 and rest[:1] == ["of"] and len(rest) > 1 and rest[1].isdigit():
            index = int(rest[1])
            kind, rest = (kinds[index] if index < len(kinds) else ""), rest[2:]
        elif len(kinds) == 1:
            kind = kinds[0]
        else:
            return "filter"
        if kind == "tags":
            return "tags_match" if rest[:1] == ["match"] else "tags"
        if kind == "geo":
            return "geo_field" if rest[:1] == ["field"] else "geo_values"
        return kind or "filter"

    def errors_by_field(self, errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(self.field_of(f), r) for f, r in errors]


def _filter_fields(flt: Any) -> dict[str, Any] | None:
    """The form fields that say ``flt`` exactly, or None when they cannot."""
    if not isinstance(flt, Mapping):
        return None
    if flt.get("op") == "all":
        return {}
    nodes = flt.get("of") if flt.get("op") == "and" else [flt]
    if not isinstance(nodes, list) or not nodes:
        return None
    fields: dict[str, Any] = {}
    for node in nodes:
        op = node.get("op") if isinstance(node, Mapping) else None
        if op == "tags" and "tags" not in fields and node.get("match") in TAG_MATCHES:
            if not all(isinstance(t, str) and "," not in t for t in node.get("tags") or []):
                return None
            fields["tags_match"], fields["tags"] = node["match"], ", ".join(node["tags"])
        elif op == "geo" and "geo_values" not in fields and node.get("field") in GEO_FIELDS:
            if not all(re.fullmatch(r"[^,\s]+", str(v)) for v in node.get("values") or []):
                return None
            fields["geo_field"] = node["field"]
            fields["geo_values"] = ", ".join(str(v) for v in node.get("values") or [])
        elif op in ("has_email", "has_phone") and op not in fields:
            if not isinstance(node.get("value"), bool):
                return None
            fields[op] = "yes" if node["value"] else "no"
        else:
            return None
    return fields
