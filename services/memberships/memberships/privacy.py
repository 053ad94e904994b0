"""Privacy in the memberships service: the person's memberships, payments and donations
for an access export (DPO only), and erasure.

Erasure deletes the person's memberships and their contact projection, but payment
records (dues and donations) are required by political-finance law (donor lists filed
with the CNCCFP, tax receipts, accounts kept for years): they are kept, PSEUDONYMISED: the
contact id is replaced by a pseudonym minted for this erasure (one per person, so a
donor's records still add up for the legal ceilings), linked to nothing that identifies
the person. The erasure-completed answer says what was kept and why.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.app import IdPath
from tribune_shared.auth import CurrentIdentity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import NotFound
from tribune_shared.events import Envelope, utcnow
from tribune_shared.outbox import Outbox
from tribune_shared.privacy import dpo_router, erasure_completed, erasure_request
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler

from memberships.people import People
from memberships.people.store import PEOPLE
from memberships.receipts.store import RECEIPTS
from memberships.store import MEMBERSHIPS, PAYMENTS, SCHEDULES

SERVICE = "memberships"

#: collections whose documents about the person are deleted
DELETED: list[tuple[str, str]] = [(MEMBERSHIPS, "contact_id"), (SCHEDULES, "contact_id")]
#: collections kept by law, pseudonymised (the person's field gets the pseudonym)
PSEUDONYMISED: list[tuple[str, str, str]] = [
    (
        PAYMENTS,
        "contact_id",
        "payment records (dues and donations) kept pseudonymised: political-finance law "
        "(donor and receipt records)",
    ),
    (
        RECEIPTS,
        "contact_id",
        "tax receipts kept pseudonymised, with the donor's name and tax address until six "
        "years after their issue (livre des procédures fiscales, art. L102 E)",
    ),
]


def new_pseudonym() -> str:
    """A pseudonym for one erased person: random, so it leads back to no one."""
    return f"pseudonym-{uuid.uuid4().hex}"


def legal_reasons(kept: dict[str, int]) -> list[str]:
    """The erasure answer's ``kept_for_legal_reasons`` for the records kept."""
    reasons = {c: why for c, _, why in PSEUDONYMISED}
    return [f"{collection}: {n} {reasons[collection]}" for collection, n in kept.items() if n]


class MembershipsPrivacyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def person(self, identity_scope: dict[str, Any], contact_id: str) -> dict[str, Any]:
        query = {"contact_id": contact_id, **identity_scope}
        memberships = (
            await self.store[MEMBERSHIPS].find(query).sort("starts_on", DESCENDING).to_list()
        )
        payments = (
            await self.store[PAYMENTS]
            .find(query)
            .sort([("paid_at", DESCENDING), ("_id", ASCENDING)])
            .to_list()
        )
        receipts = (
            await self.store[RECEIPTS]
            .find(query)
            .sort([("issued_at", DESCENDING), ("_id", ASCENDING)])
            .to_list()
        )
        schedules = await self.store[SCHEDULES].find(query).sort("_id", ASCENDING).to_list()
        # the name and postal address kept for receipts (people projection)
        identity = await self.store[PEOPLE].find_one({"_id": contact_id, "erased": {"$ne": True}})
        return {
            "memberships": memberships,
            "payments": payments,
            "receipts": receipts,
            "schedules": schedules,
            "identity": identity,
        }

    async def erase(
        self, contact_id: str, pseudonym: str, session: AsyncClientSession
    ) -> dict[str, int]:
        """Delete what may go; pseudonymise what the law keeps. Counts kept per collection."""
        for collection, field in DELETED:
            await self.store[collection].delete_many({field: contact_id}, session=session)
        # A cheque's drawer name (memberships.payments) is the person's, not what the law
        # keeps with the payment: it goes (the slip's bank copy has it).
        await self.store[PAYMENTS].update_many(
            {"contact_id": contact_id, "details.drawer": {"$exists": True}},
            {"$unset": {"details.drawer": ""}},
            session=session,
        )
        kept: dict[str, int] = {}
        now = utcnow()
        for collection, field, _ in PSEUDONYMISED:
            result = await self.store[collection].update_many(
                {field: contact_id},
                {"$set": {field: pseudonym, "pseudonymised_at": now}},
                session=session,
            )
            kept[collection] = result.modified_count
        return kept


def erasure_handlers(store: Store) -> dict[str, Handler]:
    data = MembershipsPrivacyStore(store)
    directory = ContactDirectory(store)
    people = People(store)
    outbox = Outbox(store)

    async def on_erasure_requested(envelope: Envelope, session: AsyncClientSession) -> None:
        event = erasure_request(envelope)
        kept = await data.erase(event.contact_id, new_pseudonym(), session)
        await directory.forget(event.contact_id, session)
        await people.forget(event.contact_id, session)
        await outbox.forget_published(event.contact_id, session)
        await outbox.add(session, erasure_completed(envelope, SERVICE, legal_reasons(kept)))

    return {"erasure-requested": on_erasure_requested}


def _out(doc: dict[str, Any], id_name: str) -> dict[str, Any]:
    return {id_name: doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}


router = dpo_router("/api/v1/memberships")


@router.get("/privacy/{contact_id}")
async def person_data(
    request: Request,
    identity: CurrentIdentity,
    contact_id: IdPath,
) -> dict:
    """Everything memberships holds on the person: memberships (with their history),
    payments of dues, donations, tax receipts, recurring schedules and the name and
    address kept for receipts (the access export's part; DPO)."""
    store: Store = request.app.state.store
    if await ContactDirectory(store).visible(identity, contact_id) is None:
        raise NotFound("contact not found")
    found = await MembershipsPrivacyStore(store).person(identity.scope(), contact_id)
    payments = [_out(d, "payment_id") for d in found["payments"]]
    identity_doc = found["identity"]
    return {
        "contact_id": contact_id,
        "memberships": [_out(d, "membership_id") for d in found["memberships"]],
        "payments": [p for p in payments if p.get("purpose") == "dues"],
        "donations": [p for p in payments if p.get("purpose") == "donation"],
        "receipts": [_out(d, "receipt_id") for d in found["receipts"]],
        "schedules": [_out(d, "schedule_id") for d in found["schedules"]],
        "identity": _out(identity_doc, "contact_id") if identity_doc else None,
    }
