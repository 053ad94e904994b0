"""Bulk reads count as exports (issue 9): reading more than ``CONTACTS_BULK_READ_MAX_PAGES``
pages or ``CONTACTS_BULK_READ_MAX_CONTACTS`` contacts within a window of
``CONTACTS_BULK_READ_WINDOW_SECONDS`` (one hour), through lists, segment previews or
single reads, is what an export gives, so it is held to the export's rules:

- a role allowed to export (``CONTACTS_EXPORT_ROLES``) goes on reading, and the bulk read
  is recorded in the export trail (one entry per user and window, ``kind: bulk_read``,
  with the pages and contacts read: brought up to date each time the totals pass another
  multiple of a limit, so a long read costs one trail write per limit's worth, not one per
  page);
- any other role is refused with **429** and ``Retry-After`` (the end of the window): the
  request is valid and the role may read contacts, just not that many in that time
  (403 would say the role may never list contacts). The body says why
  (``reason: bulk_read_limit``) and gives the limits.

Counters are kept per user in the contacts store, one document per user and window,
incremented atomically once per request by everything the request returned. The window
is fixed (aligned on multiples of its length): at a window boundary a user may read up
to twice the limit in a short time, a bound the trail still records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tribune_shared.auth import Identity
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import ServiceUnavailable, TooManyRequests
from tribune_shared.events import utcnow
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from contacts.settings import ContactsSettings
from contacts.store import ExportAudit, ReadCounters

log = get_logger(__name__)

BULK_READ = "bulk_read"


@dataclass(frozen=True)
class ReadLimits:
    window_seconds: int
    max_pages: int
    max_contacts: int

    def exceeded(self, pages: int, contacts: int) -> bool:
        return pages > self.max_pages or contacts > self.max_contacts

    def steps(self, pages: int, contacts: int) -> tuple[int, int]:
        """How many times the totals went past each limit (the trail is written when one
        of these grows: once per limit's worth of reading, not on every page)."""
        return pages // (self.max_pages + 1), contacts // (self.max_contacts + 1)


def window_of(now: datetime, seconds: int) -> tuple[datetime, datetime]:
    """The fixed window holding ``now``: [start, end)."""
    epoch = int(now.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % seconds, UTC)
    return start, start + timedelta(seconds=seconds)


def trail_id(user_id: str, window_start: datetime) -> str:
    """The export-trail id of a user's bulk read in a window: the shape and order of
    export ids (12 hex of milliseconds, 20 hex), one per user and window."""
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:20]
    return f"{int(window_start.timestamp() * 1000):012x}{digest}"


class BulkReads:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.limits = ReadLimits(
            window_seconds=settings.bulk_read_window_seconds,
            max_pages=settings.bulk_read_max_pages,
            max_contacts=settings.bulk_read_max_contacts,
        )
        self.counters = ReadCounters(store)
        self.audit = ExportAudit(store)

    async def count(
        self,
        identity: Identity,
        *,
        pages: int,
        contacts: int,
        client: ClientInfo | None = None,
    ) -> None:
        """Count what one request is about to return; raise 429 when that makes it a
        bulk read the caller's role may not do, or record it as an export if it may."""
        now = utcnow()
        start, end = window_of(now, self.limits.window_seconds)
        first = {
            "user_id": identity.user_id,
            "federation_path": identity.federation_path,
            "window_start": start,
            "expires_at": end,
        }
        key = f"{identity.user_id}:{int(start.timestamp())}"
        total_pages, total_contacts = await self.counters.add(
            key, first, pages=pages, contacts=contacts
        )
        if not self.limits.exceeded(total_pages, total_contacts):
            return
        if identity.role not in self.settings.export_roles:
            retry_after = max(1, int((end - now).total_seconds()) + 1)
            log.info(
                "contacts.bulk_read_refused",
                user_id=identity.user_id,
                pages=total_pages,
                contacts=total_contacts,
            )
            raise TooManyRequests(
                f"role {identity.role} may not read more than {self.limits.max_contacts} "
                f"contacts or {self.limits.max_pages} pages in {self.limits.window_seconds} s: "
                "that is an export, which the role may not do",
                retry_after=retry_after,
                reason="bulk_read_limit",
                max_contacts=self.limits.max_contacts,
                max_pages=self.limits.max_pages,
                window_seconds=self.limits.window_seconds,
            )
        before = self.limits.steps(total_pages - pages, total_contacts - contacts)
        if self.limits.steps(total_pages, total_contacts) != before:
            await self._record(identity, start, now, total_pages, total_contacts, client)

    async def _record(
        self,
        identity: Identity,
        start: datetime,
        now: datetime,
        pages: int,
        contacts: int,
        client: ClientInfo | None,
    ) -> None:
        client = client or ClientInfo()
        first: dict[str, Any] = {
            "kind": BULK_READ,
            "federation_id": identity.federation_id,
            "federation_path": identity.federation_path,
            "user_id": identity.user_id,
            "user_email": identity.email,
            "role": identity.role.value,
            "started_at": now,
            "status": BULK_READ,
            "filter": {},
            "segment_id": None,
            "segment_name": None,
            "window_start": start,
            "client_ip": client.ip,
            "user_agent": client.user_agent,
        }
        try:
            await self.audit.bulk_read(
                trail_id(identity.user_id, start), first, pages=pages, rows=contacts, seen_at=now
            )
        except Exception as exc:  # nobody reads in bulk unrecorded
            log.error("contacts.bulk_read_audit_failed", error=repr(exc))
            raise ServiceUnavailable("the export trail is unavailable; try again later") from exc
