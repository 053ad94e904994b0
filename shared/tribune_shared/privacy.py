"""What every service does alike when a person is erased (erasure-requested fans out)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from tribune_shared.auth import Role, require_roles
from tribune_shared.events import Envelope, decode_as, new_envelope, utcnow
from tribune_shared.events.contracts import ErasureCompletedV1, ErasureRequestedV1


def erasure_request(envelope: Envelope) -> ErasureRequestedV1:
    return decode_as(envelope, ErasureRequestedV1)


def erasure_completed(
    request: Envelope, service: str, kept_for_legal_reasons: Sequence[str] = ()
) -> Envelope:
    """The answer a service puts in its outbox, in the transaction that erased the person:
    the consent service closes the request once every expected service answered."""
    event = erasure_request(request)
    return new_envelope(
        ErasureCompletedV1(
            request_id=event.request_id,
            contact_id=event.contact_id,
            service=service,
            completed_at=utcnow(),
            kept_for_legal_reasons=list(kept_for_legal_reasons),
        ),
        producer=service,
        federation_id=request.federation_id,
        federation_path=request.federation_path,
        causation=request,
    )


def dpo_router(prefix: str) -> APIRouter:
    """Routes only the DPO reaches (a service's part of the access export, privacy
    requests): administrators included, nobody else."""
    return APIRouter(
        prefix=prefix, tags=["privacy"], dependencies=[require_roles(Role.dpo, admin=False)]
    )
