"""Every "no" read straight from Kafka, so that messaging honours it before its views do.

A revocation reaches messaging's own view (``consents``) through its consumer: one store
transaction, behind every other command the store is busy with. While a large import is
digested that took seconds, up to a minute, and all that time the person still looked
reachable. This feed reads ``consent-revoked``, ``suppression-added`` and
``erasure-requested`` itself, with no consumer group (every process reads every
partition from the end, commits nothing), checks each event's signature like a consumer
does, and remembers in memory, for ``REVOCATION_FEED_MEMORY_SECONDS``, what each said and
when. Those who decide ask it on top of the views:

- the API's reachability and its transactional sends (``MessagingService``): a consent
  the view still shows granted is revoked if the feed saw a revocation after it
  (``messaging.domain.consent_after``);
- the campaign guard (``messaging.campaigns.guard``): a message is not handed over if
  the feed saw its person revoke, be suppressed or erased.

The views stay the record: the feed only says "no" earlier. It knows nothing from before
its process started (the view has that), and forgets after its memory, by which time the
view has long applied the event. A feed that stopped reading changes nothing but the
delay: it is not a safety net the views depend on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import (
    ConsentRevokedV1,
    ErasureRequestedV1,
    SuppressionAddedV1,
)
from tribune_shared.topic_reader import TopicReader

from messaging.settings import MessagingSettings
from messaging.store import consent_key

FEED_TOPICS = ("consent-revoked", "suppression-added", "erasure-requested")

READ = Counter(
    "tribune_revocation_feed_events_total",
    "Events messaging's revocation feed read from Kafka, by outcome",
    ["outcome"],  # remembered | refused
)


def what_it_says(envelope: Envelope) -> tuple[str, datetime] | None:
    """The key a "no" is remembered under (the guard's keys: a consent's key, an address
    hash, a contact id) and when it was said."""
    event = decode(envelope)
    match event:
        case ConsentRevokedV1():
            return consent_key(event.contact_id, event.channel, event.purpose), event.revoked_at
        case SuppressionAddedV1():
            return event.address_hash, event.suppressed_at
        case ErasureRequestedV1():
            return event.contact_id, event.requested_at
    return None


class RevocationFeed(TopicReader):
    name = "revocation_feed"

    def __init__(self, settings: MessagingSettings) -> None:
        super().__init__(
            settings,
            FEED_TOPICS,
            group_id=None,  # every process reads every partition; nothing is committed
            refused=READ.labels("refused"),
            retry_seconds=settings.revocation_feed_retry_seconds,
            batch=settings.revocation_feed_batch_size,
            fetch_max_wait_ms=settings.revocation_feed_max_wait_ms,
        )
        self.memory_seconds = settings.revocation_feed_memory_seconds
        self.max_entries = settings.revocation_feed_max_entries
        #: key -> (when it was said, when it was read: monotonic)
        self._said: dict[str, tuple[datetime, float]] = {}

    async def take(self, envelopes: list[Envelope], consumer: AIOKafkaConsumer) -> None:
        READ.labels("remembered").inc(self.remember(envelopes))

    # ------------------------------------------------------------ what it knows

    def said_at(self, key: str) -> datetime | None:
        """When the latest "no" remembered under ``key`` was said (None: none)."""
        held = self._said.get(key)
        if held is None:
            return None
        if time.monotonic() - held[1] > self.memory_seconds:
            del self._said[key]
            return None
        return held[0]

    def knows(self, key: str | None) -> bool:
        return key is not None and self.said_at(key) is not None

    def remember(self, envelopes: Iterable[Envelope]) -> int:
        now = time.monotonic()
        count = 0
        for envelope in envelopes:
            said = what_it_says(envelope)
            if said is None:
                continue
            key, at = said
            held = self._said.get(key)
            if held is None or at >= held[0]:
                self._said[key] = (at, now)
            count += 1
        if len(self._said) > self.max_entries:
            self._forget(now)
        return count

    def _forget(self, now: float) -> None:
        horizon = now - self.memory_seconds
        self._said = {k: v for k, v in self._said.items() if v[1] >= horizon}
        if len(self._said) > self.max_entries:  # all recent: the oldest read go first
            ordered = sorted(self._said.items(), key=lambda kv: kv[1][1])
            self._said = dict(ordered[len(ordered) - self.max_entries // 2 :])
