"""The event envelope every Kafka message carries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Sealed(BaseModel):
    """The personal fields of an event, encrypted with the data key of the person they are
    about (``tribune_shared.vault``). They are absent from ``data`` in clear; once the key
    is destroyed (erasure) nobody can read them again, and consumers see them as erased."""

    model_config = ConfigDict(frozen=True)

    subject: str = Field(description="the person whose data key seals the fields")
    fields: list[str] = Field(description="dotted paths in data of the sealed fields")
    alg: Literal["AES-256-GCM"] = "AES-256-GCM"
    nonce: str | None = Field(default=None, description="base64url")
    ciphertext: str | None = Field(
        default=None,
        description="base64url of the JSON {path: value}, authenticated with the event id, "
        "type, version and subject; null when the person was already erased (values dropped)",
    )


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str
    version: int = Field(ge=1)
    occurred_at: datetime = Field(default_factory=utcnow)
    producer: str
    key: str = Field(description="aggregate id; the Kafka message key")
    federation_id: str
    federation_path: str
    correlation_id: str
    causation_id: str | None = None
    data: dict[str, Any]
    sealed: Sealed | None = Field(
        default=None, description="personal fields of data, encrypted (absent: none)"
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)
