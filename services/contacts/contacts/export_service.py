"""Export: the contacts of a filter or a segment as CSV, streamed, for the roles allowed to
export, every export recorded in an audit trail (who, when, what, how many rows, from
where)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse
from tribune_shared.auth import Identity
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import Forbidden, Refused
from tribune_shared.events import utcnow
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from contacts.domain import InvalidFields
from contacts.export_csv import BOM, encode_rows, header, row
from contacts.filter_language import compile_filter, dump_filter
from contacts.segment_service import SegmentsService
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import ExportAudit

log = get_logger(__name__)


@dataclass(frozen=True)
class ExportRequest:
    filter: Any = None
    segment_id: str | None = None
    delimiter: str = ","


@dataclass
class Export:
    id: str
    filename: str
    chunks: AsyncIterator[bytes]


def export_id() -> str:
    """Time-ordered (newest last in id order) and unique: 12 hex of milliseconds + 20 random."""
    return f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:20]}"


class ExportsService:
    def __init__(
        self,
        settings: ContactsSettings,
        store: Store,
        contacts: ContactsService,
        segments: SegmentsService,
    ) -> None:
        self.settings = settings
        self.audit = ExportAudit(store)
        self.contacts = contacts
        self.segments = segments

    async def start(
        self, identity: Identity, request: ExportRequest, headers: Mapping[str, str]
    ) -> Export:
        """Check, count and record an export; its rows stream from ``Export.chunks``."""
        if identity.role not in self.settings.export_roles:
            raise Forbidden(f"role {identity.role} may not export contacts")
        if (request.filter is None) == (request.segment_id is None):
            raise InvalidFields([("filter", "give either a filter or a segment_id")])
        segment_name = None
        if request.segment_id is not None:
            segment, flt, scope = await self.segments.resolve(identity, request.segment_id)
            segment_name = segment.name
        else:
            flt = await self.segments.parse(identity, request.filter)
            scope = identity.scope()
        conditions = [compile_filter(flt)]
        expected = await self.contacts.contacts.count(scope, conditions)
        limit = self.settings.export_max_rows
        if expected > limit:
            raise Refused(
                f"{expected} contacts match, more than the export limit of {limit}: "
                "narrow the filter",
                matching=expected,
                limit=limit,
            )
        custom_names = sorted({d.name for d in await self.contacts.custom_fields.visible(identity)})
        client = ClientInfo.from_headers(headers)
        started = utcnow()
        record: dict[str, Any] = {
            "_id": export_id(),
            "federation_id": identity.federation_id,
            "federation_path": identity.federation_path,
            "user_id": identity.user_id,
            "user_email": identity.email,
            "role": identity.role.value,
            "started_at": started,
            "finished_at": None,
            "status": "started",
            "filter": dump_filter(flt),
            "segment_id": request.segment_id,
            "segment_name": segment_name,
            "expected_rows": expected,
            "row_count": None,
            "client_ip": client.ip,
            "user_agent": client.user_agent,
        }
        await self.audit.started(record)
        log.info(
            "contacts.export_started",
            export_id=record["_id"],
            rows=expected,
            segment_id=request.segment_id,
        )
        filename = f"contacts-{started:%Y%m%d-%H%M%S}.csv"
        chunks = self._stream(
            identity, record["_id"], scope, conditions, custom_names, request.delimiter
        )
        return Export(record["_id"], filename, chunks)

    async def _stream(
        self,
        identity: Identity,
        export_id: str,
        scope: dict[str, Any],
        conditions: list[dict[str, Any]],
        custom_names: list[str],
        delimiter: str,
    ) -> AsyncIterator[bytes]:
        rows, status = 0, "failed"
        batch: list[list[str]] = []
        limit, size = self.settings.export_max_rows, self.settings.export_batch_size
        try:
            yield (BOM + encode_rows([header(custom_names)], delimiter)).encode()
            async for contact in self.contacts.contacts.stream(scope, conditions, batch_size=size):
                if rows >= limit:  # more appeared since the count: never exceed the limit
                    break
                # a role restricted to the contacts' names (contacts.field_view) exports
                # what it may see: the hidden columns stay empty
                batch.append(row(self.contacts.view(identity, contact), custom_names))
                rows += 1
                if len(batch) >= size:
                    yield encode_rows(batch, delimiter).encode()
                    batch = []
            if batch:
                yield encode_rows(batch, delimiter).encode()
            status = "completed"
        except (GeneratorExit, asyncio.CancelledError):
            status = "aborted"
            raise
        finally:
            try:
                await asyncio.shield(
                    self.audit.finished(export_id, rows=rows, status=status, finished_at=utcnow())
                )
            except Exception as exc:  # the audit row says "started": still a trace
                log.warning("contacts.export_audit_failed", export_id=export_id, error=repr(exc))
            log.info("contacts.export_finished", export_id=export_id, rows=rows, status=status)

    async def audit_page(
        self, identity: Identity, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        docs, more = await self.audit.page(identity, limit=limit, after=after)
        items = [{**d, "id": d["_id"]} for d in docs]
        return items, items[-1]["id"] if more else None


def csv_response(export: Export) -> StreamingResponse:
    return StreamingResponse(
        export.chunks,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "Cache-Control": "no-store",
            "X-Export-Id": export.id,
        },
    )
