"""HTTP routes of the consent service (thin: validate, call the service)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity, Identity, Role, require_roles
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import Forbidden
from tribune_shared.events.contracts import Channel
from tribune_shared.limits import larger_body

from consent.domain import ActorKind, ConsentStatus, LedgerEntry
from consent.service import ChangeRequest, ConsentService

router = APIRouter(prefix="/api/v1/consents", tags=["consents"])

ContactId = IdPath
TextId = IdPath
may_change = require_roles(Role.secretary, Role.campaign_manager, Role.dpo)
may_write_texts = require_roles(Role.secretary, Role.dpo)


async def service(request: Request) -> ConsentService:
    return request.app.state.consent_service


Service = Annotated[ConsentService, Depends(service)]


async def client_info(request: Request) -> ClientInfo:
    """Where the request came from, as the gateway says, minimised (IPv4 /24, IPv6 /48,
    user agent truncated)."""
    settings = request.app.state.settings
    return ClientInfo.from_headers(request.headers, settings.user_agent_max_chars)


Client = Annotated[ClientInfo, Depends(client_info)]


async def dpo_only(identity: CurrentIdentity) -> Identity:
    """The audit log is the DPO's alone (not even an administrator's)."""
    if identity.role is not Role.dpo:
        raise Forbidden("only the data protection officer (role dpo) may read the audit log")
    return identity


Dpo = Annotated[Identity, Depends(dpo_only)]


# ---------------------------------------------------------------- consent texts


class NewText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, description="the exact text shown to the person")
    language: str = Field(
        default="fr", min_length=2, max_length=8, pattern=r"^[a-z]{2}(-[A-Z]{2})?$"
    )
    federation_id: str | None = Field(
        default=None, max_length=64, description="default: the caller's federation"
    )


class TextChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1)
    language: str | None = Field(
        default=None, min_length=2, max_length=8, pattern=r"^[a-z]{2}(-[A-Z]{2})?$"
    )


class TextView(BaseModel):
    id: str
    federation_id: str
    version: str
    title: str
    body: str
    language: str
    sha256: str = Field(description="hex SHA-256 of the body's UTF-8 bytes")
    used: bool = Field(description="referred to by a consent's proof: immutable from then on")
    first_used_at: datetime | None = None
    created_at: datetime
    created_by: str
    updated_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> TextView:
        return cls.model_validate({**doc, "id": doc["_id"]})


class TextList(BaseModel):
    items: list[TextView]


@router.post(
    "/texts",
    status_code=status.HTTP_201_CREATED,
    dependencies=[may_write_texts],
    tags=["texts"],
    # a text of text_max_chars characters, JSON-escaped, may exceed the JSON limit
    openapi_extra=larger_body("max_text_body_bytes"),
)
async def create_text(
    body: NewText, svc: Service, identity: CurrentIdentity, client: Client
) -> TextView:
    doc = await svc.create_text(
        identity,
        version=body.version,
        title=body.title,
        body=body.body,
        language=body.language,
        federation_id=body.federation_id,
        client=client,
    )
    return TextView.of(doc)


@router.get("/texts", tags=["texts"])
async def list_texts(
    svc: Service,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> TextList:
    """Texts of your federation and below, and your ancestors' (which you may use)."""
    limit = min(limit, svc.settings.max_page_size)
    return TextList(items=[TextView.of(d) for d in await svc.texts(identity, limit)])


@router.get("/texts/{text_id}", tags=["texts"])
async def get_text(text_id: TextId, svc: Service, identity: CurrentIdentity) -> TextView:
    return TextView.of(await svc.text(identity, text_id))


@router.put(
    "/texts/{text_id}",
    dependencies=[may_write_texts],
    tags=["texts"],
    openapi_extra=larger_body("max_text_body_bytes"),
)
async def update_text(
    text_id: TextId, body: TextChange, svc: Service, identity: CurrentIdentity, client: Client
) -> TextView:
    """409 `refused` once the text is the proof of a consent: create a new version."""
    doc = await svc.update_text(
        identity, text_id, title=body.title, body=body.body, language=body.language, client=client
    )
    return TextView.of(doc)


@router.delete(
    "/texts/{text_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[may_write_texts],
    tags=["texts"],
)
async def delete_text(
    text_id: TextId, svc: Service, identity: CurrentIdentity, client: Client
) -> Response:
    await svc.delete_text(identity, text_id, client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------- audit log (DPO)


class AuditEntry(BaseModel):
    id: str
    at: datetime
    action: str
    actor: str
    actor_kind: ActorKind | None = None
    role: str | None = None
    contact_id: str | None = None
    federation_path: str
    ip: str | None = Field(default=None, description="minimised: IPv4 /24, IPv6 /48")
    user_agent: str | None = Field(default=None, description="truncated")
    detail: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, doc: dict[str, Any]) -> AuditEntry:
        return cls.model_validate({**doc, "id": doc["_id"]})


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None


@router.get("/audit", tags=["audit"])
async def audit_log(
    svc: Service,
    identity: Dpo,
    contact_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> AuditPage:
    """Who viewed, changed or exported consent data, when and from where (newest first;
    DPO only, limited to your subtree)."""
    items, next_cursor = await svc.audit(
        identity,
        contact_id=contact_id,
        action=action,
        actor=actor,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return AuditPage(items=[AuditEntry.of(d) for d in items], next_cursor=next_cursor)


# ---------------------------------------------------------------- the ledger


class ConsentChange(BaseModel):
    channel: Channel
    purpose: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=200, description="form, import id, call...")
    text_version: str | None = Field(
        default=None,
        max_length=64,
        description="version of the consent text shown (a text stored with POST /texts); "
        "the proof keeps its SHA-256",
    )
    reference: str | None = Field(
        default=None, min_length=1, max_length=200, description="form or import id"
    )
    double_opt_in: bool = Field(
        default=False,
        description="grant as pending and email the person a confirmation link (email only)",
    )


class ConsentResult(BaseModel):
    contact_id: str
    channel: Channel
    purpose: str
    status: ConsentStatus
    changed: bool


class CurrentConsent(BaseModel):
    channel: Channel
    purpose: str
    status: ConsentStatus
    updated_at: datetime
    confirmation_expires_at: datetime | None = None


class ConsentView(BaseModel):
    contact_id: str
    suppressed: bool = Field(description="an address of this person is on the suppression list")
    consents: list[CurrentConsent]
    history: list[LedgerEntry]


async def _change(
    svc: ConsentService,
    identity: Identity,
    contact_id: str,
    body: ConsentChange,
    wanted: ConsentStatus,
    client: ClientInfo,
) -> ConsentResult:
    request = ChangeRequest(
        channel=body.channel,
        purpose=body.purpose,
        source=body.source,
        text_version=body.text_version,
        reference=body.reference,
        double_opt_in=body.double_opt_in,
    )
    state, changed = await svc.change(identity, contact_id, wanted, request, client)
    return ConsentResult(
        contact_id=contact_id,
        channel=body.channel,
        purpose=body.purpose,
        status=state,
        changed=changed,
    )


@router.post("/{contact_id}/grant", status_code=status.HTTP_200_OK, dependencies=[may_change])
async def grant(
    contact_id: ContactId,
    body: ConsentChange,
    svc: Service,
    identity: CurrentIdentity,
    client: Client,
) -> ConsentResult:
    """Granted at once, or `pending` with `double_opt_in` until the person confirms.
    409 `refused` (rule `suppressed`) if the person is on the suppression list."""
    return await _change(svc, identity, contact_id, body, ConsentStatus.granted, client)


@router.post("/{contact_id}/revoke", status_code=status.HTTP_200_OK, dependencies=[may_change])
async def revoke(
    contact_id: ContactId,
    body: ConsentChange,
    svc: Service,
    identity: CurrentIdentity,
    client: Client,
) -> ConsentResult:
    return await _change(svc, identity, contact_id, body, ConsentStatus.revoked, client)


class ConsentRate(BaseModel):
    channel: str
    purpose: str
    granted: int
    pending: int = Field(description="asked, waiting for the person's confirmation")
    revoked: int
    rate: float = Field(description="granted / people known in the subtree (0 to 1)")


class ConsentRates(BaseModel):
    federation_id: str
    people: int = Field(description="people consent knows in the subtree (erased ones left out)")
    rates: list[ConsentRate]


# declared before /{contact_id}, which would take "rates" for a contact id
@router.get("/rates")  # aggregate figures naming nobody: any role's dashboard shows them
async def consent_rates(
    svc: Service,
    identity: CurrentIdentity,
    federation_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
) -> ConsentRates:
    """Consents of a federation's subtree (the caller's by default) by channel and purpose,
    with the share of people who granted each: aggregate figures naming nobody (the back
    office's dashboard)."""
    fed_id, people, rates = await svc.rates(identity, federation_id)
    return ConsentRates(
        federation_id=fed_id, people=people, rates=[ConsentRate(**r) for r in rates]
    )


@router.get("/{contact_id}")
async def view(
    contact_id: ContactId, svc: Service, identity: CurrentIdentity, client: Client
) -> ConsentView:
    return ConsentView.model_validate(await svc.view(identity, contact_id, client))
