"""Use cases: a change to the ledger, its events and its audit entry commit together
(transactional outbox)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.client_info import ClientInfo
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import Conflict, InvalidField, NotFound, Refused
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    Channel,
    ConsentConfirmationRequestedV1,
    ConsentGrantedV1,
    ConsentRevokedV1,
    ConsentTextPublishedV1,
    EventContract,
    SuppressionAddedV1,
)
from tribune_shared.federations import FederationDirectory
from tribune_shared.group_commit import GroupCommit
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store, ancestor_paths, subtree_filter
from tribune_shared.subscriptions import Awaiting
from tribune_shared.suppression import phone_hash
from tribune_shared.tokens import SignedTokens, TokenError, UnsubscribeTokens
from tribune_shared.vault import vault_for
from tribune_shared.webhooks import verify_signature

from consent.domain import (
    PERSON,
    ActorKind,
    ConsentStatus,
    LedgerEntry,
    Source,
    carried_over,
    check_double_opt_in,
    check_purpose,
    check_tracking_channel,
    consent_rates,
    every_consent,
    is_stop_message,
    needs_entry,
    proof_of,
    text_sha256,
    unchanged_status,
)
from consent.settings import ConsentSettings
from consent.store import ConsentStore

log = get_logger(__name__)

#: purpose of the double opt-in confirmation tokens (tribune_shared.tokens)
CONFIRM_PURPOSE = "consent-confirm"
CONFIRM_PATH = "/api/v1/public/consents/confirm"
#: proof keys that travel in consent-granted (IP and user agent stay in consent)
EVENT_PROOF_KEYS = ("text_version", "text_hash", "reference", "double_opt_in", "confirmed_at")


class AuditAction(StrEnum):
    consent_viewed = "consent_viewed"
    consent_changed = "consent_changed"
    suppression_added = "suppression_added"
    text_created = "consent_text_created"
    text_updated = "consent_text_updated"
    text_deleted = "consent_text_deleted"
    #: a box ticked on a public form that could not be recorded (unknown purpose, or a
    #: text the page showed that is not consent's text of that version: consent.forms)
    form_consent_refused = "form_consent_refused"


class ConfirmOutcome(StrEnum):
    confirmed = "confirmed"
    already_confirmed = "already_confirmed"
    #: the request was revoked, replaced or its person erased or suppressed
    no_longer_valid = "no_longer_valid"


@dataclass(frozen=True)
class ChangeRequest:
    channel: Channel
    purpose: str
    source: str
    text_version: str | None = None
    #: form or import id the consent was collected with
    reference: str | None = None
    double_opt_in: bool = False


@dataclass(frozen=True)
class Change:
    """One ledger entry to record."""

    channel: Channel
    purpose: str
    status: ConsentStatus
    source: str
    proof: dict[str, str]
    text: dict[str, Any] | None = None
    #: the double opt-in request kept on the current state while pending
    pending: dict[str, Any] | None = None
    events: tuple[EventContract, ...] = ()


def changes_detail(changes: list[Change]) -> list[dict[str, str]]:
    """What an audit entry says of consent changes."""
    return [
        {"channel": c.channel.value, "purpose": c.purpose, "status": c.status.value}
        for c in changes
    ]


@dataclass(frozen=True)
class Actor:
    id: str
    kind: ActorKind
    role: str | None = None

    @classmethod
    def of(cls, identity: Identity) -> Actor:
        return cls(identity.user_id, ActorKind.user, identity.role.value)


THE_PERSON = Actor(PERSON, ActorKind.person)

SuppressionReason = Literal["objection", "erasure", "bounce"]
AddressKind = Literal["email", "phone"]
#: who puts an address on the suppression list, by reason (in the audit log)
_SUPPRESSION_ACTORS: dict[str, Actor] = {
    "objection": THE_PERSON,
    "erasure": Actor("dpo", ActorKind.user, "dpo"),
    # a provider reported the address gone: no user decided it
    "bounce": Actor("messaging", ActorKind.user, "provider"),
}


@dataclass
class Unsubscribed:
    contact_known: bool
    purpose: str
    revoked: list[tuple[str, str]] = field(default_factory=list)
    suppressed: int = 0


@dataclass(frozen=True)
class Merged:
    """What contact-merged did: the consents carried over to ``survivor`` (the contact the
    merged one is now, along chains of merges), or nothing if that person is erased."""

    survivor: str
    carried: int
    survivor_erased: bool = False
    #: keys the vault destroyed because the survivor was erased before the merge was seen
    keys_destroyed: tuple[str, ...] = ()


def _audit_id(at: datetime) -> str:
    """Sortable by time across processes (then random): the audit log's order and cursor."""
    micros = int(at.timestamp() * 1_000_000)
    return f"{micros:016x}{uuid.uuid4().hex[:16]}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ledger_entries(
    contact: dict[str, Any], changes: Sequence[Change], actor: Actor, now: datetime
) -> list[LedgerEntry]:
    """The ledger entries of a person's changes, with their proof and who made them."""
    return [
        LedgerEntry(
            contact_id=contact["_id"],
            channel=c.channel,
            purpose=c.purpose,
            status=c.status,
            source=c.source,
            proof=c.proof,
            actor=actor.id,
            actor_kind=actor.kind,
            recorded_at=now,
        )
        for c in changes
    ]


class ConsentService:
    def __init__(self, settings: ConsentSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.consents = ConsentStore(store)
        self.contacts = ContactDirectory(store)
        self.federations = FederationDirectory(store)
        self.outbox = Outbox(store)
        # Rotation: the current secret signs, the previous ones still verify the links of
        # emails already sent (an unsubscribe link never expires).
        previous = settings.unsubscribe_previous_secrets
        self.confirm_tokens = SignedTokens(
            settings.unsubscribe_secret,
            CONFIRM_PURPOSE,
            ttl_seconds=settings.confirmation_ttl_seconds,
            previous_secrets=previous,
        )
        self.unsubscribe_tokens = UnsubscribeTokens(
            settings.unsubscribe_secret, previous_secrets=previous
        )
        # Views' audit entries: concurrent views share one insert (group commit); each view
        # still waits for its entry and fails if it could not be written. One insert per
        # view was, with contacts' read counter, the costliest command of a person view.
        self.view_audits = GroupCommit(
            self._write_view_audits,
            max_batch=settings.view_audit_batch_max_entries,
            name="consent.view_audit",
        )

    async def _write_view_audits(self, docs: list[dict[str, Any]]) -> None:
        await self.consents.add_audits(docs, None)

    async def close(self) -> None:
        """Queued audit entries are written before the process stops."""
        await self.view_audits.close()

    # ------------------------------------------------------------ figures

    async def rates(
        self, identity: Identity, federation_id: str | None
    ) -> tuple[str, int, list[dict[str, Any]]]:
        """(federation id, people known, consents by channel x purpose with their rate) of
        a federation's subtree (the caller's by default; one outside it is a 404)."""
        fed_id, path = await self.federations.resolve(identity, federation_id)
        people, rows = await self.consents.rates(path)
        return fed_id, people, consent_rates(people, rows)

    # ------------------------------------------------------------ plumbing

    def _envelope(
        self, event: EventContract, contact: dict[str, Any], causation: Envelope | None = None
    ) -> Envelope:
        return new_envelope(
            event,
            producer=self.settings.service_name,
            federation_id=contact.get("federation_id") or "",
            federation_path=contact["federation_path"],
            causation=causation,
        )

    def check_choice(self, channel: Channel, purpose: str) -> None:
        check_purpose(purpose, self.settings.all_purposes)
        check_tracking_channel(channel, purpose, self.settings.tracking_purpose)

    def _audit_doc(
        self,
        action: AuditAction,
        actor: Actor,
        client: ClientInfo,
        *,
        federation_path: str,
        contact_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": _audit_id(now),
            "at": now,
            "action": action.value,
            "actor": actor.id,
            "actor_kind": actor.kind.value,
            "role": actor.role,
            "contact_id": contact_id,
            "federation_path": federation_path,
            "ip": client.ip,
            "user_agent": client.user_agent,
            "detail": detail or {},
        }

    async def write_audit(
        self,
        session: AsyncClientSession | None,
        action: AuditAction,
        actor: Actor,
        client: ClientInfo,
        *,
        federation_path: str,
        contact_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        doc = self._audit_doc(
            action,
            actor,
            client,
            federation_path=federation_path,
            contact_id=contact_id,
            detail=detail,
        )
        await self.consents.add_audits([doc], session)

    async def _contact_visible(self, identity: Identity, contact_id: str) -> dict[str, Any]:
        contact = await self.contacts.visible(identity, contact_id)
        if contact is None or contact.get("erased"):
            raise NotFound("contact not found")
        return contact

    async def person_ids(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> list[str]:
        """The contact's id and every id merged into it (one person)."""
        return [contact_id, *await self.contacts.merged_ids(contact_id, session)]

    async def is_suppressed(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> bool:
        """Whether one of the person's emails or phones (those of contacts merged into
        them included) is on the suppression list."""
        hashes = await self.consents.hashes_of(await self.person_ids(contact_id, session), session)
        return await self._suppressed(hashes, session)

    async def _suppressed(
        self, hashes: dict[str, list[str]], session: AsyncClientSession | None = None
    ) -> bool:
        """Whether one of these address hashes (``hashes_of``) is on the suppression list."""
        return bool(
            await self.consents.suppressed_among(hashes["email"] + hashes["phone"], session)
        )

    async def statuses(
        self, contact_id: str, session: AsyncClientSession
    ) -> dict[tuple[Channel, str], ConsentStatus]:
        """The contact's current state of every (channel, purpose), in one read."""
        return {
            (Channel(d["channel"]), d["purpose"]): ConsentStatus(d["status"])
            for d in await self.consents.current_all(contact_id, session)
        }

    async def record_and_audit(
        self,
        session: AsyncClientSession,
        contact: dict[str, Any],
        changes: list[Change],
        actor: Actor,
        client: ClientInfo,
        source: str,
    ) -> None:
        """Record the changes and the audit entry that says who made them, from where."""
        await self._record(session, contact, changes, actor)
        await self.write_audit(
            session,
            AuditAction.consent_changed,
            actor,
            client,
            federation_path=contact["federation_path"],
            contact_id=contact["_id"],
            detail={"changes": changes_detail(changes), "source": source},
        )

    async def _record(
        self,
        session: AsyncClientSession,
        contact: dict[str, Any],
        changes: list[Change],
        actor: Actor,
        *,
        also: tuple[Envelope, ...] = (),
    ) -> list[LedgerEntry]:
        """Append the entries, make them current and publish their events (plus ``also``)
        in the caller's transaction, in a few batched writes whatever their number."""
        now = utcnow()
        entries = ledger_entries(contact, changes, actor, now)
        await self.consents.append_many(
            entries, contact, session, pending=[c.pending for c in changes]
        )
        for text_id in dict.fromkeys(c.text["_id"] for c in changes if c.text is not None):
            await self.consents.mark_text_used(text_id, now, session)
        events = self._events_of(contact, changes, actor, now)
        await self.outbox.add(session, *(self._envelope(e, contact) for e in events), *also)
        return entries

    async def record_many(
        self,
        session: AsyncClientSession,
        batch: list[tuple[dict[str, Any], list[Change], ClientInfo]],
        actor: Actor,
        source: str,
        *,
        audits: Sequence[dict[str, Any]] = (),
    ) -> None:
        """``record_and_audit`` for many people at once ((contact, changes, client) each):
        the same entries, current states, events and audit entries, in a few writes for the
        whole batch (a batch handler's many submissions). ``audits``: more audit entries
        (``audit_doc``) written with them."""
        now = utcnow()
        groups = []
        envelopes: list[Envelope] = []
        docs = list(audits)
        texts: dict[str, None] = {}
        for contact, changes, client in batch:
            if not changes:
                continue
            entries = ledger_entries(contact, changes, actor, now)
            groups.append((entries, contact, [c.pending for c in changes]))
            texts.update(dict.fromkeys(c.text["_id"] for c in changes if c.text is not None))
            envelopes += [
                self._envelope(e, contact) for e in self._events_of(contact, changes, actor, now)
            ]
            docs.append(
                self.audit_doc(
                    AuditAction.consent_changed,
                    actor,
                    client,
                    federation_path=contact["federation_path"],
                    contact_id=contact["_id"],
                    detail={"changes": changes_detail(changes), "source": source},
                )
            )
        await self.consents.append_batch(groups, session)
        for text_id in texts:
            await self.consents.mark_text_used(text_id, now, session)
        if envelopes:
            await self.outbox.add(session, *envelopes)
        if docs:
            await self.consents.add_audits(docs, session)

    def audit_doc(
        self,
        action: AuditAction,
        actor: Actor,
        client: ClientInfo,
        *,
        federation_path: str,
        contact_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An audit entry to write with others (``record_many``)."""
        return self._audit_doc(
            action,
            actor,
            client,
            federation_path=federation_path,
            contact_id=contact_id,
            detail=detail,
        )

    @staticmethod
    def _events_of(
        contact: dict[str, Any], changes: list[Change], actor: Actor, now: datetime
    ) -> list[EventContract]:
        """The events of recorded changes: granted and revoked states, plus each change's
        own (a double opt-in's confirmation request)."""
        events: list[EventContract] = []
        for c in changes:
            if c.status is ConsentStatus.granted:
                events.append(
                    ConsentGrantedV1(
                        contact_id=contact["_id"],
                        channel=c.channel,
                        purpose=c.purpose,
                        source=c.source,
                        proof={k: v for k, v in c.proof.items() if k in EVENT_PROOF_KEYS},
                        granted_at=now,
                        text_hash=c.proof.get("text_hash"),
                        actor_kind=actor.kind.value,
                    )
                )
            elif c.status is ConsentStatus.revoked:
                events.append(
                    ConsentRevokedV1(
                        contact_id=contact["_id"],
                        channel=c.channel,
                        purpose=c.purpose,
                        source=c.source,
                        revoked_at=now,
                        actor_kind=actor.kind.value,
                    )
                )
            events.extend(c.events)
        return events

    # ------------------------------------------------------------ users' changes

    async def change(
        self,
        identity: Identity,
        contact_id: str,
        wanted: ConsentStatus,
        request: ChangeRequest,
        client: ClientInfo | None = None,
    ) -> tuple[ConsentStatus, bool]:
        """Record a grant (or a pending double opt-in request) or a revocation; returns
        (status, changed)."""
        client = client or ClientInfo()
        self.check_choice(request.channel, request.purpose)
        if request.double_opt_in:
            if wanted is not ConsentStatus.granted:
                raise InvalidField("only a grant can ask for confirmation", field="double_opt_in")
            check_double_opt_in(request.channel)
            wanted = ConsentStatus.pending
        contact = await self._contact_visible(identity, contact_id)
        actor = Actor.of(identity)

        async def work(session: AsyncClientSession) -> tuple[ConsentStatus, bool]:
            doc = await self.consents.current_doc(
                contact_id, request.channel, request.purpose, session
            )
            current = ConsentStatus(doc["status"]) if doc else None
            if wanted is not ConsentStatus.revoked and await self.is_suppressed(
                contact_id, session
            ):
                raise Refused(
                    "this person's address is on the suppression list (they objected to "
                    "everything or were erased): no consent can be recorded",
                    rule="suppressed",
                )
            if not needs_entry(current, wanted):
                return unchanged_status(current, wanted), False
            text = await self._text_for(request, contact, wanted, session)
            proof = proof_of(text=text, reference=request.reference, client=client.as_proof())
            if text is None and request.text_version:
                proof["text_version"] = request.text_version  # an objection is never refused
            pending = None
            extra: tuple[EventContract, ...] = ()
            if wanted is ConsentStatus.pending:
                pending, extra = self.confirmation_request(contact, request, proof, text, actor)
                proof = {**proof, "request_id": pending["request_id"]}
            change = Change(
                request.channel,
                request.purpose,
                wanted,
                request.source,
                proof,
                text=text,
                pending=pending,
                events=extra,
            )
            await self.record_and_audit(session, contact, [change], actor, client, request.source)
            return wanted, True

        return await self.store.run_transaction(work, what="consent.change")

    async def _text_for(
        self,
        request: ChangeRequest,
        contact: dict[str, Any],
        wanted: ConsentStatus,
        session: AsyncClientSession,
    ) -> dict[str, Any] | None:
        if not request.text_version:
            return None
        paths = ancestor_paths(contact["federation_path"])
        text = await self.consents.text_for(request.text_version, paths, session)
        if text is None and wanted is not ConsentStatus.revoked:
            raise InvalidField(
                "no consent text of this version for the contact's federation (create it "
                "first: POST /api/v1/consents/texts)",
                field="text_version",
            )
        return text

    def confirmation_request(
        self,
        contact: dict[str, Any],
        request: ChangeRequest,
        proof: dict[str, str],
        text: dict[str, Any] | None,
        actor: Actor,
        request_id: str | None = None,
    ) -> tuple[dict[str, Any], tuple[EventContract, ...]]:
        # A caller applying an event derives the id from it, so a redelivery asks the same
        # request (consent.forms); a user's request gets a fresh one.
        request_id = request_id or uuid.uuid4().hex
        token = self.confirm_tokens.sign(
            {
                "c": contact["_id"],
                "ch": request.channel.value,
                "p": request.purpose,
                "r": request_id,
            }
        )
        expires_at = self.confirm_tokens.verify(token).expires_at
        assert expires_at is not None
        expiry = datetime.fromtimestamp(expires_at, UTC)
        pending = {
            "request_id": request_id,
            "requested_at": utcnow(),
            "expires_at": expiry,
            "source": request.source,
            "proof": proof,
            "requested_by": actor.id,
        }
        event = ConsentConfirmationRequestedV1(
            request_id=request_id,
            contact_id=contact["_id"],
            channel=request.channel,
            purpose=request.purpose,
            confirm_url=f"{self.settings.public_base_url}{CONFIRM_PATH}?token={token}",
            expires_at=expiry,
            text_version=text["version"] if text else None,
        )
        return pending, (event,)

    async def view(
        self, identity: Identity, contact_id: str, client: ClientInfo | None = None
    ) -> dict[str, Any]:
        # The person view waits for the slowest of its four services, and this one made
        # the most round trips one after the other (the contact, then the merged ids, the
        # address hashes and the list). Every read that needs only the id goes at once;
        # nothing is answered or audited before the visibility check, and a contact of
        # another subtree costs the same reads (no timing tells it exists).
        contact, merged, own_hashes, current, history = await asyncio.gather(
            self.contacts.visible(identity, contact_id),
            self.contacts.merged_ids(contact_id),
            self.consents.hashes_of([contact_id]),
            self.consents.current_all(contact_id),
            self.consents.history(contact_id),
        )
        if contact is None or contact.get("erased"):
            raise NotFound("contact not found")
        hashes = own_hashes
        if merged:  # the addresses of the contacts merged into the person count too
            theirs = await self.consents.hashes_of(merged)
            hashes = {
                kind: list(dict.fromkeys([*own_hashes[kind], *theirs[kind]]))
                for kind in ("email", "phone")
            }
        # the audit entry and the suppression read at once; an entry that cannot be
        # written still fails the view
        _, suppressed = await asyncio.gather(
            self.view_audits.write(
                self._audit_doc(
                    AuditAction.consent_viewed,
                    Actor.of(identity),
                    client or ClientInfo(),
                    federation_path=contact["federation_path"],
                    contact_id=contact_id,
                )
            ),
            self._suppressed(hashes),
        )
        return {
            "contact_id": contact_id,
            "suppressed": suppressed,
            "consents": [
                {
                    **{k: d[k] for k in ("channel", "purpose", "status", "updated_at")},
                    "confirmation_expires_at": (d.get("pending") or {}).get("expires_at"),
                }
                for d in current
            ],
            "history": history,
        }

    # ------------------------------------------------------------ double opt-in (public)

    def read_confirmation(self, token: str) -> dict[str, str]:
        """What a confirmation link is about (TokenError if forged, altered, expired)."""
        data = self.confirm_tokens.verify(token).data
        values: dict[str, str] = {}
        for k in ("c", "ch", "p", "r"):
            v = data.get(k)
            if not isinstance(v, str) or not v:
                raise TokenError("the link is malformed")
            values[k] = v
        try:
            channel = Channel(values["ch"])
        except ValueError as exc:
            raise TokenError("the link is malformed") from exc
        return {
            "contact_id": values["c"],
            "channel": channel.value,
            "purpose": values["p"],
            "request_id": values["r"],
        }

    async def confirmation_page(self, token: str) -> dict[str, Any]:
        """The page shown before confirming: purpose, channel, the text agreed to, and
        whether there is still something to confirm. Changes nothing."""
        link = self.read_confirmation(token)
        state = ConfirmOutcome.no_longer_valid
        text = None
        contact = await self.contacts.get(link["contact_id"])
        if contact is not None:
            doc = await self.consents.current_doc(
                link["contact_id"], Channel(link["channel"]), link["purpose"], None
            )
            if doc and doc["status"] == ConsentStatus.granted:
                state = ConfirmOutcome.already_confirmed
            elif (
                doc
                and doc["status"] == ConsentStatus.pending
                and (doc.get("pending") or {}).get("request_id") == link["request_id"]
            ):
                state = ConfirmOutcome.confirmed  # i.e. "can be confirmed"
                version = doc["pending"].get("proof", {}).get("text_version")
                if version:
                    paths = ancestor_paths(contact["federation_path"])
                    text = await self.consents.text_for(version, paths, None)
        return {**link, "state": state, "text": text}

    async def confirm(self, token: str, client: ClientInfo) -> tuple[ConfirmOutcome, dict]:
        """The person confirms a pending consent with their link. A link whose request was
        revoked or replaced changes nothing."""
        link = self.read_confirmation(token)
        contact_id, channel, purpose = link["contact_id"], Channel(link["channel"]), link["purpose"]
        contact = await self.contacts.get(contact_id)
        if contact is None:
            return ConfirmOutcome.no_longer_valid, link

        async def work(session: AsyncClientSession) -> ConfirmOutcome:
            doc = await self.consents.current_doc(contact_id, channel, purpose, session)
            if doc and doc["status"] == ConsentStatus.granted:
                return ConfirmOutcome.already_confirmed
            pending = (doc or {}).get("pending") or {}
            if (
                not doc
                or doc["status"] != ConsentStatus.pending
                or pending.get("request_id") != link["request_id"]
                or await self.is_suppressed(contact_id, session)
            ):
                return ConfirmOutcome.no_longer_valid
            now = utcnow()
            proof = {
                **pending.get("proof", {}),
                "double_opt_in": "confirmed",
                "request_id": link["request_id"],
                "requested_at": _iso(pending["requested_at"]),
                "confirmed_at": _iso(now),
                **{f"confirmed_{k}": v for k, v in client.as_proof().items()},
            }
            source = pending.get("source") or Source.double_opt_in.value
            change = Change(channel, purpose, ConsentStatus.granted, source, proof)
            await self.record_and_audit(
                session, contact, [change], THE_PERSON, client, Source.double_opt_in.value
            )
            return ConfirmOutcome.confirmed

        # A mail scanner and the person often click the same link at once: the loser of
        # that write conflict runs again and finds the consent already confirmed.
        return await self.store.run_transaction(work, what="consent.confirm"), link

    # ------------------------------------------------------------ unsubscribe (public)

    def read_unsubscribe(self, token: str) -> tuple[str, str]:
        """(contact_id, purpose) of a genuine unsubscribe link (TokenError otherwise)."""
        return self.unsubscribe_tokens.verify(token)

    async def unsubscribe(
        self,
        token: str,
        scope: Literal["purpose", "all"],
        source: Source,
        client: ClientInfo,
    ) -> Unsubscribed:
        """The person withdraws from the link's purpose, or from everything (which also
        puts their addresses on the suppression list). Idempotent. A link addressed to a
        contact since merged acts on the contact it was merged into."""
        link_contact_id, purpose = self.read_unsubscribe(token)
        contact_id = (await self.contacts.survivors([link_contact_id]))[link_contact_id]
        outcome = Unsubscribed(contact_known=False, purpose=purpose)
        contact = await self.contacts.get(contact_id)
        if contact is None:
            return outcome  # erased, or unknown: there is nothing left to withdraw from
        outcome.contact_known = True
        if scope == "all":
            pairs = every_consent(self.settings.purposes, self.settings.tracking_purpose)
        else:
            pairs = [(Channel.email, purpose)]

        async def work(session: AsyncClientSession) -> Unsubscribed:
            proof = {**client.as_proof(), "scope": scope}
            if link_contact_id != contact_id:  # the email went to the contact merged since
                proof["link_contact_id"] = link_contact_id
            return await self._object(
                session,
                contact,
                purpose,
                pairs,
                scope=scope,
                source=source,
                proof=proof,
                client=client,
            )

        return await self.store.run_transaction(work, what="consent.unsubscribe")

    async def _object(
        self,
        session: AsyncClientSession,
        contact: dict[str, Any],
        purpose: str,
        pairs: list[tuple[Channel, str]],
        *,
        scope: Literal["purpose", "all"],
        source: Source,
        proof: dict[str, str],
        client: ClientInfo,
    ) -> Unsubscribed:
        """The person's objection, the one way it is recorded (unsubscribe links, one-click,
        complaints): ``pairs`` revoked, and with scope "all" their addresses put on the
        suppression list, audited as the person's own act. Idempotent."""
        contact_id = contact["_id"]
        result = Unsubscribed(contact_known=True, purpose=purpose)
        current = await self.statuses(contact_id, session)
        changes = [
            Change(channel, p, ConsentStatus.revoked, source.value, proof)
            for channel, p in pairs
            if needs_entry(current.get((channel, p)), ConsentStatus.revoked)
        ]
        result.revoked = [(c.channel.value, c.purpose) for c in changes]
        added: list[str] = []
        suppression: list[Envelope] = []
        if scope == "all":
            added, suppression = await self._suppression_of(session, contact, "objection")
            result.suppressed = len(added)
        if changes or suppression:
            await self._record(session, contact, changes, THE_PERSON, also=tuple(suppression))
        audits = []
        if changes:
            audits.append(
                self._audit_doc(
                    AuditAction.consent_changed,
                    THE_PERSON,
                    client,
                    federation_path=contact["federation_path"],
                    contact_id=contact_id,
                    detail={
                        "changes": changes_detail(changes),
                        "source": source.value,
                        "scope": scope,
                    },
                )
            )
        if added:
            audits.append(
                self._audit_doc(
                    AuditAction.suppression_added,
                    THE_PERSON,
                    client,
                    federation_path=contact["federation_path"],
                    contact_id=contact_id,
                    detail={"reason": "objection", "addresses": len(added)},
                )
            )
        if audits:
            await self.consents.add_audits(audits, session)
        return result

    # ------------------------------------------------------------ delivery feedback

    async def complaint(
        self,
        session: AsyncClientSession,
        contact_id: str,
        purpose: str,
        *,
        message_id: str,
    ) -> Unsubscribed:
        """The person reported a message as spam (message-complained): their objection to
        the message's purpose by email, recorded like an unsubscribe from that purpose
        (which puts nothing on the suppression list). A contact merged since is the
        contact it was merged into; an erased one has nothing left to object to."""
        survivor = (await self.contacts.survivors([contact_id], session))[contact_id]
        contact = await self.contacts.get(survivor, session)
        if contact is None:
            return Unsubscribed(contact_known=False, purpose=purpose)
        proof = {"message_id": message_id, "scope": "purpose"}
        return await self._object(
            session,
            contact,
            purpose,
            [(Channel.email, purpose)],
            scope="purpose",
            source=Source.complaint,
            proof=proof,
            client=ClientInfo(),
        )

    async def hard_bounce(
        self,
        session: AsyncClientSession,
        contact_id: str,
        address_hash: str,
        kind: Literal["email", "phone"],
        *,
        federation_id: str,
        federation_path: str,
        causation: Envelope,
    ) -> list[str]:
        """The address a message hard-bounced at joins the suppression list (that address
        only: the person's other addresses still work)."""
        return await self.suppress_contact(
            session,
            contact_id,
            federation_id=federation_id,
            federation_path=federation_path,
            reason="bounce",
            causation=causation,
            addresses=[(address_hash, kind)],
        )

    # ------------------------------------------------------------ SMS STOP (public)

    def verify_webhook(
        self, timestamp: str | None, signature: str | None, body: bytes, now: float
    ) -> None:
        verify_signature(
            self.settings.webhook_secret,
            timestamp,
            signature,
            body,
            now=now,
            tolerance_seconds=self.settings.webhook_tolerance_seconds,
        )

    async def sms_received(
        self, sender: str, text: str, message_id: str | None, client: ClientInfo
    ) -> dict[str, Any]:
        """An inbound SMS: a STOP revokes every SMS consent of every contact with that
        number (an objection is recorded even for purposes never asked); a contact merged
        since is the contact it was merged into."""
        if not is_stop_message(text, self.settings.stop_keywords):
            return {"status": "ignored", "contacts": 0, "revoked": 0}
        hashed = phone_hash(sender, self.settings.suppression_salt)
        with_phone = await self.consents.contacts_with_phone(hashed) if hashed else []
        contact_ids = list(dict.fromkeys((await self.contacts.survivors(with_phone)).values()))
        revoked = 0
        for contact_id in contact_ids:
            contact = await self.contacts.get(contact_id)
            if contact is None:
                continue
            revoked += await self._stop_one(contact, message_id, client)
        log.info("consent.sms_stop", contacts=len(contact_ids), revoked=revoked)
        return {"status": "stopped", "contacts": len(contact_ids), "revoked": revoked}

    async def _stop_one(
        self, contact: dict[str, Any], message_id: str | None, client: ClientInfo
    ) -> int:
        contact_id = contact["_id"]

        async def work(session: AsyncClientSession) -> int:
            current = await self.statuses(contact_id, session)
            proof = {"sms_message_id": message_id} if message_id else {}
            changes = [
                Change(Channel.sms, purpose, ConsentStatus.revoked, Source.sms_stop.value, proof)
                for purpose in self.settings.purposes
                if needs_entry(current.get((Channel.sms, purpose)), ConsentStatus.revoked)
            ]
            if changes:
                await self.record_and_audit(
                    session, contact, changes, THE_PERSON, client, Source.sms_stop.value
                )
            return len(changes)

        return await self.store.run_transaction(work, what="consent.sms_stop")

    # ------------------------------------------------------------ suppression list

    async def _suppression_of(
        self,
        session: AsyncClientSession,
        contact: dict[str, Any],
        reason: SuppressionReason,
        causation: Envelope | None = None,
        addresses: Sequence[tuple[str, AddressKind]] | None = None,
    ) -> tuple[list[str], list[Envelope]]:
        """Put every email and phone hash of the contact (or only ``addresses``: (hash,
        kind) pairs) not yet on the suppression list on it; returns the hashes added and
        their suppression-added events (to publish in the same transaction): the person's,
        those of contacts merged into them too."""
        if addresses is None:
            hashes = await self.consents.hashes_of(
                await self.person_ids(contact["_id"], session), session
            )
            kinds: tuple[AddressKind, ...] = ("email", "phone")
            addresses = [(h, kind) for kind in kinds for h in hashes[kind]]
        known = await self.consents.suppressed_among([h for h, _ in addresses], session)
        now = utcnow()
        new: list[tuple[str, AddressKind]] = []
        for address_hash, kind in addresses:
            if address_hash not in known and address_hash not in {h for h, _ in new}:
                new.append((address_hash, kind))
        if not new:
            return [], []
        await self.consents.add_suppressions(new, reason, now, session)
        events = [
            self._envelope(
                SuppressionAddedV1(
                    address_hash=address_hash, kind=kind, reason=reason, suppressed_at=now
                ),
                contact,
                causation,
            )
            for address_hash, kind in new
        ]
        return [h for h, _ in new], events

    async def _suppress(
        self,
        session: AsyncClientSession,
        contact: dict[str, Any],
        reason: SuppressionReason,
        actor: Actor,
        client: ClientInfo,
        causation: Envelope | None = None,
        addresses: Sequence[tuple[str, AddressKind]] | None = None,
    ) -> list[str]:
        added, events = await self._suppression_of(session, contact, reason, causation, addresses)
        if events:
            await self.outbox.add(session, *events)
            await self.write_audit(
                session,
                AuditAction.suppression_added,
                actor,
                client,
                federation_path=contact["federation_path"],
                contact_id=contact["_id"],
                detail={"reason": reason, "addresses": len(added)},
            )
        return added

    async def suppress_contact(
        self,
        session: AsyncClientSession,
        contact_id: str,
        *,
        federation_id: str,
        federation_path: str,
        reason: SuppressionReason,
        causation: Envelope | None = None,
        addresses: Sequence[tuple[str, AddressKind]] | None = None,
    ) -> list[str]:
        """For other use cases (erasure, a hard bounce): suppress the contact's addresses
        (or only ``addresses``) inside the caller's transaction, before its hashes are
        forgotten."""
        contact = {
            "_id": contact_id,
            "federation_id": federation_id,
            "federation_path": federation_path,
        }
        actor = _SUPPRESSION_ACTORS[reason]
        return await self._suppress(
            session, contact, reason, actor, ClientInfo(), causation, addresses
        )

    async def suppress_erased(
        self,
        session: AsyncClientSession,
        contact_id: str,
        *,
        federation_id: str,
        federation_path: str,
        causation: Envelope,
    ) -> None:
        """An erased person's addresses (and those of every contact merged into them) join
        the suppression list; then consent forgets their hashes."""
        await self.suppress_contact(
            session,
            contact_id,
            federation_id=federation_id,
            federation_path=federation_path,
            reason="erasure",
            causation=causation,
        )
        for person_id in await self.person_ids(contact_id, session):
            await self.consents.forget_hashes(person_id, session)

    # ------------------------------------------------------------ merges

    async def merge_contacts(
        self, session: AsyncClientSession, merged_id: str, survivor_id: str, merged_by: str
    ) -> Merged:
        """contact-merged: the merged contact's decisions the survivor did not have (or
        had older) become the survivor's current consents, recorded and published as the
        survivor's; then the merged contact's history joins the survivor's. The merged id
        is remembered as the survivor's (its links and STOP replies reach the survivor, its
        data key is destroyed with theirs) and its address hashes are kept for STOP. A
        replay changes nothing. If the survivor was merged on since, its own survivor takes
        over; if it was erased, nothing is carried (the caller erases the merged id)."""
        # Outside the transaction, idempotent: the merged contact's key is the person's.
        destroyed = await vault_for(self.store).link(merged_id, survivor_id)
        direct = survivor_id
        survivor_id = (await self.contacts.survivors([survivor_id], session))[survivor_id]
        if await self.contacts.is_erased(survivor_id, session):
            return Merged(
                survivor_id,
                0,
                survivor_erased=True,
                keys_destroyed=destroyed.subjects if destroyed else (),
            )
        survivor = await self.contacts.get(survivor_id, session)
        if survivor is None:
            raise Awaiting(f"surviving contact {survivor_id} not known yet")
        carried = carried_over(
            await self.consents.current_all(merged_id, session),
            await self.consents.current_all(survivor_id, session),
        )
        changes = [
            Change(
                Channel(doc["channel"]),
                doc["purpose"],
                ConsentStatus(doc["status"]),
                Source.contact_merge.value,
                {"merged_contact_id": merged_id, "decided_at": _iso(doc["updated_at"])},
            )
            for doc in carried
        ]
        await self.consents.merge_ledger(merged_id, survivor_id, session)
        if changes:
            await self._record(session, survivor, changes, Actor(merged_by, ActorKind.user))
        await self.contacts.forget_merged(merged_id, direct, session)
        return Merged(survivor_id, len(changes))

    # ------------------------------------------------------------ consent texts

    def _read_scope(self, identity: Identity) -> dict[str, Any]:
        """Texts of the caller's subtree, and those of its ancestors (usable, read-only)."""
        return {
            "$or": [
                subtree_filter(identity.federation_path),
                {"federation_path": {"$in": ancestor_paths(identity.federation_path)}},
            ]
        }

    async def create_text(
        self,
        identity: Identity,
        *,
        version: str,
        title: str,
        body: str,
        language: str,
        federation_id: str | None,
        client: ClientInfo,
    ) -> dict[str, Any]:
        self._check_text(body)
        fed_id, fed_path = await self.federations.resolve(identity, federation_id)
        now = utcnow()
        doc = {
            "_id": uuid.uuid4().hex,
            "federation_id": fed_id,
            "federation_path": fed_path,
            "version": version,
            "title": title,
            "body": body,
            "language": language,
            "sha256": text_sha256(body),
            "used": False,
            "first_used_at": None,
            "created_at": now,
            "created_by": identity.user_id,
            "updated_at": now,
            "revision": 1,
        }

        async def work(session: AsyncClientSession) -> None:
            await self.consents.insert_text(doc, session)
            await self.write_audit(
                session,
                AuditAction.text_created,
                Actor.of(identity),
                client,
                federation_path=fed_path,
                detail={"text_id": doc["_id"], "version": version, "sha256": doc["sha256"]},
            )
            await self.outbox.add(session, self._text_published(doc))

        try:
            await self.store.run_transaction(work, what="consent.create_text")
        except DuplicateKeyError:
            existing = await self.consents.texts(
                {"federation_id": fed_id, "version": version}, limit=1
            )
            raise Conflict(
                "a consent text of this version already exists in this federation",
                existing_id=existing[0]["_id"] if existing else None,
            ) from None
        return doc

    def _text_published(self, doc: dict[str, Any], *, withdrawn: bool = False) -> Envelope:
        """consent-text-published: contacts keeps a copy so public forms show the exact
        text; ``revision`` orders the copies (a withdrawal comes after every change)."""
        return self._envelope(
            ConsentTextPublishedV1(
                text_id=doc["_id"],
                version=doc["version"],
                title=doc["title"],
                body=doc["body"],
                language=doc["language"],
                sha256=doc["sha256"],
                withdrawn=withdrawn,
                revision=doc.get("revision", 0) + (1 if withdrawn else 0),
            ),
            doc,
        )

    def _check_text(self, body: str) -> None:
        if not body.strip():
            raise InvalidField("must not be blank", field="body")
        if len(body) > self.settings.text_max_chars:
            raise InvalidField(
                f"must be at most {self.settings.text_max_chars} characters", field="body"
            )

    async def texts(self, identity: Identity, limit: int) -> list[dict[str, Any]]:
        return await self.consents.texts(self._read_scope(identity), limit)

    async def text(self, identity: Identity, text_id: str) -> dict[str, Any]:
        doc = await self.consents.text(text_id, self._read_scope(identity))
        if doc is None:
            raise NotFound("consent text not found")
        return doc

    async def update_text(
        self,
        identity: Identity,
        text_id: str,
        *,
        title: str | None,
        body: str | None,
        language: str | None,
        client: ClientInfo,
    ) -> dict[str, Any]:
        """A text may change until it is first used as proof; then it is immutable (a new
        version is created instead)."""
        scope = identity.scope()
        doc = await self.consents.text(text_id, scope)
        if doc is None:
            raise NotFound("consent text not found")
        fields: dict[str, Any] = {"updated_at": utcnow()}
        if title is not None:
            fields["title"] = title
        if language is not None:
            fields["language"] = language
        if body is not None:
            self._check_text(body)
            fields["body"] = body
            fields["sha256"] = text_sha256(body)
        if doc["used"]:
            raise _text_used()

        async def work(session: AsyncClientSession) -> dict[str, Any]:
            changed = await self.consents.update_unused_text(text_id, scope, fields, session)
            if changed is None:
                raise _text_used()
            await self.write_audit(
                session,
                AuditAction.text_updated,
                Actor.of(identity),
                client,
                federation_path=doc["federation_path"],
                detail={"text_id": text_id, "version": doc["version"], "changed": sorted(fields)},
            )
            await self.outbox.add(session, self._text_published(changed))
            return changed

        return await self.store.run_transaction(work, what="consent.update_text")

    async def delete_text(self, identity: Identity, text_id: str, client: ClientInfo) -> None:
        scope = identity.scope()
        doc = await self.consents.text(text_id, scope)
        if doc is None:
            raise NotFound("consent text not found")
        if doc["used"]:
            raise _text_used()

        async def work(session: AsyncClientSession) -> None:
            # re-read in the transaction: the withdrawal's revision follows the last change
            current = await self.consents.text(text_id, scope, session)
            if current is None or current["used"]:
                raise _text_used()
            if not await self.consents.delete_unused_text(text_id, scope, session):
                raise _text_used()
            await self.write_audit(
                session,
                AuditAction.text_deleted,
                Actor.of(identity),
                client,
                federation_path=doc["federation_path"],
                detail={"text_id": text_id, "version": doc["version"]},
            )
            await self.outbox.add(session, self._text_published(current, withdrawn=True))

        await self.store.run_transaction(work, what="consent.delete_text")

    # ------------------------------------------------------------ audit log (DPO)

    async def audit(
        self,
        identity: Identity,
        *,
        contact_id: str | None,
        action: str | None,
        actor: str | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = limit or min(self.settings.audit_default_limit, self.settings.max_page_size)
        if limit > self.settings.max_page_size:
            raise InvalidField(f"must be at most {self.settings.max_page_size}", field="limit")
        if since and until and since >= until:
            raise InvalidField("must be after 'since'", field="until")
        filters: dict[str, Any] = {}
        if contact_id:
            filters["contact_id"] = contact_id
        if action:
            filters["action"] = action
        if actor:
            filters["actor"] = actor
        if since or until:
            filters["at"] = {
                **({"$gte": since} if since else {}),
                **({"$lt": until} if until else {}),
            }
        items = await self.consents.audit_page(identity, filters, _read_cursor(cursor), limit + 1)
        next_cursor = _cursor(items[limit - 1]) if len(items) > limit else None
        return items[:limit], next_cursor


def _cursor(doc: dict[str, Any]) -> str:
    at = doc["at"] if doc["at"].tzinfo else doc["at"].replace(tzinfo=UTC)
    millis = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return f"{millis}:{doc['_id']}"


def _read_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    millis, sep, last_id = cursor.partition(":")
    # ASCII digits only ("²" is a digit to str.isdigit, not to int), and a time a datetime
    # can hold: anything else is a 422 naming the cursor, never an overflow (500)
    if not sep or not (millis.isascii() and millis.isdigit()) or not last_id:
        raise InvalidField("not a cursor this endpoint returned", field="cursor")
    try:
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(millis))
    except OverflowError:
        raise InvalidField("not a cursor this endpoint returned", field="cursor") from None
    return at, last_id


def _text_used() -> Refused:
    return Refused(
        "this consent text is the proof of recorded consents: it can no longer change; "
        "create a new version instead",
        rule="text_used",
    )
