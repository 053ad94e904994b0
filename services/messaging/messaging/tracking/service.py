"""Counting opens and clicks: cheap per hit, batched per flush.

A hit (the pixel fetched, a tracked link followed) is checked (its signed token) and
buffered in memory; the buffer is written every ``tracking_flush_interval_ms`` or as soon
as it holds ``tracking_flush_max_hits``, in one transaction: the first-open/click markers
(one bulk upsert: which hits are their message's first), the campaigns' counters (one
bulk ``$inc``), the per-person marks on the message log and the ``message-opened`` /
``message-clicked`` events (outbox). Per person only when the token says the person had
consented to tracking when the message was sent AND messaging's consent view says the
consent is still granted now; without it, nothing but the aggregate counters and an
expiring marker that names no one.

``message-opened`` goes out for a message's first open only (mail clients fetch images
again each time a message is shown); ``message-clicked`` for every click (each is the
person following a link, with its URL).

A process that stops flushes what it holds; a crash loses at most one interval's hits
(aggregate statistics, not records anyone relies on). While the store does not take
writes the hits stay buffered, up to ``tracking_buffer_max_hits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import Channel, MessageClickedV1, MessageOpenedV1
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.tokens import TokenError

from messaging.campaigns.store import CampaignStore
from messaging.domain import tracking_allowed
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from messaging.tracking.domain import (
    Hit,
    HitKind,
    LinkTracker,
    TrackingTokens,
    first_hits,
    tally,
)
from messaging.tracking.store import TrackingStore

log = get_logger(__name__)

HITS = Counter(
    "tribune_tracking_hits_total",
    "Opens and clicks by outcome: counted (buffered), refused (bad token), dropped (buffer full)",
    ["kind", "outcome"],
)


def tracking_tokens(settings: MessagingSettings) -> TrackingTokens:
    return TrackingTokens(
        settings.unsubscribe_secret, max_url_chars=settings.tracking_max_url_chars
    )


def link_tracker(settings: MessagingSettings) -> LinkTracker:
    """The dispatcher's ``tracked(html, text, ...)`` for these settings: links to the
    unsubscribe page are never rewritten."""
    unsubscribe = settings.unsubscribe_base_url.split("?", 1)[0]
    return LinkTracker(
        tracking_tokens(settings), base_url=settings.tracking_base_url, untracked=(unsubscribe,)
    )


class TrackingService:
    def __init__(
        self,
        settings: MessagingSettings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tracking_tokens(settings)
        self.data = TrackingStore(store)
        self.campaigns = CampaignStore(store)
        self.messages = MessagingStore(store)
        self.outbox = Outbox(store)
        self.clock = clock
        # markers are keyed (see tracking.domain.marker) by a key derived from the secret
        self._marker_key = hashlib.sha256(
            b"tribune-tracking-marker:" + settings.unsubscribe_secret.encode()
        ).digest()
        self._buffer: list[Hit] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ hits

    def click(self, token: str) -> str:
        """The URL a genuine click token leads to (its click buffered); a ``TokenError``
        (nothing counted) otherwise."""
        try:
            click = self.tokens.read_click(token)
        except TokenError:
            HITS.labels(HitKind.click.value, "refused").inc()
            raise
        self._add(
            Hit(
                HitKind.click,
                click.message_id,
                click.campaign_id,
                self.clock(),
                tracking=click.tracking,
                link=click.link,
                url=click.url,
            )
        )
        return click.url

    def open(self, token: str) -> None:
        """Buffer the open of a genuine pixel token; a ``TokenError`` otherwise."""
        try:
            opened = self.tokens.read_open(token)
        except TokenError:
            HITS.labels(HitKind.open.value, "refused").inc()
            raise
        hit = Hit(HitKind.open, opened.message_id, opened.campaign_id, self.clock(), True)
        self._add(hit)

    def _add(self, hit: Hit) -> None:
        if len(self._buffer) >= self.settings.tracking_buffer_max_hits:
            HITS.labels(hit.kind.value, "dropped").inc()
            return
        HITS.labels(hit.kind.value, "counted").inc()
        self._buffer.append(hit)
        if len(self._buffer) >= self.settings.tracking_flush_max_hits:
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def flush_due(self) -> bool:
        """The buffer holds a batch: the flusher writes it without waiting its interval."""
        return self._wake.is_set()

    # ------------------------------------------------------------ flushing

    def start(self) -> None:
        """Run the flusher in the background (the API process's lifespan)."""
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.run(self._stop))

    async def stop(self) -> None:
        """Stop the flusher after a last flush of what it holds."""
        if self._task is not None:
            self._stop.set()
            with contextlib.suppress(Exception):  # logged by flush
                await self._task
            self._task = None

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every interval, or at once when the buffer fills; a last flush on stop."""
        interval = self.settings.tracking_flush_interval_ms / 1000
        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            waking = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {stopping, waking}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in (stopping, waking):
                    waiter.cancel()
            self._wake.clear()
            with contextlib.suppress(Exception):  # logged by flush; retried next time
                await self.flush()
        await self.flush()

    async def flush(self) -> int:
        """Write the buffered hits (one transaction); how many were written. On failure
        they go back to the buffer (within its bound) and the error is raised."""
        async with self._flushing:
            hits, self._buffer = self._buffer, []
            if not hits:
                return 0
            try:
                await self._write(hits)
            except Exception as exc:
                room = max(0, self.settings.tracking_buffer_max_hits - len(self._buffer))
                kept = hits[:room]
                self._buffer[:0] = kept
                for hit in hits[room:]:
                    HITS.labels(hit.kind.value, "dropped").inc()
                log.warning(
                    "tracking.flush_failed", hits=len(hits), kept=len(kept), error=repr(exc)
                )
                raise
            return len(hits)

    async def _write(self, hits: Sequence[Hit]) -> None:
        firsts = first_hits(hits, self._marker_key)
        messages = await self.data.messages_by_id(list({h.message_id for h in hits}))
        variants = {mid: m["variant"] for mid, m in messages.items() if m.get("variant")}
        personal = await self._personal(hits, messages)
        expires_at = self.clock() + timedelta(days=self.settings.tracking_dedupe_days)

        async def write(session: AsyncClientSession) -> None:
            new = await self.data.first_seen(list(firsts), expires_at, session)
            first = [firsts[m] for m in new]
            await self.campaigns.count_stats(tally(hits, first, variants), session)
            first_opens = {id(h) for h in first if h.kind is HitKind.open}
            marks: dict[str, dict[str, datetime]] = {}
            events: list[Envelope] = []
            for hit in hits:
                message = personal.get(hit.message_id)
                if message is None:
                    continue
                field = "opened_at" if hit.kind is HitKind.open else "clicked_at"
                fields = marks.setdefault(hit.message_id, {})
                fields[field] = min(fields.get(field, hit.at), hit.at)
                if hit.kind is HitKind.click or id(hit) in first_opens:
                    events.append(self._event(hit, message))
            await self.data.mark_messages(marks, session)
            await self.outbox.add_batch(session, events)

        await self.store.run_transaction(write, what="tracking flush")

    async def _personal(
        self, hits: Sequence[Hit], messages: Mapping[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The messages whose hits may be recorded per person: the person consented to
        tracking when it was sent (the token) and has not withdrawn it since (messaging's
        consent view, read now). An erased person's messages are gone: none of theirs."""
        wanted = {
            mid: messages[mid]
            for mid in {h.message_id for h in hits if h.tracking}
            if mid in messages
        }
        if not wanted:
            return {}
        contacts = list({m["contact_id"] for m in wanted.values()})
        consents = await self.messages.consents_of(
            contacts, Channel.email, self.settings.tracking_purpose
        )
        return {
            mid: m for mid, m in wanted.items() if tracking_allowed(consents.get(m["contact_id"]))
        }

    def _event(self, hit: Hit, message: dict[str, Any]) -> Envelope:
        common = {
            "message_id": hit.message_id,
            "contact_id": message["contact_id"],
            "channel": Channel(message.get("channel") or Channel.email.value),
            "campaign_id": hit.campaign_id,
        }
        event: MessageOpenedV1 | MessageClickedV1
        if hit.kind is HitKind.open:
            event = MessageOpenedV1(**common, opened_at=hit.at)
        else:
            event = MessageClickedV1(**common, url=hit.url or "", clicked_at=hit.at)
        return new_envelope(
            event,
            producer=self.settings.service_name,
            federation_id=message["federation_id"],
            federation_path=message["federation_path"],
        )
