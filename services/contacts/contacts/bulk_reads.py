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
incremented atomically by everything the requests returned. The window is fixed (aligned
on multiples of its length): at a window boundary a user may read up to twice the limit in
a short time, a bound the trail still records.

**A local pre-budget.** A counter written on every read was the costliest command of a
contact read (2026-12-04, bench/person_view.py: 8.1 against 11.0 ms of store CPU per
person view without it, p99 168 against 224 ms; bench/gateway_proxy.py: the contacts API
answered 807 reads/s directly against 560). So a process adds a user's reads to the store
once it has gathered ``CONTACTS_BULK_READ_SYNC_SHARE`` of a limit (5 %: 5 pages or 50
contacts by default) or ``CONTACTS_BULK_READ_SYNC_SECONDS`` have passed, and at once when a
read would pass a limit or another limit's worth (the refusal and the trail are decided on
the store's totals, as before). The price, written down: with R API processes a user may
read up to R x that share beyond a limit before being refused, and a process that dies
forgets at most that share of its reads.
"""

from __future__ import annotations

import hashlib
import math
import time
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


@dataclass
class Tally:
    """One user's reads in one window as this process knows them."""

    window_start: datetime
    #: the store's totals at the last sync (every process's reads)
    known_pages: int = 0
    known_contacts: int = 0
    #: reads answered here and not added to the store yet
    unsent_pages: int = 0
    unsent_contacts: int = 0
    #: reads on their way to the store
    sending_pages: int = 0
    sending_contacts: int = 0
    synced_at: float = -math.inf  # monotonic; none yet: the first read syncs

    def estimate(self, pages: int, contacts: int) -> tuple[int, int]:
        """The totals if these reads are answered too."""
        return (
            self.known_pages + self.sending_pages + self.unsent_pages + pages,
            self.known_contacts + self.sending_contacts + self.unsent_contacts + contacts,
        )


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
        share = settings.bulk_read_sync_share
        #: reads gathered here before the store is told (the local pre-budget)
        self.sync_pages = max(1, int(settings.bulk_read_max_pages * share))
        self.sync_contacts = max(1, int(settings.bulk_read_max_contacts * share))
        self.tallies: dict[str, Tally] = {}
        self._window: datetime | None = None  # the window the tallies are of

    def _tally(self, user_id: str, start: datetime) -> tuple[str, Tally]:
        if start != self._window:
            # a new window (the same for every user): the ended ones' tallies go, what
            # they had not sent is within the documented bound
            self.tallies = {k: t for k, t in self.tallies.items() if t.window_start >= start}
            self._window = start
        key = f"{user_id}:{int(start.timestamp())}"
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally(start)
        return key, tally

    def _must_sync(self, tally: Tally, identity: Identity, pages: int, contacts: int) -> bool:
        """Whether these reads are added to the store now rather than gathered here."""
        total = tally.estimate(pages, contacts)
        if self.limits.exceeded(*total) and identity.role not in self.settings.export_roles:
            return True  # refused or not: the store's totals decide
        if self.limits.steps(*total) != self.limits.steps(*tally.estimate(0, 0)):
            return True  # another limit's worth: the trail is brought up to date
        return (
            tally.unsent_pages + pages >= self.sync_pages
            or tally.unsent_contacts + contacts >= self.sync_contacts
            or time.monotonic() - tally.synced_at >= self.settings.bulk_read_sync_seconds
        )

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
        key, tally = self._tally(identity.user_id, start)
        if not self._must_sync(tally, identity, pages, contacts):
            tally.unsent_pages += pages
            tally.unsent_contacts += contacts
            return
        # what was gathered here goes with these reads; the reads answered while this is
        # on its way count on top of it
        sent_pages = tally.unsent_pages + pages
        sent_contacts = tally.unsent_contacts + contacts
        tally.unsent_pages = tally.unsent_contacts = 0
        tally.sending_pages += sent_pages
        tally.sending_contacts += sent_contacts
        first = {
            "user_id": identity.user_id,
            "federation_path": identity.federation_path,
            "window_start": start,
            "expires_at": end,
        }
        try:
            total_pages, total_contacts = await self.counters.add(
                key, first, pages=sent_pages, contacts=sent_contacts
            )
        except BaseException:
            # these reads fail unanswered; the gathered ones were answered: kept for later
            tally.unsent_pages += sent_pages - pages
            tally.unsent_contacts += sent_contacts - contacts
            raise
        finally:
            tally.sending_pages -= sent_pages
            tally.sending_contacts -= sent_contacts
        # the store's totals hold what was sent (and what other processes added); another
        # sync of this process that answered later may already have known more
        tally.known_pages = max(tally.known_pages, total_pages)
        tally.known_contacts = max(tally.known_contacts, total_contacts)
        tally.synced_at = time.monotonic()
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
        before = self.limits.steps(total_pages - sent_pages, total_contacts - sent_contacts)
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
