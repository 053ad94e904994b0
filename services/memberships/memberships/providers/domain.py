"""What a provider's event means for Tribune (pure): money captured (a ``Capture`` of a
``PaymentNotice``), money given back (a ``Reversal``), or nothing (``Ignored``); and the
Tribune fields a payment carries in the provider's metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tribune_shared.errors import InvalidFields
from tribune_shared.events.contracts import PaymentMethod

from memberships.payments.notice import DonorDeclaration, PaymentNotice

ReversalKind = Literal["refund", "chargeback"]

_ID = r"^[A-Za-z0-9_-]+$"


@dataclass(frozen=True)
class Capture:
    """The provider took the money: record it (once per provider payment id)."""

    notice: PaymentNotice


@dataclass(frozen=True)
class Reversal:
    """The provider gave money back (refund) or the payer's bank took it (chargeback)."""

    provider: str
    provider_payment_id: str
    kind: ReversalKind
    amount_cents: int
    reason: str
    at: datetime
    #: the provider's refund or dispute id: a reversal is applied once per reference
    reference: str


@dataclass(frozen=True)
class Ignored:
    """An event that changes nothing in Tribune (acknowledged so the provider stops)."""

    reason: str
    provider_payment_id: str | None = None


Action = Capture | Reversal | Ignored


class PaymentMetadata(BaseModel):
    """The Tribune fields of a payment, as the checkout put them in the provider's
    metadata (Stripe: strings only, so booleans are "true"/"false")."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    contact_id: str = Field(alias="tribune_contact_id", min_length=1, max_length=64, pattern=_ID)
    purpose: Literal["dues", "donation"] = Field(alias="tribune_purpose")
    plan: str | None = Field(default=None, alias="tribune_plan", min_length=1, max_length=64)
    rate: str | None = Field(default=None, alias="tribune_rate", min_length=1, max_length=64)
    elected_official: bool = Field(default=False, alias="tribune_elected_official")
    election_id: str | None = Field(
        default=None, alias="tribune_election_id", min_length=1, max_length=64, pattern=_ID
    )
    donor_natural_person: bool | None = Field(default=None, alias="tribune_donor_natural_person")
    donor_nationality: str | None = Field(
        default=None, alias="tribune_donor_nationality", pattern=r"^[A-Za-z]{2}$"
    )
    donor_resides_in_france: bool = Field(default=False, alias="tribune_donor_resides_in_france")
    #: the recurring schedule this payment belongs to (memberships.payments.schedules)
    schedule_id: str | None = Field(
        default=None, alias="tribune_schedule_id", min_length=1, max_length=64, pattern=_ID
    )

    def donor(self) -> DonorDeclaration | None:
        if self.donor_natural_person is None:
            return None
        return DonorDeclaration(
            natural_person=self.donor_natural_person,
            nationality=self.donor_nationality.upper() if self.donor_nationality else None,
            resides_in_france=self.donor_resides_in_france,
        )


#: the metadata keys, for the README and the fakes
METADATA_KEYS = tuple(
    str(f.alias) for f in PaymentMetadata.model_fields.values() if f.alias is not None
)


def read_metadata(metadata: Any, where: str) -> PaymentMetadata:
    """The Tribune fields of ``metadata`` (found at ``where`` in the provider's body);
    InvalidFields naming each bad key."""
    if not isinstance(metadata, Mapping):
        raise InvalidFields([(where, "must be an object carrying the Tribune payment keys")])
    try:
        return PaymentMetadata.model_validate(dict(metadata))
    except ValidationError as exc:
        raise InvalidFields(
            [
                (".".join([where, *(str(p) for p in err["loc"])]), err["msg"])
                for err in exc.errors(include_url=False)
            ]
        ) from None


def capture(
    *,
    provider: str,
    provider_payment_id: str,
    amount_cents: int,
    currency: str,
    method: PaymentMethod,
    paid_at: datetime,
    metadata: PaymentMetadata,
) -> Capture:
    """The notice of a captured provider payment (``captured=True``: a legal refusal
    records it flagged for refund, since the money is already taken)."""
    return Capture(
        PaymentNotice(
            provider=provider,
            provider_payment_id=provider_payment_id,
            contact_id=metadata.contact_id,
            amount_cents=amount_cents,
            currency=currency,
            method=method,
            purpose=metadata.purpose,
            paid_at=paid_at,
            plan=metadata.plan if metadata.purpose == "dues" else None,
            rate=metadata.rate if metadata.purpose == "dues" else None,
            donor=metadata.donor(),
            elected_official=metadata.elected_official,
            election_id=metadata.election_id,
            schedule_id=metadata.schedule_id,
            captured=True,
        )
    )


class Reader:
    """Typed reads of a provider's JSON with the path of each bad value, so a signed but
    malformed notification is a 422 naming the field."""

    def __init__(self, body: Any, where: str = "") -> None:
        self.body = body
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str) -> Any:
        if not isinstance(self.body, Mapping):
            raise InvalidFields([(self.where or "body", "must be a JSON object")])
        return self.body.get(key)

    def obj(self, key: str) -> Reader:
        value = self._get(key)
        if not isinstance(value, Mapping):
            raise InvalidFields([(self._path(key), "must be an object")])
        return Reader(value, self._path(key))

    def raw(self, key: str) -> Any:
        return self._get(key)

    def text(self, key: str, *, required: bool = True, max_length: int = 200) -> str | None:
        value = self._get(key)
        if value is None and not required:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # HelloAsso's ids are numbers
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            raise InvalidFields(
                [(self._path(key), f"must be a non-empty string of at most {max_length} chars")]
            )
        return value

    def required_text(self, key: str, max_length: int = 200) -> str:
        value = self.text(key, max_length=max_length)
        assert value is not None
        return value

    def integer(self, key: str, *, minimum: int = 0) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InvalidFields([(self._path(key), f"must be an integer >= {minimum}")])
        return value

    def currency(self, key: str = "currency") -> str:
        value = self._get(key)
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
            raise InvalidFields([(self._path(key), "must be a 3-letter ISO 4217 code")])
        return value.upper()

    def path(self, key: str) -> str:
        return self._path(key)
