"""The worker loop resolving campaign audiences, page by page.

Each page of matching contacts becomes one ``campaign-recipient-selected`` event per contact
(one packed outbox row for the page) committed in the same transaction as the job's cursor:
a worker killed mid-job leaves its lease to run out, the next one resumes after the last
committed page, and no contact is selected twice. The last transaction closes the job with
``campaign-audience-resolved``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    CampaignAudienceResolvedV1,
    CampaignRecipientSelectedV1,
    Channel,
)
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from contacts.audiences.domain import (
    AudienceError,
    audience_scope,
    has_address,
    next_position,
    resume,
)
from contacts.audiences.store import AudienceStore
from contacts.filter_language import Filter, FilterError, evaluate, parse_filter
from contacts.import_jobs import worker_id
from contacts.settings import ContactsSettings

log = get_logger(__name__)

#: ranges read in a row before the job's cursor (and what they selected) is saved, even if
#: the page is not full (which renews the lease); a worker that dies reads at most these again
SAVE_EVERY_READS = 64


class _LeaseLost(Exception):
    """Another worker took the job over (this one was too slow to renew its lease)."""


class AudienceRunner:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.audiences = AudienceStore(store)
        self.outbox = Outbox(store)

    def _lease(self):
        return utcnow() + timedelta(seconds=self.settings.audience_lease_seconds)

    async def selection(
        self, job: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable[[Mapping[str, Any]], bool]]:
        """The subtree of a job's audience and which of its contacts are in it, or
        AudienceError (why not)."""
        address = has_address(Channel(job["channel"]), job["needs_address"])
        segment_path = None
        flt: Filter | None = None
        if job.get("segment_id"):
            segment = await self.audiences.segment(job["segment_id"])
            if segment is None:
                raise AudienceError("the segment does not exist (any more)")
            try:
                flt = parse_filter(segment["filter"], self.settings.filter_limits)
            except FilterError as exc:  # saved under looser limits than today's
                raise AudienceError(f"the segment's filter is no longer valid: {exc}") from exc
            segment_path = segment["federation_path"]
        scope = audience_scope(job["federation_path"], segment_path)
        if flt is None:
            return scope, address
        segment_filter = flt
        return scope, lambda doc: address(doc) and evaluate(segment_filter, doc)

    def _envelope(self, job: dict[str, Any], event, federation_id: str, path: str) -> Envelope:
        envelope = new_envelope(
            event,
            producer=self.settings.service_name,
            federation_id=federation_id,
            federation_path=path,
            correlation_id=job["correlation_id"],
        )
        return envelope.model_copy(update={"causation_id": job["cause_event_id"]})

    async def run(self, job: dict[str, Any], owner: str, stop: asyncio.Event | None = None) -> None:
        """Resolve one claimed job to its end (or until ``stop``: the job is released)."""
        job_id = job["_id"]
        try:
            scope, wanted = await self.selection(job)
        except AudienceError as exc:
            await self._finish(job, owner, recipients=job.get("selected", 0), error=str(exc))
            return
        size = self.settings.audience_page_size
        paths = await self.audiences.paths(scope)
        position = resume(job.get("cursor"), paths)
        selected: int = job.get("selected", 0)
        page: list[dict[str, Any]] = []  # selected since the cursor was last saved
        unsaved = 0  # ranges read since the cursor was last saved
        while position is not None:
            if stop is not None and stop.is_set():
                await self.audiences.release(job_id, owner)
                return
            limit = size - len(page)
            read = await self.audiences.read(position, limit=limit)
            page += [doc for doc in read if wanted(doc)]
            after = next_position(position, read, limit, paths)
            unsaved += 1
            # A page is committed once it is full, however many ranges it took (a small
            # federation's 256 ranges hold a few contacts each: one transaction, outbox row
            # and publication per range cost the store more than the reads), at the end,
            # and every SAVE_EVERY_READS ranges (which renews the lease). A worker that
            # dies reads the uncommitted ranges again, selecting no one twice.
            if len(page) >= size or after is None or unsaved >= SAVE_EVERY_READS:
                envelopes = [
                    self._envelope(
                        job,
                        CampaignRecipientSelectedV1(
                            campaign_id=job_id, contact_id=doc["_id"], position=selected + i
                        ),
                        doc["federation_id"],
                        doc["federation_path"],
                    )
                    for i, doc in enumerate(page)
                ]
                saved = after or position

                async def write(session: AsyncClientSession, saved=saved, envelopes=envelopes):
                    if not await self.audiences.advance(
                        job_id,
                        owner,
                        cursor=saved,
                        selected=len(envelopes),
                        lease_until=self._lease(),
                        session=session,
                    ):
                        raise _LeaseLost(job_id)
                    if envelopes:
                        await self.outbox.add_batch(session, envelopes)

                try:
                    await self.store.run_transaction(write, what="audience page")
                except _LeaseLost:
                    log.warning("audience.lease_lost", campaign_id=job_id)
                    return
                selected += len(page)
                page, unsaved = [], 0
            position = after
        await self._finish(job, owner, recipients=selected, error=None)

    async def _finish(
        self, job: dict[str, Any], owner: str, *, recipients: int, error: str | None
    ) -> None:
        resolved = self._envelope(
            job,
            CampaignAudienceResolvedV1(
                campaign_id=job["_id"], recipients=recipients, error=error, resolved_at=utcnow()
            ),
            job["federation_id"],
            job["federation_path"],
        )

        async def write(session: AsyncClientSession) -> None:
            ended = await self.audiences.finish(
                job["_id"], owner, error=error, at=utcnow(), session=session
            )
            if ended is not None:
                await self.outbox.add(session, resolved)

        await self.store.run_transaction(write, what="audience resolved")
        log.info("audience.resolved", campaign_id=job["_id"], recipients=recipients, error=error)


async def run_audience_jobs(settings: ContactsSettings, store: Store, stop: asyncio.Event) -> None:
    """The worker's audience loop: take a pending job (or one whose worker died), resolve
    it, repeat until SIGTERM."""
    runner = AudienceRunner(settings, store)
    owner = worker_id()
    while not stop.is_set():
        try:
            now = utcnow()
            job = await runner.audiences.claim(owner, now, runner._lease())
            if job is not None:
                await runner.run(job, owner, stop)
                continue
        except Exception as exc:  # the store is down: try again later
            log.warning("audiences.loop_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.audience_poll_interval_seconds)
