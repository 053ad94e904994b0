"""The kernel's expiry sweep: documents past their collection's retention are deleted in
bounded batches through the date index ``IndexSpec(expire_after_seconds=...)`` declares.

Why not TTL indexes: the local store's TTL monitor (SecantusDB, as of 0.7) reads and
decodes every document of each TTL collection once a minute while it holds the store's
global lock, so every other command of every service waits for it: about 2 s per 200,000
documents kept (measured: ``bench/expiry_stall.py``), and the kept
documents grow with use (30 days of processed event ids, a year of access audit). This
sweep reads only what expired, through the index, on MongoDB and the local store alike.

Semantics are a TTL index's: a document expires when its field holds a date (or an array
with one) older than ``now - expire_after_seconds``; a missing or non-date field never
expires (an unpublished outbox row has no ``published_at``). Deletion is eventual (within
``expiry_interval_seconds``), so readers that must not see an expired document check the
date themselves, as they did with TTL. Every process that declares the indexes sweeps them
(API replicas and workers): the deletes are idempotent, and a sweep with nothing expired is
one index probe per collection.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from tribune_shared.events import utcnow
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

if TYPE_CHECKING:
    from tribune_shared.worker import BackgroundTask

log = get_logger(__name__)

EXPIRED = Counter(
    "tribune_expired_documents_total",
    "Documents the kernel's expiry sweep deleted, by collection",
    ["service", "collection"],
)


def expired(date_field: str, cutoff: datetime, last: datetime | None = None) -> dict[str, Any]:
    """What expired by ``cutoff`` (and, for a batch, dates up to ``last``): a range of the
    date index, which the local store's planner reads through the index."""
    bounds: dict[str, Any] = {"$lt": cutoff}
    if last is not None:
        bounds["$lte"] = last
    return {date_field: bounds}


def _expired_dates(values: list[Any], cutoff: datetime) -> list[datetime]:
    """The expired dates of the values read (a value may be an array of dates)."""
    out: list[datetime] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, datetime) and item < cutoff:
                out.append(item)
    return out


async def sweep(
    store: Store, *, batch_size: int, max_documents: int, now: datetime | None = None
) -> dict[str, int]:
    """One pass over ``store.expiry``: for each collection, delete what expired, a batch
    (``batch_size`` ids read through the index, then one delete) at a time, up to
    ``max_documents`` per collection (the rest waits for the next pass, so a backlog never
    holds the store in one long statement). Returns the documents deleted per collection."""
    now = now or utcnow()
    deleted: dict[str, int] = {}
    for (collection, date_field), after in sorted(store.expiry.items()):
        cutoff = now - timedelta(seconds=after)
        done = 0
        while done < max_documents:
            limit = min(batch_size, max_documents - done)
            found = [
                d.get(date_field)
                async for d in store[collection]
                .find(expired(date_field, cutoff), {date_field: 1})
                .sort(date_field, 1)
                .limit(limit)
            ]
            if not found:
                break
            # The batch is deleted as a range of the index, up to the newest date read: a
            # query naming the ids beside the date is a full scan on the local store, and
            # a document renewed since it was read (a later date) is no longer in range.
            last = max(_expired_dates(found, cutoff))
            result = await store[collection].delete_many(expired(date_field, cutoff, last))
            done += result.deleted_count
            if len(found) < limit:
                break
            await asyncio.sleep(0)  # a backlog's batches leave the loop to the others
        if done:
            deleted[collection] = done
            EXPIRED.labels(store.settings.service_name, collection).inc(done)
    if deleted:
        log.info("expiry.swept", deleted=deleted)
    return deleted


def expiry_task(store: Store, settings: ServiceSettings) -> BackgroundTask:
    """A process's background task sweeping its store's expiry rules every
    ``expiry_interval_seconds`` (the rules ``ensure_indexes`` recorded)."""
    from tribune_shared.worker import periodic  # the worker imports us

    async def once() -> None:
        await sweep(
            store,
            batch_size=settings.expiry_batch_size,
            max_documents=settings.expiry_max_documents_per_sweep,
        )

    return periodic("expiry.sweep", settings.expiry_interval_seconds, once)
