"""Events: the envelope, the versioned contracts and the topic registry."""

from __future__ import annotations

from tribune_shared.events.contracts import (
    CONTRACTS,
    TOPICS,
    EventContract,
    TopicSpec,
    contract_for,
    dlq_topic,
)
from tribune_shared.events.envelope import Envelope, utcnow
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
    """The typed payload of an envelope (raises LookupError / ValidationError)."""
    return contract_for(envelope.type, envelope.version).model_validate(envelope.data)


__all__ = [
    "CONTRACTS",
    "TOPICS",
    "Envelope",
    "EventContract",
    "TopicSpec",
    "decode",
    "dlq_topic",
    "new_envelope",
    "utcnow",
]
