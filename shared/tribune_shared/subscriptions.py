"""What a service's worker consumes, declared in one place.

Handlers come in two shapes:

- ``Handler``: ``async def handle(envelope, session)``, one event at a time;
- ``Batch(handle_many)``: ``async def handle_many(envelopes, session)``, a whole partition
  batch in one call, written with bulk operations (projections of bulk events).

Either runs inside the consumer's transaction, together with the record of the events'
ids, so a redelivered event is skipped. The kernel consumer handles a partition's poll
batch in one transaction; a non-batch handler simply gets the batch's events one by one.

``Subscriptions`` refuses a second handler for an event type unless the registration says
it extends the first (``also=True``): silently overwriting a handler (what merging dicts
did) loses events without a trace. It also checks the service against the topic registry
(``TopicSpec.consumers``), so what the registry says each service consumes (the APIs rely
on it for read-your-writes) is what its worker really consumes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from pymongo.asynchronous.client_session import AsyncClientSession

from tribune_shared.events import TOPICS, Envelope
from tribune_shared.events.contracts import Lane

Handler = Callable[[Envelope, AsyncClientSession], Awaitable[None]]
BatchFn = Callable[[list[Envelope], AsyncClientSession], Awaitable[None]]


@dataclass(frozen=True)
class Batch:
    """A batch-capable handler: gets every (new) event of one partition batch at once, in
    offset order. Must give the same state as applying them one by one."""

    handle_many: BatchFn

    async def __call__(self, envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await self.handle_many(envelopes, session)


Step = Handler | Batch


class DuplicateSubscription(ValueError):
    pass


class Awaiting(Exception):
    """Raised by a handler whose event depends on a fact from another topic that this
    service has not applied yet (a confirmation email for a contact whose contact-created
    is still on its way). Topics have no order between them, so this is normal, not an
    error: the consumer leaves the event's partition where it stands, goes on with the
    others (which bring the fact) and tries again, for up to
    ``consumer_dependency_wait_seconds``; only then is the event parked on its DLQ.

    ``event_id``: the first event of the batch (in offset order) that waits. The consumer
    then applies the events before it in one transaction and stops the partition at it,
    instead of splitting the batch in halves until it stands alone (a dozen transactions
    for a batch of 100, each reading what the others read). A batch handler names it; a
    one-event handler's is filled in by ``apply_steps``."""

    def __init__(self, reason: str, *, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.event_id = event_id


async def apply_steps(
    steps: tuple[Step, ...], envelopes: list[Envelope], session: AsyncClientSession
) -> None:
    """Run an event type's handlers on a batch, in registration order."""
    for step in steps:
        if isinstance(step, Batch):
            await step(envelopes, session)
        else:
            for envelope in envelopes:
                try:
                    await step(envelope, session)
                except Awaiting as exc:
                    exc.event_id = exc.event_id or envelope.event_id
                    raise


class Subscriptions:
    """Event type -> its handlers, in the order they run (in one transaction)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._steps: dict[str, list[Step]] = {}

    def add(self, handlers: Mapping[str, Step], *, also: bool = False) -> Subscriptions:
        """Register handlers; a type already registered is refused unless ``also`` (then
        the new handler runs after the existing ones, e.g. retention clocks beside the
        projection of the same event)."""
        for event_type, step in handlers.items():
            if event_type not in TOPICS:
                raise LookupError(f"{self.service}: no topic {event_type!r} in the registry")
            held = self._steps.setdefault(event_type, [])
            if held and not also:
                raise DuplicateSubscription(
                    f"{self.service}: {event_type!r} already has a handler "
                    "(pass also=True to run another one after it)"
                )
            if any(h is step for h in held):
                raise DuplicateSubscription(
                    f"{self.service}: the same handler twice for {event_type!r}"
                )
            held.append(step)
        return self

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._steps)

    def steps(self, event_type: str) -> tuple[Step, ...]:
        return tuple(self._steps[event_type])

    def lanes(self) -> Iterator[tuple[Lane, dict[str, tuple[Step, ...]]]]:
        """The subscriptions split by lane (each lane gets its own Kafka consumer)."""
        for lane in Lane:
            chosen = {t: tuple(s) for t, s in self._steps.items() if TOPICS[t].lane is lane}
            if chosen:
                yield lane, chosen

    def check_registry(self) -> None:
        """The registry's consumers of each topic match what this worker subscribes to."""
        declared = consumed_by(self.service)
        if declared != self.event_types:
            missing = sorted(declared - self.event_types)
            extra = sorted(self.event_types - declared)
            raise ValueError(
                f"{self.service}: subscriptions differ from the topic registry "
                f"(declared but not handled: {missing}; handled but not declared: {extra})"
            )


def consumed_by(service: str) -> frozenset[str]:
    """The event types the registry says ``service`` consumes."""
    return frozenset(t for t, spec in TOPICS.items() if service in spec.consumers)


def awaited_by(service: str) -> frozenset[str]:
    """The event types whose application a request to ``service`` waits for when its
    consistency token names them: what it consumes from other services. Its own events
    (consent reads consent-granted back for retention clocks) are already in its store
    when the write answers; waiting for its consumer to re-read them would only make a
    client's next request queue behind the bulk lane."""
    return frozenset(t for t in consumed_by(service) if TOPICS[t].owner != service)


def in_lane(lane: Lane) -> frozenset[str]:
    """The event types the registry puts in ``lane``."""
    return frozenset(t for t, spec in TOPICS.items() if spec.lane is lane)
