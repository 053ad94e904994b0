"""A payment as reported by a provider or entered by a treasurer, validated at the
boundary, and what recording it gave. Every source (the generic webhook, each provider's
webhook, manual entry, recurring schedules) builds a ``PaymentNotice`` and hands it to the
one recording use case, ``MembershipsService.record_payment``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tribune_shared.events.contracts import PaymentMethod

from memberships.domain import Membership

Purpose = Literal["dues", "donation"]
#: accepted: counted everywhere; flagged_for_refund: a provider captured money a legal rule
#: refuses (no standing, no receipt, no total: the treasurer refunds it)
PaymentStatus = Literal["accepted", "flagged_for_refund", "refunded", "charged_back"]


@dataclass(frozen=True)
class DonorDeclaration:
    """What the payer declared with the gift (French law: natural persons of French
    nationality or residing in France only)."""

    natural_person: bool
    #: ISO 3166-1 alpha-2 nationality, e.g. FR
    nationality: str | None = None
    resides_in_france: bool = False


@dataclass(frozen=True)
class PaymentNotice:
    provider: str
    provider_payment_id: str
    contact_id: str
    amount_cents: int
    currency: str
    method: PaymentMethod
    purpose: Purpose
    paid_at: datetime
    plan: str | None = None
    #: a reduced rate of the plan (students, unemployed...), dues only
    rate: str | None = None
    donor: DonorDeclaration | None = None
    #: dues of an elected official (excluded from the yearly ceiling)
    elected_official: bool = False
    #: a gift to a candidate's campaign account for this election
    election_id: str | None = None
    #: True when a provider already took the money: a refusal then records the payment
    #: flagged for refund instead of refusing it (a treasurer's entry is refused outright)
    captured: bool = True
    #: the user who entered it by hand (None: a provider)
    entered_by: str | None = None
    #: method details kept with the payment (cheque number and bank, transfer reference)
    details: Mapping[str, str] = field(default_factory=dict)
    #: the recurring schedule this payment belongs to
    schedule_id: str | None = None


@dataclass(frozen=True)
class PaymentOutcome:
    status: Literal["recorded", "duplicate", "flagged_for_refund"]
    payment_id: str
    membership: Membership | None = None
    membership_id: str | None = None
    #: why a captured payment was flagged for refund
    refusal: str | None = None
