"""Use cases of public forms: the back office defines forms (``FormsService``); the public
side serves them and takes submissions (``PublicForms``).

The intake accepts, then applies through the backbone: a submission that passes the abuse
rules and the field checks is stored as one queued document with its ``form-submitted``
event (one transaction shared by concurrent submissions: ``GroupCommit``), and the person
gets their answer at once. contacts.submissions applies queued submissions to people.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict
from pymongo.errors import PyMongoError
from tribune_shared.auth import Identity
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import Conflict, InvalidFields, NotFound, Refused, ServiceUnavailable
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import FormSubmittedV1
from tribune_shared.group_commit import GroupCommit
from tribune_shared.logging import get_logger
from tribune_shared.store import Store
from tribune_shared.tokens import ExpiredToken, TokenError

from contacts.forms.domain import (
    AcceptedPages,
    Availability,
    FormLimits,
    FormStatus,
    PageToken,
    PageTokens,
    RateLimiter,
    RawSubmission,
    Refusal,
    availability,
    check_definition,
    check_page,
    check_whole,
    pick_text,
    read_answers,
    texts_digest,
    ticked_consents,
)
from contacts.forms.store import FormStore
from contacts.service import ContactsService, _now_ms
from contacts.settings import ContactsSettings

log = get_logger(__name__)

SHED = Counter(
    "tribune_forms_submissions_shed_total",
    "Public form submissions answered 429 'busy' by the intake's admission bound "
    "(CONTACTS_FORMS_INTAKE_MAX_IN_FLIGHT)",
)

PUBLIC_PREFIX = "/api/v1/public/forms"
#: what PATCH may change (the federation and the kind are the form's identity)
EDITABLE = (
    "title",
    "intro",
    "thank_you",
    "fields",
    "custom_fields",
    "consents",
    "goal",
    "starts_at",
    "ends_at",
    "tags",
    "reference",
    "allowed_origins",
    "meeting_id",
    "proof_of_work_bits",
)


class Form(BaseModel):
    """A form definition as stored and returned."""

    model_config = ConfigDict(frozen=True)

    id: str
    federation_id: str
    federation_path: str
    kind: str
    status: FormStatus
    title: str
    intro: str
    thank_you: str
    fields: list[dict[str, Any]]
    custom_fields: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    goal: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    tags: list[str]
    reference: str | None
    allowed_origins: list[str]
    meeting_id: str | None
    proof_of_work_bits: int | None
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    #: where people fill it in (through the gateway)
    public_path: str
    #: the JSON definition for sites posting themselves
    definition_path: str


def _form(doc: Mapping[str, Any]) -> Form:
    return Form.model_validate(
        {
            **doc,
            "id": doc["_id"],
            "public_path": f"{PUBLIC_PREFIX}/{doc['_id']}",
            "definition_path": f"{PUBLIC_PREFIX}/{doc['_id']}.json",
        }
    )


def form_limits(settings: ContactsSettings) -> FormLimits:
    return FormLimits(
        max_fields=settings.forms_max_fields,
        max_consents=settings.forms_max_consents,
        max_origins=settings.forms_max_origins,
        max_text_chars=settings.forms_max_text_chars,
        max_choices=settings.forms_max_choices,
        max_answer_chars=settings.forms_max_answer_chars,
        pow_min_bits=settings.forms_pow_min_bits,
        pow_max_bits=settings.forms_pow_max_bits,
    )


class FormsService:
    """The back office's side: define, list, change, close and archive forms."""

    def __init__(self, settings: ContactsSettings, store: Store, contacts: ContactsService):
        self.settings = settings
        self.store = store
        self.forms = FormStore(store)
        self.contacts = contacts
        self.limits = form_limits(settings)

    async def _check_references(self, identity: Identity, form: Mapping[str, Any]) -> None:
        """Each box's text version exists for the form's federation or an ancestor (in
        contacts' copy of consent's texts), and an RSVP form's meeting is the caller's."""
        problems: list[tuple[str, str]] = []
        boxes = form.get("consents", [])
        texts = await self.forms.texts_for(
            form["federation_path"], [b["text_version"] for b in boxes]
        )
        for i, box in enumerate(boxes):
            if pick_text(box["text_version"], texts) is None:
                problems.append(
                    (
                        f"consents.{i}.text_version",
                        "no consent text of this version for the form's federation or its "
                        "ancestors (create it in consent first: POST /api/v1/consents/texts)",
                    )
                )
        if form.get("meeting_id"):
            from contacts.meetings.store import MeetingStore

            meeting = await MeetingStore(self.store).get(form["meeting_id"], identity.scope())
            if meeting is None:
                problems.append(("meeting_id", "no such meeting in your federations"))
        if problems:
            raise InvalidFields(problems)

    async def create(self, identity: Identity, raw: Mapping[str, Any]) -> Form:
        values = check_definition(raw, rules=self.contacts.rules, limits=self.limits)
        fed_id, fed_path = await self.contacts.directory.resolve(identity, raw.get("federation_id"))
        now = _now_ms()
        doc: dict[str, Any] = {
            "_id": uuid.uuid4().hex,
            "federation_id": fed_id,
            "federation_path": fed_path,
            "status": FormStatus.open.value,
            "intro": "",
            "thank_you": "",
            "fields": [],
            "custom_fields": [],
            "consents": [],
            "goal": None,
            "starts_at": None,
            "ends_at": None,
            "tags": [],
            "reference": None,
            "allowed_origins": [],
            "meeting_id": None,
            "proof_of_work_bits": None,
            **values,
            "version": 1,
            "created_at": now,
            "created_by": identity.user_id,
            "updated_at": now,
            "updated_by": identity.user_id,
        }
        await self._check_references(identity, doc)
        await self.forms.insert(doc)
        return _form(doc)

    async def _doc(self, identity: Identity, form_id: str) -> dict[str, Any]:
        doc = await self.forms.get(form_id, identity.scope())
        if doc is None:
            raise NotFound("form not found")
        return doc

    async def get(self, identity: Identity, form_id: str) -> Form:
        return _form(await self._doc(identity, form_id))

    async def list_page(
        self,
        identity: Identity,
        *,
        limit: int,
        cursor: str | None,
        status: FormStatus | None,
        kind: str | None,
    ) -> tuple[list[Form], str | None]:
        """The subtree's forms; archived ones only when asked for."""
        statuses = [status.value] if status else [FormStatus.open.value, FormStatus.closed.value]
        docs, more = await self.forms.page(
            identity.scope(), limit=limit, after=cursor, statuses=statuses, kind=kind
        )
        items = [_form(d) for d in docs]
        return items, items[-1].id if more else None

    async def update(
        self,
        identity: Identity,
        form_id: str,
        raw: Mapping[str, Any],
        version: int | None,
    ) -> Form:
        doc = await self._doc(identity, form_id)
        if version is not None and version != doc["version"]:
            raise Conflict(
                "the form changed since you read it: read it again",
                current_version=doc["version"],
            )
        if doc["status"] == FormStatus.archived:
            raise Refused("an archived form can no longer change", rule="form_archived")
        present = {k: v for k, v in raw.items() if k in EDITABLE}
        values = check_definition(
            present, rules=self.contacts.rules, limits=self.limits, partial=True
        )
        changed = {**doc, **values}
        if changed == doc:
            return _form(doc)
        check_whole(changed)
        await self._check_references(identity, changed)
        return await self._replace(identity, doc, changed)

    async def _replace(
        self, identity: Identity, doc: dict[str, Any], changed: dict[str, Any]
    ) -> Form:
        changed.update(
            version=doc["version"] + 1, updated_at=_now_ms(), updated_by=identity.user_id
        )
        if not await self.forms.replace(changed, doc["version"]):
            raise Conflict("the form changed since you read it: read it again")
        return _form(changed)

    async def set_status(self, identity: Identity, form_id: str, status: FormStatus) -> Form:
        """Close (no more submissions; the page says so) or archive (gone from the public
        side and the default list). Both are final: a form is reopened by copying it."""
        doc = await self._doc(identity, form_id)
        if doc["status"] == status:
            return _form(doc)
        if doc["status"] == FormStatus.archived:
            raise Refused("the form is archived", rule="form_archived")
        return await self._replace(identity, doc, {**doc, "status": status.value})


# ---------------------------------------------------------------- the public side


@dataclass(frozen=True)
class PublicForm:
    """A form as its page shows it: the definition, and each consent box with the exact
    text (body and hash) from contacts' copy of consent's texts."""

    doc: Mapping[str, Any]
    boxes: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return str(self.doc["_id"])

    @property
    def texts(self) -> str:
        return texts_digest(self.boxes)

    @property
    def bits(self) -> int:
        return int(self.doc.get("proof_of_work_bits") or 0)


@dataclass(frozen=True)
class Accepted:
    submission_id: str
    #: the same page was already accepted (a double click): nothing new was stored
    repeated: bool = False


class SubmissionRefused(Exception):
    """The abuse rules refused a submission; nothing was stored."""

    def __init__(self, refusal: Refusal, status_code: int = 422) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal
        self.status_code = status_code


class RateLimited(Exception):
    def __init__(self, retry_after: float, scope: str) -> None:
        super().__init__(scope)
        self.retry_after = max(1, int(retry_after + 0.999))
        self.scope = scope


class NotAvailable(Exception):
    """The form takes no submission now (closed, ended, not yet open)."""

    def __init__(self, state: Availability) -> None:
        super().__init__(state.value)
        self.state = state


def token_secret(settings: ContactsSettings) -> str:
    if settings.forms_token_secret is not None:
        return settings.forms_token_secret.get_secret_value()
    # a key of its own, derived: a page token can never pass for an identity
    return hmac.new(
        settings.identity_secret.encode(), b"tribune-forms-page-token", hashlib.sha256
    ).hexdigest()


class PublicForms:
    """Serving forms and taking submissions. Caches and rate limits live in this process
    (per replica: see the README); clocks are injectable for tests."""

    def __init__(
        self,
        settings: ContactsSettings,
        store: Store,
        contacts: ContactsService,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.forms = FormStore(store)
        self.contacts = contacts
        self.clock = clock
        self.monotonic = monotonic
        self.tokens = PageTokens(token_secret(settings), settings.forms_token_ttl_seconds, clock)
        self.per_ip = RateLimiter(
            settings.forms_ip_rate_per_second,
            settings.forms_ip_burst,
            max_keys=settings.forms_rate_max_keys,
            clock=monotonic,
        )
        self.per_form = RateLimiter(
            settings.forms_form_rate_per_second,
            settings.forms_form_burst,
            max_keys=settings.forms_rate_max_keys,
            clock=monotonic,
        )
        self.accepted = AcceptedPages(settings.forms_rate_max_keys)
        #: submissions admitted and not answered yet (``admitted``)
        self.in_flight = 0
        self._forms: dict[str, tuple[float, PublicForm | None]] = {}
        self._counters: dict[str, tuple[float, int]] = {}
        self.intake = GroupCommit(
            self._write,
            max_batch=settings.forms_commit_max_batch,
            interval=settings.forms_commit_interval_seconds,
            name="forms.intake",
        )

    # ------------------------------------------------------------ reading

    async def form(self, form_id: str) -> PublicForm:
        """The form (cached for ``forms_cache_seconds``); 404 when unknown or archived."""
        now = self.monotonic()
        held = self._forms.get(form_id)
        if held is not None and held[0] > now:
            found = held[1]
        else:
            found = await self._load(form_id)
            if len(self._forms) >= self.settings.forms_rate_max_keys:
                self._forms.clear()
            self._forms[form_id] = (now + self.settings.forms_cache_seconds, found)
        if found is None:
            raise NotFound("form not found")
        return found

    async def _load(self, form_id: str) -> PublicForm | None:
        doc = await self.forms.public(form_id)
        if doc is None:
            return None
        texts = await self.forms.texts_for(
            doc["federation_path"], [b["text_version"] for b in doc["consents"]]
        )
        boxes = []
        for box in doc["consents"]:
            text = pick_text(box["text_version"], texts)
            if text is None:
                # withdrawn in consent since the form was defined: the box cannot be
                # offered (no text to show, no proof to give)
                log.warning("forms.text_missing", form_id=form_id, version=box["text_version"])
                continue
            boxes.append(
                {
                    **box,
                    "text_sha256": text["sha256"],
                    "title": text.get("title", ""),
                    "body": text["body"],
                    "language": text.get("language", "fr"),
                }
            )
        return PublicForm(doc, boxes)

    def availability(self, form: PublicForm) -> Availability:
        return availability(form.doc, utcnow())

    def page_token(self, form: PublicForm) -> str:
        return self.tokens.issue(form.id, form.bits, form.texts)

    async def signatures(self, form_id: str) -> int:
        """The petition's counter (people counted once: contacts.submissions), cached for
        ``forms_counter_cache_seconds``."""
        now = self.monotonic()
        held = self._counters.get(form_id)
        if held is not None and held[0] > now:
            return held[1]
        from contacts.submissions.store import SubmissionStore

        count = await SubmissionStore(self.store).signatures(form_id)
        if len(self._counters) >= self.settings.forms_rate_max_keys:
            self._counters.clear()
        self._counters[form_id] = (now + self.settings.forms_counter_cache_seconds, count)
        return count

    # ------------------------------------------------------------ taking a submission

    @contextlib.contextmanager
    def admitted(self, form_id: str, client_ip: str | None) -> Iterator[None]:
        """Admission of one submission (``throttle``), counted while it is being taken:
        the load-shedding bound counts what this process has admitted and not answered."""
        self.throttle(form_id, client_ip)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def throttle(self, form_id: str, client_ip: str | None) -> None:
        """Before the body is even read: the process's own bound first (a burst beyond
        what it stores in time is shed at once, costing no client's or form's tokens),
        then the per client and per form token buckets."""
        if self.in_flight >= self.settings.forms_intake_max_in_flight:
            SHED.inc()
            raise RateLimited(self.settings.forms_intake_retry_after_seconds, "busy")
        wait = self.per_ip.take(client_ip or "unknown")
        if wait:
            raise RateLimited(wait, "client")
        wait = self.per_form.take(form_id)
        if wait:
            raise RateLimited(wait, "form")

    def read_token(self, token: str | None) -> PageToken | None:
        if not token:
            return None
        try:
            return self.tokens.read(token)
        except ExpiredToken:
            raise SubmissionRefused(Refusal.token_expired) from None
        except TokenError:
            raise SubmissionRefused(Refusal.token_invalid) from None

    async def submit(
        self, form: PublicForm, raw: RawSubmission, client: ClientInfo, page: str
    ) -> Accepted:
        """Check and queue one submission; the refusals raise (nothing is stored)."""
        state = self.availability(form)
        if state is not Availability.open:
            raise NotAvailable(state)
        token = self.read_token(raw.token)
        now = self.clock()
        refusal = check_page(
            token,
            raw,
            form_id=form.id,
            texts=form.texts,
            now=now,
            min_fill_seconds=self.settings.forms_min_fill_seconds,
        )
        if refusal is not None:
            raise SubmissionRefused(refusal)
        assert token is not None  # check_page refuses a missing one
        already = self.accepted.get(token.id, now)
        if already is not None:
            return Accepted(already, repeated=True)
        answers = read_answers(
            form.doc,
            raw,
            self.contacts.rules,
            max_answer_chars=self.settings.forms_max_answer_chars,
            today=utcnow().date(),
        )
        consents = ticked_consents(form.boxes, raw.ticked)
        received_at = _now_ms()
        doc = {
            "_id": uuid.uuid4().hex,
            "form_id": form.id,
            "form_kind": form.doc["kind"],
            "federation_id": form.doc["federation_id"],
            "federation_path": form.doc["federation_path"],
            "status": "queued",
            "answers": answers,
            "consents": consents,
            "proof": {
                "submitted_at": received_at.isoformat().replace("+00:00", "Z"),
                **client.as_proof(),
                "form_id": form.id,
                "page": page,
            },
            "form": {
                "kind": form.doc["kind"],
                "title": form.doc["title"],
                "tags": list(form.doc.get("tags", [])),
                "reference": form.doc.get("reference"),
                "meeting_id": form.doc.get("meeting_id"),
            },
            "received_at": received_at,
        }
        envelope = new_envelope(
            FormSubmittedV1(
                submission_id=doc["_id"],
                form_id=form.id,
                form_kind=form.doc["kind"],
                received_at=received_at,
            ),
            producer=self.settings.service_name,
            federation_id=form.doc["federation_id"],
            federation_path=form.doc["federation_path"],
        )
        try:
            await self.intake.write({"doc": doc, "envelope": envelope})
        except (PyMongoError, RuntimeError) as exc:
            log.error("forms.queue_failed", form_id=form.id, error=repr(exc))
            raise ServiceUnavailable(
                "your submission could not be stored; please send it again"
            ) from None
        self.accepted.remember(token.id, doc["_id"], token.expires_at)
        return Accepted(doc["_id"])

    async def _write(self, items: list[dict[str, Any]]) -> None:
        await self.forms.queue([i["doc"] for i in items], [i["envelope"] for i in items])

    async def close(self) -> None:
        await self.intake.close()
