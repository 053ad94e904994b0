"""The legal rules a payment must pass before it is accepted, the pre-capture check, and
the elections whose campaign accounts take gifts.

The recording of a payment (``memberships.service``) calls ``GiftRules.admit`` inside its
transaction, after the plan is known and before anything is written: a refusal there
changes nothing (or, for money a provider already captured, records the payment flagged
for refund).

Why the yearly ceiling holds under concurrency: ``admit`` first writes a guard document
per (person, year) (and per (person, election)) in the recording transaction, then adds
up the person's accepted payments from the store in the same transaction. Two payments
of one person running at once both write the guard: one transaction loses the write
conflict, the transaction runner runs it again, and its new snapshot holds the winner's
payment. The totals are never stored: a refund, a chargeback or a flag takes a payment
out of them at once, and a merged contact's payments (moved to the survivor) add up."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import InvalidField, NotFound, Refused
from tribune_shared.events import utcnow
from tribune_shared.federations import FederationDirectory
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from memberships.donations.rules import (
    Assessment,
    Election,
    Gift,
    Limits,
    Purpose,
    Room,
    assess,
    campaign_total,
    counted_total,
    counts_toward_party_ceiling,
    year_bounds,
)
from memberships.donations.store import DonationsStore, campaign_guard_id, party_guard_id
from memberships.payments.notice import DonorDeclaration, PaymentNotice
from memberships.settings import MembershipsSettings

log = get_logger(__name__)


class GiftRefused(Refused):
    """A gift or due breaks a legal rule (``rule`` names it); the reason is for the payer.

    Extra in the body (and in a flagged payment's ``refusal``): ``rule`` (the first rule
    broken) and ``refusals`` (every rule broken: ``rule``, ``reason``, ``field``)."""

    code = "gift_refused"


@dataclass(frozen=True)
class GiftQuestion:
    """What the pre-capture check is asked: would this payment be accepted now?"""

    contact_id: str
    amount_cents: int
    method: str
    purpose: Purpose = "donation"
    donor: DonorDeclaration | None = None
    elected_official: bool = False
    election_id: str | None = None
    paid_at: datetime | None = None


def limits_of(settings: MembershipsSettings) -> Limits:
    return Limits(
        yearly_ceiling_cents=settings.yearly_ceiling_cents,
        cash_limit_cents=settings.cash_limit_cents,
        campaign_ceiling_cents=settings.campaign_ceiling_cents,
        donor_nationalities=frozenset(settings.donor_nationalities),
        declaration_required_for_dues=settings.donor_declaration_for_dues,
    )


def election_from_doc(doc: dict[str, Any]) -> Election:
    return Election(
        election_id=doc["_id"],
        name=doc["name"],
        starts_on=date.fromisoformat(doc["starts_on"]),
        ends_on=date.fromisoformat(doc["ends_on"]),
    )


class GiftRules:
    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.repo = DonationsStore(store)
        self.limits = limits_of(settings)

    async def admit(
        self, notice: PaymentNotice, contact: dict[str, Any], session: AsyncClientSession
    ) -> None:
        """Raise GiftRefused (with ``rule``) if the payment may not be accepted; otherwise
        count it wherever a limit needs it, in ``session``."""
        self._check_amount(notice.amount_cents)
        election = await self._election(notice.purpose, notice.election_id, session)
        assessment = await self._assess(
            contact["_id"],
            Gift(
                amount_cents=notice.amount_cents,
                method=notice.method,
                purpose=notice.purpose,
                paid_on=notice.paid_at.astimezone(self.settings.zone).date(),
                donor=notice.donor,
                elected_official=notice.elected_official,
                election=election,
            ),
            session=session,
            guard=True,
        )
        if not assessment.accepted:
            raise self.refused(assessment, contact["_id"])

    def gift_of(self, notice: PaymentNotice, elections: Mapping[str, dict[str, Any]]) -> Gift:
        """What ``admit`` checks before the totals, for a batch of payments: the amount's
        bound and the election (``elections``: those of the batch, read at once); the
        payment as the rules see it."""
        self._check_amount(notice.amount_cents)
        election = None
        if notice.election_id is not None:
            if notice.purpose != "donation":
                raise _dues_to_an_election()
            doc = elections.get(notice.election_id)
            if doc is None:
                raise NotFound("election not found", field="election_id")
            election = election_from_doc(doc)
        return Gift(
            amount_cents=notice.amount_cents,
            method=notice.method,
            purpose=notice.purpose,
            paid_on=notice.paid_at.astimezone(self.settings.zone).date(),
            donor=notice.donor,
            elected_official=notice.elected_official,
            election=election,
        )

    @staticmethod
    def refused(assessment: Assessment, contact_id: str) -> GiftRefused:
        """The refusal ``admit`` raises for an assessment that is not accepted."""
        first = assessment.refusals[0]
        log.info(
            "gift.refused", contact_id=contact_id, rules=[r.rule.value for r in assessment.refusals]
        )
        return GiftRefused(
            first.reason,
            field=first.field,
            rule=first.rule.value,
            refusals=[r.as_dict() for r in assessment.refusals],
        )

    async def check(self, identity: Identity, question: GiftQuestion, now: datetime) -> Assessment:
        """The pre-capture check: every reason the payment would be refused now, and the
        room left. Reads only (no guard): the answer may change before the payment is
        recorded, where ``admit`` decides atomically."""
        self._check_amount(question.amount_cents)
        contact = await ContactDirectory(self.store).visible(identity, question.contact_id)
        if contact is None or contact.get("erased"):
            raise NotFound("contact not found", field="contact_id")
        election = None
        if question.election_id is not None:
            if question.purpose != "donation":
                raise _dues_to_an_election()
            doc = await self.repo.visible_election(
                identity, question.election_id, with_ancestors=True
            )
            if doc is None:
                raise NotFound("election not found", field="election_id")
            election = election_from_doc(doc)
        paid_at = question.paid_at or now
        return await self._assess(
            question.contact_id,
            Gift(
                amount_cents=question.amount_cents,
                method=question.method,
                purpose=question.purpose,
                paid_on=paid_at.astimezone(self.settings.zone).date(),
                donor=question.donor,
                elected_official=question.elected_official,
                election=election,
            ),
            session=None,
            guard=False,
        )

    def _check_amount(self, amount_cents: int) -> None:
        """A sanity bound on one payment (not a legal rule): 422, nothing recorded."""
        if amount_cents > self.settings.max_amount_cents:
            raise InvalidField(
                f"amount above the maximum of {self.settings.max_amount_cents} cents for one "
                "payment",
                field="amount_cents",
            )

    async def _election(
        self, purpose: str, election_id: str | None, session: AsyncClientSession
    ) -> Election | None:
        if election_id is None:
            return None
        if purpose != "donation":
            raise _dues_to_an_election()
        doc = await self.repo.election(election_id, session)
        if doc is None:
            raise NotFound("election not found", field="election_id")
        return election_from_doc(doc)

    async def _assess(
        self,
        contact_id: str,
        gift: Gift,
        *,
        session: AsyncClientSession | None,
        guard: bool,
    ) -> Assessment:
        party_given = campaign_given = None
        election_id = gift.election.election_id if gift.election else None
        year = gift.paid_on.year
        if counts_toward_party_ceiling(
            gift.purpose, elected_official=gift.elected_official, election_id=election_id
        ):
            if guard:
                assert session is not None
                await self.repo.guard(party_guard_id(contact_id, year), session)
            start, end = year_bounds(year, self.settings.zone)
            party_given = counted_total(
                await self.repo.payments_between(contact_id, start, end, session)
            )
        if election_id is not None:
            if guard:
                assert session is not None
                await self.repo.guard(campaign_guard_id(contact_id, election_id), session)
            campaign_given = campaign_total(
                await self.repo.campaign_payments(contact_id, election_id, session), election_id
            )
        return assess(
            gift,
            self.limits,
            party_given_cents=party_given,
            campaign_given_cents=campaign_given,
        )


def _dues_to_an_election() -> InvalidField:
    return InvalidField(
        "only gifts go to a campaign account: dues name no election", field="election_id"
    )


def room_view(room: Room | None) -> dict[str, int] | None:
    if room is None:
        return None
    return {
        "ceiling_cents": room.ceiling_cents,
        "given_cents": room.given_cents,
        "remaining_cents": room.remaining_cents,
    }


# ---------------------------------------------------------------- elections


@dataclass(frozen=True)
class ElectionInput:
    name: str
    starts_on: date
    ends_on: date
    candidate: dict[str, Any]
    financial_agent: dict[str, Any]
    federation_id: str | None = None


def _check_period(starts_on: date, ends_on: date) -> None:
    if ends_on < starts_on:
        raise InvalidField("the period ends before it starts", field="ends_on")


class Elections:
    """Elections and their campaign accounts (candidate, financial agent, financing
    period), placed in a federation: a treasurer manages those of their subtree."""

    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.repo = DonationsStore(store)
        self.federations = FederationDirectory(store)

    async def create(self, identity: Identity, data: ElectionInput) -> dict[str, Any]:
        _check_period(data.starts_on, data.ends_on)
        federation_id, federation_path = await self.federations.resolve(
            identity, data.federation_id
        )
        now = utcnow()
        doc = {
            "_id": uuid.uuid4().hex,
            "name": data.name,
            "starts_on": data.starts_on.isoformat(),
            "ends_on": data.ends_on.isoformat(),
            "candidate": data.candidate,
            "financial_agent": data.financial_agent,
            "federation_id": federation_id,
            "federation_path": federation_path,
            "created_by": identity.user_id,
            "created_at": now,
            "updated_at": now,
        }
        await self.repo.insert_election(doc)
        log.info("election.created", election_id=doc["_id"], federation_id=federation_id)
        return doc

    async def get(self, identity: Identity, election_id: str) -> dict[str, Any]:
        doc = await self.repo.visible_election(identity, election_id)
        if doc is None:
            raise NotFound("election not found", field="election_id")
        return doc

    async def list(self, identity: Identity) -> list[dict[str, Any]]:
        return await self.repo.elections(identity, self.settings.max_page_size)

    async def update(
        self, identity: Identity, election_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Change the name, period, candidate or financial agent. A changed period applies
        to gifts recorded from now on (accepted ones stay accepted)."""
        current = await self.get(identity, election_id)
        starts_on = changes.get("starts_on") or date.fromisoformat(current["starts_on"])
        ends_on = changes.get("ends_on") or date.fromisoformat(current["ends_on"])
        _check_period(starts_on, ends_on)
        stored = {k: v.isoformat() if isinstance(v, date) else v for k, v in changes.items()}
        doc = await self.repo.update_election(
            identity, election_id, {**stored, "updated_at": datetime.now(UTC)}
        )
        if doc is None:  # deleted meanwhile
            raise NotFound("election not found", field="election_id")
        return doc

    async def delete(self, identity: Identity, election_id: str) -> None:
        """Only an election without gifts: the account's gifts must keep their election
        (receipts, the campaign account filed with the CNCCFP)."""
        await self.get(identity, election_id)
        if await self.repo.election_has_gifts(election_id):
            raise Refused(
                "gifts are recorded for this election: it is kept with its campaign account",
                field="election_id",
            )
        if not await self.repo.delete_election(identity, election_id):
            raise NotFound("election not found", field="election_id")
