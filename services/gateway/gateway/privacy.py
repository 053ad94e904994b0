"""The access export: everything every service holds about one person, in one JSON
document, for the DPO answering an access request (GDPR art. 15).

Each service answers for its own data (``GET /api/v1/<prefix>/privacy/{contact_id}``,
identity-checked, DPO only); the gateway asks them all concurrently and assembles the
export. An export is complete or not given: if a service cannot answer, nothing is
exported (503 naming it). Once delivered, consent records it on the request (which
answers the access request) with the services exported.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from tribune_shared.app import IdPath
from tribune_shared.auth import Identity, Role
from tribune_shared.consistency import HEADER as CONSISTENCY_HEADER
from tribune_shared.errors import DomainError, Forbidden, NotFound, ServiceUnavailable
from tribune_shared.events import utcnow
from tribune_shared.logging import get_logger

from gateway.api import Audit, ClientIdentity, audited
from gateway.proxy import Answer, Proxy, merged_token

log = get_logger(__name__)

#: service -> the path of its part of the export
PARTS: dict[str, str] = {
    "contacts": "/api/v1/contacts/privacy/{contact_id}",
    "consent": "/api/v1/consents/privacy/{contact_id}",
    "memberships": "/api/v1/memberships/privacy/{contact_id}",
    "messaging": "/api/v1/messages/privacy/{contact_id}",
}


class UpstreamAnswer(DomainError):
    """A service's own error answer, passed on as it is (404, 409, 422...)."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(str(body))
        self.status_code = status_code
        self._body = body

    def body(self) -> dict[str, Any]:
        return (
            self._body if isinstance(self._body, dict) else {"error": "error", "detail": self._body}
        )


class PrivacyExporter:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        #: the consistency tokens of every call made for one export (consent records it)
        self.tokens: list[str | None] = []

    def token(self) -> str | None:
        """What the client gets: every write the calls of this export named."""
        return merged_token(self.tokens, self.proxy.settings)

    async def _call(
        self,
        service: str,
        method: str,
        path: str,
        headers: dict[str, str],
        json: Any = None,
    ) -> Answer:
        response = await self.proxy.call(service, method, path, headers, json_body=json)
        self.tokens.append(response.headers.get(CONSISTENCY_HEADER))
        return response

    async def _part(
        self, service: str, contact_id: str, headers: dict[str, str]
    ) -> tuple[str, int | None, Any]:
        try:
            r = await self._call(
                service, "GET", PARTS[service].format(contact_id=contact_id), headers
            )
        except DomainError:  # unreachable or timed out
            return service, None, None
        if r.status_code == 200:
            return service, 200, r.json()
        return service, r.status_code, None

    async def export(self, request: Request, identity: Identity, request_id: str) -> dict[str, Any]:
        headers = self.proxy.upstream_headers(request, identity)
        self.tokens.append(headers.get(CONSISTENCY_HEADER))
        r = await self._call("consent", "GET", f"/api/v1/privacy/requests/{request_id}", headers)
        if r.status_code != 200:
            raise UpstreamAnswer(r.status_code, r.json())
        request = r.json()
        if request["kind"] != "access":
            raise UpstreamAnswer(
                409,
                {
                    "error": "refused",
                    "detail": "only an access request is answered with an export",
                    "rule": "kind",
                },
            )
        contact_id = request["contact_id"]
        answers = await asyncio.gather(*(self._part(s, contact_id, headers) for s in PARTS))
        by_service = {s: (status, body) for s, status, body in answers}
        if by_service["contacts"][0] == 404:
            raise NotFound("contact not found (erased?)", field="contact_id")
        failed = [s for s, (status, _) in by_service.items() if status not in (200, 404)]
        if failed:
            log.warning("privacy.export_incomplete", services=failed)
            raise ServiceUnavailable(
                "the export would be incomplete: a service did not answer; nothing was exported",
                services=failed,
            )
        sources = {
            s: "exported" if st == 200 else "holds nothing" for s, (st, _) in by_service.items()
        }
        part = {s: body or {} for s, (_, body) in by_service.items()}
        exported = [s for s, v in sources.items() if v == "exported"]
        r = await self._call(
            "consent",
            "POST",
            f"/api/v1/privacy/requests/{request_id}/exported",
            headers,
            json={"services": exported},
        )
        if r.status_code != 200:
            raise UpstreamAnswer(r.status_code, r.json())
        log.info("privacy.exported", request_id=request_id, services=exported)
        return {
            "request": r.json(),
            "exported_at": utcnow(),
            "exported_by": identity.user_id,
            "contact_id": contact_id,
            "sources": sources,
            "contact": part["contacts"].get("contact"),
            "consents": {
                "current": part["consent"].get("consents", []),
                "history": part["consent"].get("history", []),
            },
            "privacy_requests": part["consent"].get("privacy_requests", []),
            "memberships": part["memberships"].get("memberships", []),
            "payments": part["memberships"].get("payments", []),
            "donations": part["memberships"].get("donations", []),
            "tax_receipts": part["memberships"].get("receipts", []),
            "payment_schedules": part["memberships"].get("schedules", []),
            "identity_for_receipts": part["memberships"].get("identity"),
            "messages": part["messaging"].get("messages", []),
            "messaging_view": {
                "contact": part["messaging"].get("contact"),
                "consents": part["messaging"].get("consents", []),
            },
        }


router = APIRouter(prefix="/api/v1/privacy", tags=["privacy"])


async def _exporter(request: Request) -> PrivacyExporter:
    return PrivacyExporter(request.app.state.proxy)


@router.get(
    "/requests/{request_id}/export",
    summary="Everything every service holds about the person of an access request (DPO)",
    responses={
        200: {"description": "the JSON export (an attachment); the request is answered"},
        403: {"description": "not the DPO"},
        404: {"description": "unknown request, or its person is gone"},
        409: {"description": "not an access request"},
        503: {"description": "a service could not answer: nothing exported"},
    },
)
async def export(
    request: Request,
    request_id: IdPath,
    identity: ClientIdentity,
    audit: Audit,
    exporter: Annotated[PrivacyExporter, Depends(_exporter)],
) -> JSONResponse:
    if identity.role is not Role.dpo:
        raise Forbidden(f"role {identity.role} may not do this")
    document = await audited(
        request,
        identity,
        audit,
        lambda: exporter.export(request, identity, request_id),
        subject=lambda doc: doc["contact_id"],
    )
    headers = {
        "Content-Disposition": f'attachment; filename="privacy-export-{request_id}.json"',
        "Cache-Control": "no-store",
    }
    if token := exporter.token():
        headers[CONSISTENCY_HEADER] = token
    return JSONResponse(jsonable_encoder(document), headers=headers)
