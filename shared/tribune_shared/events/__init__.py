"""Events: the envelope, the versioned contracts and the topic registry."""

from __future__ import annotations

from typing import TypeVar, overload

from tribune_shared.events.contracts import (
    CONTRACTS,
    TOPICS,
    EventContract,
    TopicSpec,
    contract_for,
    dlq_topic,
)
from tribune_shared.events.envelope import Envelope, Sealed, utcnow
from tribune_shared.logging import current_correlation_id, new_correlation_id


def new_envelope(
    event: EventContract,
    *,
    producer: str,
    federation_id: str,
    federation_path: str,
    causation: Envelope | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    """Wrap an event; correlation comes from the cause, the request context, or is new."""
    return Envelope(
        type=event.event_type,
        version=event.event_version,
        producer=producer,
        key=event.key,
        federation_id=federation_id,
        federation_path=federation_path,
        correlation_id=correlation_id
        or (causation.correlation_id if causation else None)
        or current_correlation_id()
        or new_correlation_id(),
        causation_id=causation.event_id if causation else None,
        data=event.model_dump(mode="json"),
    )


def decode(envelope: Envelope) -> EventContract:
    """The typed payload of an envelope (raises LookupError / ValidationError).

    Personal fields still sealed (the consumer could not open them: the person was erased
    and their key destroyed, or the envelope was read straight off a topic) hold their
    defaults and are listed in ``event.erased_fields``. Kafka consumers of the kernel open
    sealed envelopes before their handlers run (``tribune_shared.vault``)."""
    event = contract_for(envelope.type, envelope.version).model_validate(envelope.data)
    if envelope.sealed is not None:
        event._erased_fields = frozenset(envelope.sealed.fields)
    return event


E = TypeVar("E", bound=EventContract)
F = TypeVar("F", bound=EventContract)
G = TypeVar("G", bound=EventContract)


@overload
def decode_as(envelope: Envelope, expected: type[E], /) -> E: ...
@overload
def decode_as(envelope: Envelope, expected: type[E], other: type[F], /) -> E | F: ...
@overload
def decode_as(
    envelope: Envelope, expected: type[E], other: type[F], third: type[G], /
) -> E | F | G: ...
def decode_as(envelope: Envelope, *expected: type[EventContract]) -> EventContract:
    """``decode`` that also checks the payload is one of the ``expected`` contracts (a
    handler registered for the wrong topic fails loudly, and the result is typed)."""
    event = decode(envelope)
    if not isinstance(event, expected):
        names = ", ".join(t.__name__ for t in expected)
        raise TypeError(f"{envelope.type} v{envelope.version} is not {names}")
    return event


__all__ = [
    "CONTRACTS",
    "TOPICS",
    "Envelope",
    "EventContract",
    "Sealed",
    "TopicSpec",
    "decode",
    "decode_as",
    "dlq_topic",
    "new_envelope",
    "utcnow",
]
