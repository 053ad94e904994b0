"""Segments: saved filters of a federation (the filter language of contacts.filter_language),
and their preview (how many contacts match, and a few of them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import Conflict, Forbidden, NotFound, Refused
from tribune_shared.store import Store, subtree_filter

from contacts.domain import InvalidFields, clean_text, fold
from contacts.field_view import ContactView, hidden_filter_nodes
from contacts.filter_language import Filter, compile_filter, dump_filter, parse_filter
from contacts.service import ContactsService, _now_ms
from contacts.settings import ContactsSettings
from contacts.store import SegmentStore

MAX_NAME = 100
MAX_DESCRIPTION = 2_000


class Segment(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    federation_id: str
    federation_path: str
    name: str
    description: str
    filter: dict[str, Any]
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class Preview(BaseModel):
    count: int
    sample: list[ContactView]


def _segment(doc: dict[str, Any]) -> Segment:
    return Segment.model_validate({**doc, "id": doc["_id"]})


def _name(value: str) -> str:
    name = clean_text(value)
    if not name:
        raise InvalidFields([("name", "must not be blank")])
    if len(name) > MAX_NAME:
        raise InvalidFields([("name", f"must be at most {MAX_NAME} characters")])
    return name


def _description(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_DESCRIPTION:
        raise InvalidFields([("description", f"must be at most {MAX_DESCRIPTION} characters")])
    return value


class SegmentsService:
    def __init__(self, settings: ContactsSettings, store: Store, contacts: ContactsService) -> None:
        self.settings = settings
        self.segments = SegmentStore(store)
        self.contacts = contacts

    async def parse(self, identity: Identity, raw: Any, field: str = "filter") -> Filter:
        """A filter from JSON, bounded (settings) and checked against what the caller may
        see; 422 with the path of the bad node, 404 for a federation outside the subtree."""
        flt = parse_filter(raw, self.settings.filter_limits, field=field)
        await self.contacts.check_filter(identity, flt, field)
        if not self.contacts.sees_details(identity):
            # a filter is an oracle: comparing a field one may not see reveals it
            hidden = sorted(hidden_filter_nodes(dump_filter(flt), field))
            if hidden:
                raise Forbidden(
                    f"role {identity.role} may not filter on fields it does not see",
                    field=hidden[0],
                    fields=hidden,
                )
        return flt

    async def create(
        self,
        identity: Identity,
        *,
        name: str,
        description: str,
        raw_filter: Any,
        federation_id: str | None = None,
    ) -> Segment:
        name, description = _name(name), _description(description)
        flt = await self.parse(identity, raw_filter)
        fed_id, fed_path = await self.contacts.directory.resolve(identity, federation_id)
        if await self.segments.count(fed_id) >= self.settings.max_segments_per_federation:
            raise Refused(
                f"a federation may keep at most {self.settings.max_segments_per_federation} "
                "segments"
            )
        now = _now_ms()
        doc = {
            "_id": uuid.uuid4().hex,
            "federation_id": fed_id,
            "federation_path": fed_path,
            "name": name,
            "name_key": fold(name),
            "description": description,
            "filter": dump_filter(flt),
            "version": 1,
            "created_at": now,
            "created_by": identity.user_id,
            "updated_at": now,
            "updated_by": identity.user_id,
        }
        try:
            await self.segments.insert(doc)
        except DuplicateKeyError:
            raise Conflict(
                "a segment with this name already exists in this federation", field="name"
            ) from None
        return _segment(doc)

    async def get(self, identity: Identity, segment_id: str) -> Segment:
        doc = await self.segments.get(identity, segment_id)
        if doc is None:
            raise NotFound("segment not found")
        return _segment(doc)

    async def list_page(
        self, identity: Identity, *, limit: int, cursor: str | None
    ) -> tuple[list[Segment], str | None]:
        docs, more = await self.segments.page(identity, limit=limit, after=cursor)
        items = [_segment(d) for d in docs]
        return items, items[-1].id if more else None

    async def update(
        self,
        identity: Identity,
        segment_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        raw_filter: Any = None,
        version: int | None = None,
    ) -> Segment:
        """Change the name, description or filter (409 if ``version`` is not the stored one)."""
        doc = await self.segments.get(identity, segment_id)
        if doc is None:
            raise NotFound("segment not found")
        if version is not None and version != doc["version"]:
            raise Conflict(
                "the segment changed since you read it: read it again",
                current_version=doc["version"],
            )
        changed = dict(doc)
        if name is not None:
            changed["name"] = _name(name)
            changed["name_key"] = fold(changed["name"])
        if description is not None:
            changed["description"] = _description(description)
        if raw_filter is not None:
            changed["filter"] = dump_filter(await self.parse(identity, raw_filter))
        if changed == doc:
            return _segment(doc)
        changed.update(
            version=doc["version"] + 1, updated_at=_now_ms(), updated_by=identity.user_id
        )
        try:
            replaced = await self.segments.replace(changed, doc["version"])
        except DuplicateKeyError:
            raise Conflict(
                "a segment with this name already exists in this federation", field="name"
            ) from None
        if not replaced:
            raise Conflict("the segment changed since you read it: read it again")
        return _segment(changed)

    async def delete(self, identity: Identity, segment_id: str) -> None:
        await self.get(identity, segment_id)
        await self.segments.delete(segment_id)

    # ------------------------------------------------------------ using a segment

    async def resolve(
        self, identity: Identity, segment_id: str
    ) -> tuple[Segment, Filter, dict[str, Any]]:
        """A segment, its filter, and its scope: the segment's federation subtree (inside
        the caller's, or the caller would not see the segment)."""
        segment = await self.get(identity, segment_id)
        flt = parse_filter(segment.filter, self.settings.filter_limits)
        return segment, flt, subtree_filter(segment.federation_path)

    async def preview(
        self,
        identity: Identity,
        flt: Filter,
        scope: dict[str, Any],
        size: int | None,
        client: ClientInfo | None = None,
    ) -> Preview:
        """How many contacts of the scope match, and the first ``size`` of them (id order)
        as the caller's role may see them; a sample counts as a page read (bulk_reads)."""
        size = self.settings.segment_preview_default_size if size is None else size
        if not 0 <= size <= self.settings.segment_preview_max_size:
            raise InvalidFields(
                [("size", f"must be between 0 and {self.settings.segment_preview_max_size}")]
            )
        conditions = [compile_filter(flt)]
        count = await self.contacts.contacts.count(scope, conditions)
        sample: list[ContactView] = []
        if size:
            found, _ = await self.contacts.contacts.page(
                identity, limit=size, scope=scope, conditions=conditions
            )
            await self.contacts.bulk_reads.count(
                identity, pages=1, contacts=len(found), client=client
            )
            sample = [self.contacts.view(identity, c) for c in found]
        return Preview(count=count, sample=sample)
