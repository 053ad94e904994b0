"""Privacy use cases: access and erasure requests, their receipts, retention sweeps."""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import Conflict, NotFound, Refused
from tribune_shared.events import Envelope, decode_as, new_envelope, utcnow
from tribune_shared.events.contracts import ErasureCompletedV1, ErasureRequestedV1
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.privacy import erasure_completed, erasure_request
from tribune_shared.store import Store
from tribune_shared.vault import vault_for

from consent.privacy import (
    RequestKind,
    RequestStatus,
    RetentionRule,
    check_received_at,
    completions_missing,
    deadline,
    is_overdue,
    receipt,
    retention_due,
)
from consent.privacy_store import PrivacyStore
from consent.settings import ConsentSettings
from consent.store import AUDIT

log = get_logger(__name__)

SERVICE = "consent"
#: the actor recorded for what the retention sweep does
RETENTION_ACTOR = "retention"


def view(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A request as the API shows it (with its overdue flag at ``now``)."""
    out = {k: v for k, v in doc.items() if k not in ("_id", "active_erasure")}
    return {"request_id": doc["_id"], **out, "overdue": is_overdue(doc, now)}


class PrivacyService:
    def __init__(self, settings: ConsentSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.data = PrivacyStore(store)
        self.contacts = ContactDirectory(store)
        self.outbox = Outbox(store)
        self.vault = vault_for(store)

    async def _audit(
        self,
        action: str,
        *,
        actor: str,
        contact_id: str,
        federation_path: str,
        at: datetime,
        session: AsyncClientSession | None,
        role: str | None = None,
        **detail: Any,
    ) -> None:
        """An entry of consent's append-only audit log (same shape as the ledger's)."""
        micros = int(at.timestamp() * 1_000_000)
        await self.store[AUDIT].insert_one(
            {
                "_id": f"{micros:016x}{uuid.uuid4().hex[:16]}",  # time-sortable
                "at": at,
                "action": action,
                "actor": actor,
                # a user (the DPO), or None for the platform itself (retention, the fan-in)
                "actor_kind": None if actor in (SERVICE, RETENTION_ACTOR) else "user",
                "role": role,
                "contact_id": contact_id,
                "federation_path": federation_path,
                "ip": None,
                "user_agent": None,
                "detail": detail,
            },
            session=session,
        )

    # ------------------------------------------------------------ recording requests
    async def create(
        self,
        identity: Identity,
        kind: RequestKind,
        contact_id: str,
        received_at: datetime | None = None,
        note: str | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        now = now or utcnow()
        received_at = received_at or now
        check_received_at(received_at, now, self.settings.privacy_deadline_months)
        contact = await self.contacts.visible(identity, contact_id)
        if contact is None:
            raise NotFound("contact not found", field="contact_id")
        if kind is RequestKind.erasure:
            doc = await self.start_erasure(
                contact_id,
                contact,
                received_at=received_at,
                actor=identity.user_id,
                role=identity.role.value,
                origin="dpo",
                action="erase",
                note=note,
                now=now,
            )
        else:
            doc = self._new_request(
                RequestKind.access, contact_id, contact, received_at, identity.user_id, now
            )
            doc.update(status=RequestStatus.open.value, origin="dpo", note=note)
            async with self.store.transaction() as session:
                await self.data.insert_request(doc, session)
                await self._audit(
                    "privacy_access_requested",
                    actor=identity.user_id,
                    role=identity.role.value,
                    contact_id=contact_id,
                    federation_path=contact["federation_path"],
                    at=now,
                    session=session,
                    request_id=doc["_id"],
                )
        log.info("privacy.request_recorded", request_id=doc["_id"], kind=kind.value)
        return view(doc, now)

    def _new_request(
        self,
        kind: RequestKind,
        contact_id: str,
        contact: dict[str, Any],
        received_at: datetime,
        actor: str,
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "_id": uuid.uuid4().hex,
            "kind": kind.value,
            "contact_id": contact_id,
            "federation_id": contact["federation_id"],
            "federation_path": contact["federation_path"],
            "received_at": received_at,
            "deadline": deadline(received_at, self.settings.privacy_deadline_months),
            "recorded_at": now,
            "recorded_by": actor,
            "completed_at": None,
        }

    async def start_erasure(
        self,
        contact_id: str,
        contact: dict[str, Any],
        *,
        received_at: datetime,
        actor: str,
        origin: str,
        action: str,
        note: str | None,
        now: datetime,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Record an erasure and fan it out (erasure-requested), all or nothing; the
        person's data key (and those of every contact merged into them) is destroyed
        first, so from now on no copy of their events can be read, whatever a late or
        replaying consumer does. The request lists the destroyed keys: a restore of an older
        backup of the vault must destroy them again (consent.cli vault-redestroy)."""
        existing = await self.data.active_erasure(contact_id)
        if existing is not None:
            raise Conflict("an erasure of this contact is in progress", existing_id=existing["_id"])
        destroyed = await self.vault.destroy(contact_id)
        doc = self._new_request(RequestKind.erasure, contact_id, contact, received_at, actor, now)
        doc.update(
            status=RequestStatus.in_progress.value,
            origin=origin,
            action=action,
            note=note,
            active_erasure=contact_id,
            expected_services=list(self.settings.erasure_services),
            services={},
            key_destroyed_at=destroyed.at,
            keys_destroyed=list(destroyed.subjects),
            receipt=None,
        )
        event = ErasureRequestedV1(request_id=doc["_id"], contact_id=contact_id, requested_at=now)
        try:
            async with self.store.transaction() as session:
                await self.data.insert_request(doc, session)
                await self.data.mark_clock_erased(contact_id, now, session)
                await self._audit(
                    "privacy_erasure_requested",
                    actor=actor,
                    role=role,
                    contact_id=contact_id,
                    federation_path=contact["federation_path"],
                    at=now,
                    session=session,
                    request_id=doc["_id"],
                    origin=origin,
                    erasure_action=action,
                )
                await self.outbox.add(
                    session,
                    new_envelope(
                        event,
                        producer=SERVICE,
                        federation_id=contact["federation_id"],
                        federation_path=contact["federation_path"],
                    ),
                )
        except DuplicateKeyError:
            existing = await self.data.active_erasure(contact_id)
            raise Conflict(
                "an erasure of this contact is in progress",
                existing_id=existing["_id"] if existing else None,
            ) from None
        return doc

    # ------------------------------------------------------------ reads
    async def list(
        self,
        identity: Identity,
        *,
        overdue: bool | None = None,
        kind: RequestKind | None = None,
        status: RequestStatus | None = None,
        limit: int | None = None,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        now = now or utcnow()
        docs = await self.data.list_requests(
            identity,
            now=now,
            overdue=overdue,
            kind=kind.value if kind else None,
            status=status.value if status else None,
            limit=limit or self.settings.max_page_size,
        )
        return [view(d, now) for d in docs]

    async def get(self, identity: Identity, request_id: str) -> dict[str, Any]:
        doc = await self.data.request(request_id, identity)
        if doc is None:
            raise NotFound("privacy request not found")
        return view(doc, utcnow())

    async def record_export(
        self, identity: Identity, request_id: str, services: builtins.list[str]
    ) -> dict[str, Any]:
        """The gateway exported everything about the person: the access request is
        answered (the first export closes it; later ones are recorded too)."""
        doc = await self.data.request(request_id, identity)
        if doc is None:
            raise NotFound("privacy request not found")
        if doc["kind"] != RequestKind.access:
            raise Refused("only an access request is answered with an export", rule="kind")
        now = utcnow()
        export = {"at": now, "by": identity.user_id, "services": services}
        update: dict[str, Any] = {"$push": {"exports": export}}
        if doc["status"] != RequestStatus.completed:
            update["$set"] = {"status": RequestStatus.completed.value, "completed_at": now}
        async with self.store.transaction() as session:
            doc = await self.data.update_request(request_id, update, session)
            if doc is None:  # deleted since it was read
                raise NotFound("privacy request not found")
            await self._audit(
                "privacy_data_exported",
                actor=identity.user_id,
                role=identity.role.value,
                contact_id=doc["contact_id"],
                federation_path=doc["federation_path"],
                at=now,
                session=session,
                request_id=request_id,
                services=services,
            )
        return view(doc, now)

    async def person_data(self, identity: Identity, contact_id: str) -> dict[str, Any]:
        """What consent holds on a person (the access export's part)."""
        if await self.contacts.visible(identity, contact_id) is None:
            raise NotFound("contact not found")
        strip = ("_id", "federation_path")
        return {
            "contact_id": contact_id,
            "consents": [
                {k: v for k, v in d.items() if k not in strip}
                for d in await self.data.current(contact_id)
            ],
            "history": [
                {k: v for k, v in d.items() if k not in strip}
                for d in await self.data.ledger(contact_id)
            ],
            "privacy_requests": [
                {
                    "request_id": d["_id"],
                    "kind": d["kind"],
                    "status": d["status"],
                    "received_at": d["received_at"],
                    "deadline": d["deadline"],
                }
                for d in await self.data.requests_of(contact_id)
            ],
        }

    # ------------------------------------------------------------ erasure fan-in
    async def on_erasure_requested(self, envelope: Envelope, session: AsyncClientSession) -> None:
        """Consent erases its own data on the person (ledger, current state, its contact
        projection becomes a tombstone) and answers erasure-completed. The request itself
        and the audit entries are kept: they prove the erasure (ids and dates only)."""
        event = erasure_request(envelope)
        # Idempotent (done at request time); again now, for merges linked meanwhile.
        destroyed = await self.vault.destroy(event.contact_id)
        ids = [event.contact_id, *await self.contacts.merged_ids(event.contact_id, session)]
        await self._erase_contacts(ids, session)
        await self.data.add_destroyed_keys(event.contact_id, destroyed.subjects, session)
        await self.outbox.add(session, erasure_completed(envelope, SERVICE))

    async def _erase_contacts(self, ids: builtins.list[str], session: AsyncClientSession) -> None:
        """Consent's data on one person under each of their ids (their own and those merged
        into them): ledger, current state, contact projection (which also held which ids
        were merged), published outbox rows; their clocks stop. Their address hashes went
        before, onto the suppression list (ConsentService.suppress_erased)."""
        now = utcnow()
        for contact_id in ids:
            await self.data.erase_person(contact_id, session)
            await self.data.mark_clock_erased(contact_id, now, session)
            await self.contacts.forget(contact_id, session)
            await self.outbox.forget_published(contact_id, session)

    async def erase_merged(
        self,
        session: AsyncClientSession,
        merged_id: str,
        survivor_id: str,
        keys_destroyed: tuple[str, ...],
    ) -> None:
        """contact-merged seen after the survivor's erasure: the merged contact was the same
        person, so what consent holds under its id goes too, and the survivor's erasure
        requests list its destroyed key."""
        ids = [merged_id, *await self.contacts.merged_ids(merged_id, session)]
        await self._erase_contacts(ids, session)
        await self.data.add_destroyed_keys(survivor_id, keys_destroyed or tuple(ids), session)
        log.info("privacy.merged_into_erased", merged=len(ids))

    async def on_erasure_completed(self, envelope: Envelope, session: AsyncClientSession) -> None:
        """Record one service's answer; the last expected one closes the request with its
        receipt. A repeated answer keeps the first completion time."""
        event = decode_as(envelope, ErasureCompletedV1)
        doc = await self.data.request(event.request_id, session=session)
        if doc is None or doc["kind"] != RequestKind.erasure:
            log.warning("privacy.unknown_erasure_answer", request_id=event.request_id)
            return
        services = dict(doc.get("services") or {})
        if event.service in services:
            return
        services[event.service] = {
            "completed_at": event.completed_at,
            "kept_for_legal_reasons": event.kept_for_legal_reasons,
        }
        update: dict[str, Any] = {"$set": {f"services.{event.service}": services[event.service]}}
        expected = doc.get("expected_services") or self.settings.erasure_services
        if doc["status"] != RequestStatus.completed and not completions_missing(expected, services):
            now = utcnow()
            update["$set"].update(
                status=RequestStatus.completed.value,
                completed_at=now,
                receipt=receipt(
                    expected,
                    services,
                    key_destroyed_at=doc.get("key_destroyed_at"),
                    keys_destroyed=doc.get("keys_destroyed") or [],
                    completed_at=now,
                ),
            )
            update["$unset"] = {"active_erasure": ""}
            await self._audit(
                "privacy_erasure_completed",
                actor=SERVICE,
                contact_id=doc["contact_id"],
                federation_path=doc["federation_path"],
                at=now,
                session=session,
                request_id=doc["_id"],
            )
            log.info("privacy.erasure_completed", request_id=doc["_id"])
        await self.data.update_request(doc["_id"], update, session)

    # ------------------------------------------------------------ retention
    async def sweep(self, now: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """Raise an erasure for every person whose retention clock ran out at ``now``
        (testable with any instant); each leaves an audit entry. Returns the requests."""
        now = now or utcnow()
        raised: list[dict[str, Any]] = []
        for rule in self.settings.retention_rules:
            for clock in await self.data.due_clocks(rule, now, self.settings.retention_batch_size):
                if not retention_due(rule, clock, now):
                    continue
                doc = await self._retention_erasure(rule, clock, now)
                if doc is not None:
                    raised.append(doc)
        if raised:
            log.info("retention.swept", erasures=len(raised))
        return raised

    async def _retention_erasure(
        self, rule: RetentionRule, clock: dict[str, Any], now: datetime
    ) -> dict[str, Any] | None:
        contact_id = clock["_id"]
        contact = await self.contacts.get(contact_id)
        if contact is None:  # never projected, or already erased: nothing to place it in
            contact = {
                "federation_id": clock.get("federation_id"),
                "federation_path": clock.get("federation_path"),
            }
            if not contact["federation_path"]:
                return None
        try:
            return await self.start_erasure(
                contact_id,
                contact,
                received_at=now,
                actor=RETENTION_ACTOR,
                origin=f"retention:{rule.name}",
                action=rule.action,
                note=f"retention rule {rule.name}: {rule.clock} after {rule.after_months} months",
                now=now,
            )
        except Conflict:
            return None  # an erasure is already in progress
