"""The segment filter language: one definition of "which contacts" for segments, list
filters and exports.

A filter is a JSON tree of nodes, each with an ``op`` (a pydantic discriminated union).
The same filter

- compiles to a MongoDB query on the contacts document shape (``compile_filter``), and
- evaluates on a plain dict of that shape (``evaluate``): the reference the compiled query
  is tested against, and what a service holding its own projection of contacts would
  apply to get exactly the same rules.

Nodes::

    {"op": "all"}                                           every contact
    {"op": "and", "of": [<filter>, ...]}
    {"op": "or", "of": [<filter>, ...]}
    {"op": "not", "filter": <filter>}
    {"op": "tags", "match": "any" | "all" | "none", "tags": ["bénévole", ...]}
    {"op": "geo", "field": "postcode" | "commune_insee" | "department" | "constituency"
                 | "polling_station", "values": ["75011", ...]}
    {"op": "federation", "federation_id": "paris"}          that federation's subtree
    {"op": "custom", "name": "<field>", "cmp": "eq" | "in" | "lt" | "gt" | "exists",
     "value": <string | number> (a list for "in", absent for "exists")}
    {"op": "date", "field": "created_at" | "updated_at", "since": <datetime>,
     "until": <datetime>}                                   since <= t < until (one may be absent)
    {"op": "has_email", "value": true}
    {"op": "has_phone", "value": true}
    {"op": "attended", "kind": "meeting" | "canvassing" | "any", "at_least": 1,
     "since": <datetime>}                                   came to at least N (since: optional)

The document shape (what ``compile_filter`` queries and ``evaluate`` reads)::

    {"federation_path": "/root/paris/", "tags": [str], "email": str (primary, absent if
     none), "phone": str (absent if none), "address": {"postcode", "commune_insee",
     "department", ...}, "constituency": str, "polling_station": str,
     "custom_fields": {name: str | int | float}, "created_at": datetime or ISO string,
     "updated_at": datetime or ISO string, "attendance": [{"k": kind or "any", "n": rank,
     "at": datetime}]}

``attendance`` is the summary contacts.meetings keeps at check-in: for each kind (and
"any"), the person's attended meetings ranked from the most recent (n = 1) with their
start. "At least N since D" is then "the N-th most recent one started at or after D": one
``$elemMatch`` on an indexed array, whatever the count (N is bounded by
``MAX_ATTENDANCE_RANK``, the ranks the summary keeps).

Both sides follow MongoDB's rules where they could differ: comparisons (``lt``/``gt``)
only match values of the same kind (numbers with numbers, strings with strings), a
missing value matches no comparison and ``tags none`` matches a contact without tags.
Text values are compared after the normalisation stored values get (``clean_text``;
tags lowercased, codes uppercased), datetimes at millisecond precision (BSON's).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from tribune_shared.errors import InvalidFields

__all__ = [
    "GEO_FIELDS",
    "MAX_ATTENDANCE_RANK",
    "Filter",
    "FilterError",
    "FilterLimits",
    "clean_text",
    "compile_filter",
    "custom_field_names",
    "custom_nodes",
    "dump_filter",
    "evaluate",
    "federation_nodes",
    "normalise_code",
    "normalise_tag",
    "parse_filter",
]

#: a custom field's name: also a MongoDB path segment, so no dots or dollars
CUSTOM_FIELD_NAME = r"^[a-z][a-z0-9_]{0,39}$"
#: federation ids are segments of federation paths ("/root/paris/")
FEDERATION_ID = r"^[A-Za-z0-9_-]{1,64}$"
#: the most "attended at least N" a filter may ask: the ranks contacts.meetings keeps
MAX_ATTENDANCE_RANK = 100
#: bound on numbers (BSON int64 and exact doubles; nobody counts further in a contact file)
MAX_NUMBER = 1e15

#: geography field of a filter -> path in the contact document
GEO_FIELDS: dict[str, str] = {
    "postcode": "address.postcode",
    "commune_insee": "address.commune_insee",
    "department": "address.department",
    "constituency": "constituency",
    "polling_station": "polling_station",
}


@dataclass(frozen=True)
class FilterLimits:
    """How big a filter may be (each service takes them from its settings): checked on the
    raw JSON before any node is built."""

    max_depth: int = 10
    max_nodes: int = 200
    #: items of one list (tags, values, sub-filters)
    max_values: int = 1_000
    #: characters of one text (a tag, a code, a custom field's value), as sent and as kept
    max_text_length: int = 500


def _max_text(info: ValidationInfo) -> int:
    """The text bound ``parse_filter`` validates with (the default one otherwise)."""
    limits = info.context.get("limits") if isinstance(info.context, dict) else None
    return (limits or FilterLimits()).max_text_length


class FilterError(InvalidFields):
    """422 listing every problem of a filter, each with the path of the bad node."""


# ---------------------------------------------------------------- normalisation

_SPACES = re.compile(r"\s+")


def clean_text(value: str) -> str:
    """NFC-composed, trimmed, inner runs of whitespace collapsed (how text is stored)."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip()


def normalise_tag(value: str) -> str:
    """Tags compare without case or surrounding/double spaces."""
    return clean_text(value).lower()


def normalise_code(value: str) -> str:
    """Postcodes, INSEE codes, departments, constituencies, polling stations: upper case."""
    return clean_text(value).upper()


def _ms(value: datetime) -> datetime:
    """Aware (naive means UTC) and truncated to milliseconds, as BSON stores dates."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _check_number(value: float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if abs(value) > MAX_NUMBER:
        raise ValueError(f"must be between -{MAX_NUMBER:.0e} and {MAX_NUMBER:.0e}")


def _scalar(value: Any, max_text: int) -> str | int | float:
    """A comparable value: a string (normalised like stored text) or a finite number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string or a number")
    if isinstance(value, str):
        value = clean_text(value)
        if not value:
            raise ValueError("must not be blank")
        if len(value) > max_text:
            raise ValueError(f"must be at most {max_text} characters")
        return value
    _check_number(value)
    return value


def _non_blank(values: list[str], normalise, max_text: int) -> list[str]:
    out: dict[str, None] = {}
    for i, raw in enumerate(values):
        value = normalise(raw)
        if not value:
            raise ValueError(f"item {i} must not be blank")
        if len(value) > max_text:
            raise ValueError(f"item {i} must be at most {max_text} characters")
        out.setdefault(value, None)
    return list(out)


# ---------------------------------------------------------------- the nodes


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllNode(_Node):
    """Every contact (of the scope the filter is applied in)."""

    op: Literal["all"]


class AndNode(_Node):
    op: Literal["and"]
    of: list[Filter] = Field(min_length=1)


class OrNode(_Node):
    op: Literal["or"]
    of: list[Filter] = Field(min_length=1)


class NotNode(_Node):
    op: Literal["not"]
    filter: Filter


class TagsNode(_Node):
    op: Literal["tags"]
    match: Literal["any", "all", "none"]
    tags: list[str] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _normalise(cls, tags: list[str], info: ValidationInfo) -> list[str]:
        return _non_blank(tags, normalise_tag, _max_text(info))


class GeoNode(_Node):
    op: Literal["geo"]
    field: Literal["postcode", "commune_insee", "department", "constituency", "polling_station"]
    values: list[str] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _normalise(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return _non_blank(values, normalise_code, _max_text(info))


class FederationNode(_Node):
    """Contacts of a federation and of its descendants."""

    op: Literal["federation"]
    federation_id: str = Field(pattern=FEDERATION_ID)


class CustomNode(_Node):
    op: Literal["custom"]
    name: str = Field(pattern=CUSTOM_FIELD_NAME)
    cmp: Literal["eq", "in", "lt", "gt", "exists"]
    value: Any = None

    @field_validator("value", mode="plain")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        max_text = _max_text(info)
        if isinstance(value, list):
            out: list[str | int | float] = []
            for i, item in enumerate(value):
                try:
                    out.append(_scalar(item, max_text))
                except ValueError as exc:
                    raise ValueError(f"item {i} {exc}") from None
            return out
        return _scalar(value, max_text)

    @model_validator(mode="after")
    def _value_fits_cmp(self) -> CustomNode:
        if self.cmp == "exists":
            if self.value is not None:
                raise ValueError("'exists' takes no value")
        elif self.cmp == "in":
            if not isinstance(self.value, list) or not self.value:
                raise ValueError("'in' needs a non-empty list of values")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"'{self.cmp}' needs one value (a string or a number)")
        return self


class DateNode(_Node):
    op: Literal["date"]
    field: Literal["created_at", "updated_at"]
    since: datetime | None = Field(default=None, description="inclusive")
    until: datetime | None = Field(default=None, description="exclusive")

    @field_validator("since", "until")
    @classmethod
    def _to_ms(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _ms(value)

    @model_validator(mode="after")
    def _a_range(self) -> DateNode:
        if self.since is None and self.until is None:
            raise ValueError("give 'since', 'until' or both")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("'since' must be before 'until'")
        return self


class HasEmailNode(_Node):
    op: Literal["has_email"]
    value: StrictBool = True


class HasPhoneNode(_Node):
    op: Literal["has_phone"]
    value: StrictBool = True


class AttendedNode(_Node):
    """Contacts checked in at ``at_least`` meetings (of ``kind``) starting ``since``."""

    op: Literal["attended"]
    kind: Literal["meeting", "canvassing", "any"] = "any"
    at_least: int = Field(default=1, ge=1, le=MAX_ATTENDANCE_RANK)
    since: datetime | None = Field(default=None, description="inclusive; absent: ever")

    @field_validator("since")
    @classmethod
    def _to_ms(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _ms(value)


Filter = Annotated[
    AllNode
    | AndNode
    | OrNode
    | NotNode
    | TagsNode
    | GeoNode
    | FederationNode
    | CustomNode
    | DateNode
    | HasEmailNode
    | HasPhoneNode
    | AttendedNode,
    Field(discriminator="op"),
]

for _model in (AndNode, OrNode, NotNode):
    _model.model_rebuild()

_ADAPTER: TypeAdapter[Filter] = TypeAdapter(Filter)


# ---------------------------------------------------------------- parsing with limits


def _children(node: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(path suffix, child) of a raw node's sub-filters."""
    of = node.get("of")
    if isinstance(of, list):
        for i, child in enumerate(of):
            yield f"of.{i}", child
    if "filter" in node:
        yield "filter", node["filter"]


def _check_size(raw: Any, limits: FilterLimits, prefix: str) -> None:
    """Depth, node count, list sizes and text lengths, checked on the raw JSON without
    recursion, before any node is built or any text normalised (a hostile tree must not
    cost more than its bounds)."""
    stack: list[tuple[Any, str, int]] = [(raw, prefix, 1)]
    nodes = 0
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, Mapping):
            continue
        nodes += 1
        if depth > limits.max_depth:
            raise FilterError([(path, f"nested deeper than {limits.max_depth} levels")])
        if nodes > limits.max_nodes:
            raise FilterError([(prefix, f"more than {limits.max_nodes} nodes")])
        for key, value in node.items():
            where = _join(path, str(key))
            if isinstance(value, list):
                if len(value) > limits.max_values:
                    raise FilterError([(where, f"more than {limits.max_values} items")])
                texts = enumerate(value)
            else:
                texts = enumerate([value])
            for i, text in texts:
                if isinstance(text, str) and len(text) > limits.max_text_length:
                    at = _join(where, str(i)) if isinstance(value, list) else where
                    reason = f"must be at most {limits.max_text_length} characters"
                    raise FilterError([(at, reason)])
        for suffix, child in _children(node):
            stack.append((child, _join(path, suffix), depth + 1))


def _join(prefix: str, suffix: str) -> str:
    return f"{prefix}.{suffix}" if prefix else suffix


def _error_path(raw: Any, loc: tuple[Any, ...]) -> list[str]:
    """pydantic's location without the union tags it inserts after each filter position
    ("of.0.tags.tags" -> "of.0.tags" for {"op": "tags", "tags": [...]})."""
    out: list[str] = []
    node: Any = raw
    at_filter = True  # the root is a filter position
    parent_key: Any = None
    for part in loc:
        if at_filter and isinstance(node, Mapping) and part == node.get("op"):
            at_filter = False
            continue
        out.append(str(part))
        if isinstance(node, Mapping):
            at_filter = part == "filter" and node.get("op") == "not"
            child = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            at_filter = parent_key == "of"
            child = node[part]
        else:
            at_filter, child = False, None
        parent_key, node = part, child
    return out


def parse_filter(raw: Any, limits: FilterLimits | None = None, *, field: str = "filter") -> Filter:
    """A validated filter from JSON-like data; ``FilterError`` (422) names every bad node
    by its path (``filter.of.1.tags``) and says why."""
    limits = limits or FilterLimits()
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(mode="json")
    _check_size(raw, limits, field)
    try:
        return _ADAPTER.validate_python(raw, context={"limits": limits})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            path = ".".join([field, *_error_path(raw, tuple(err.get("loc", ())))])
            reason = err["msg"].removeprefix("Value error, ")
            problems.append((path, reason))
        raise FilterError(problems) from None


def dump_filter(flt: Filter) -> dict[str, Any]:
    """The JSON form of a filter (what ``parse_filter`` reads back)."""
    return _ADAPTER.dump_python(flt, mode="json", exclude_none=True)


# ---------------------------------------------------------------- walking


def _walk(flt: Filter) -> Iterator[Filter]:
    stack: list[Filter] = [flt]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, AndNode | OrNode):
            stack.extend(node.of)
        elif isinstance(node, NotNode):
            stack.append(node.filter)


def custom_field_names(flt: Filter) -> set[str]:
    return {n.name for n in _walk(flt) if isinstance(n, CustomNode)}


def custom_nodes(flt: Filter, prefix: str = "filter") -> Iterator[tuple[str, CustomNode]]:
    """(path, node) of every custom-field comparison, for services that type-check values
    against their field definitions."""
    yield from _nodes_with_paths(flt, prefix, CustomNode)


def federation_nodes(flt: Filter, prefix: str = "filter") -> Iterator[tuple[str, FederationNode]]:
    """(path, node) of every federation node (services check the caller may see it)."""
    yield from _nodes_with_paths(flt, prefix, FederationNode)


def _nodes_with_paths(flt: Filter, prefix: str, kind: type) -> Iterator[tuple[str, Any]]:
    stack: list[tuple[Filter, str]] = [(flt, prefix)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, kind):
            yield path, node
        if isinstance(node, AndNode | OrNode):
            stack.extend((child, f"{path}.of.{i}") for i, child in enumerate(node.of))
        elif isinstance(node, NotNode):
            stack.append((node.filter, f"{path}.filter"))


# ---------------------------------------------------------------- compile to MongoDB


def compile_filter(flt: Filter) -> dict[str, Any]:
    """The MongoDB query selecting the contacts the filter matches (apply the caller's
    scope beside it)."""
    match flt:
        case AllNode():
            return {}
        case AndNode(of=of):
            return {"$and": [compile_filter(c) for c in of]}
        case OrNode(of=of):
            return {"$or": [compile_filter(c) for c in of]}
        case NotNode(filter=inner):
            return {"$nor": [compile_filter(inner)]}
        case TagsNode(match=match, tags=tags):
            operator = {"any": "$in", "all": "$all", "none": "$nin"}[match]
            return {"tags": {operator: list(tags)}}
        case GeoNode(field=field, values=values):
            return {GEO_FIELDS[field]: {"$in": list(values)}}
        case FederationNode(federation_id=federation_id):
            return {"federation_path": {"$regex": re.escape(f"/{federation_id}/")}}
        case CustomNode(name=name, cmp=cmp, value=value):
            path = f"custom_fields.{name}"
            if cmp == "exists":
                return {path: {"$exists": True, "$ne": None}}
            if cmp == "in":
                return {path: {"$in": list(value)}}
            if cmp == "eq":
                return {path: value}
            return {path: {f"${cmp}": value}}
        case DateNode(field=field, since=since, until=until):
            bounds: dict[str, Any] = {}
            if since is not None:
                bounds["$gte"] = since
            if until is not None:
                bounds["$lt"] = until
            return {field: bounds}
        case HasEmailNode(value=value):
            return _has("email", value)
        case HasPhoneNode(value=value):
            return _has("phone", value)
        case AttendedNode(kind=kind, at_least=at_least, since=since):
            mark: dict[str, Any] = {"k": kind, "n": at_least}
            if since is not None:
                mark["at"] = {"$gte": since}
            return {"attendance": {"$elemMatch": mark}}
    raise TypeError(f"not a filter node: {flt!r}")  # pragma: no cover


def _has(path: str, value: bool) -> dict[str, Any]:
    present = {"$type": "string"}
    return {path: present if value else {"$not": present}}


# ---------------------------------------------------------------- evaluate on a dict


_MISSING = object()


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(a: Any, b: Any) -> bool:
    return (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _ms(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _ms(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _equal(stored: Any, wanted: Any) -> bool:
    return _same_kind(stored, wanted) and stored == wanted


def evaluate(flt: Filter, doc: Mapping[str, Any]) -> bool:
    """Whether a contact (a dict of the document shape) matches the filter; agrees with
    ``compile_filter`` on every document of that shape."""
    match flt:
        case AllNode():
            return True
        case AndNode(of=of):
            return all(evaluate(c, doc) for c in of)
        case OrNode(of=of):
            return any(evaluate(c, doc) for c in of)
        case NotNode(filter=inner):
            return not evaluate(inner, doc)
        case TagsNode(match=match, tags=tags):
            stored = doc.get("tags")
            have = set(stored) if isinstance(stored, list) else set()
            if match == "any":
                return any(t in have for t in tags)
            if match == "all":
                return all(t in have for t in tags)
            return not any(t in have for t in tags)
        case GeoNode(field=field, values=values):
            stored = _get(doc, GEO_FIELDS[field])
            return isinstance(stored, str) and stored in values
        case FederationNode(federation_id=federation_id):
            path = doc.get("federation_path")
            return isinstance(path, str) and f"/{federation_id}/" in path
        case CustomNode(name=name, cmp=cmp, value=value):
            custom = doc.get("custom_fields")
            stored = custom.get(name) if isinstance(custom, Mapping) else None
            if stored is None:
                return False
            if cmp == "exists":
                return True
            if cmp == "eq":
                return _equal(stored, value)
            if cmp == "in":
                return any(_equal(stored, v) for v in value)
            if not _same_kind(stored, value):
                return False
            return stored < value if cmp == "lt" else stored > value
        case DateNode(field=field, since=since, until=until):
            stored = _as_datetime(doc.get(field))
            if stored is None:
                return False
            return (since is None or stored >= since) and (until is None or stored < until)
        case HasEmailNode(value=value):
            return isinstance(doc.get("email"), str) is value
        case HasPhoneNode(value=value):
            return isinstance(doc.get("phone"), str) is value
        case AttendedNode(kind=kind, at_least=at_least, since=since):
            marks = doc.get("attendance")
            for mark in marks if isinstance(marks, list) else ():
                if not isinstance(mark, Mapping) or mark.get("k") != kind:
                    continue
                if not _equal(mark.get("n"), at_least):
                    continue
                at = _as_datetime(mark.get("at"))
                if since is None or (at is not None and at >= since):
                    return True
            return False
    raise TypeError(f"not a filter node: {flt!r}")  # pragma: no cover
