"""The webhook body at the HTTP boundary: types, normalisation and clear reasons."""

from __future__ import annotations

import json

import pytest
from memberships.payments.api import PaymentNoticeIn
from pydantic import ValidationError

VALID = {
    "provider": "stripe",
    "provider_payment_id": "pi_123",
    "contact_id": "c-1",
    "amount_cents": 3000,
    "currency": "eur",
    "method": "card",
    "purpose": "dues",
    "paid_at": "2025-06-01T10:00:00+02:00",
}


def parse(**changes):
    return PaymentNoticeIn.model_validate_json(json.dumps({**VALID, **changes}))


def fields_in_error(**changes) -> set[str]:
    with pytest.raises(ValidationError) as exc:
        parse(**changes)
    return {".".join(map(str, e["loc"])) for e in exc.value.errors()}


def test_valid_body_is_parsed_and_the_currency_upper_cased():
    notice = parse(extra_provider_field="ignored")
    assert notice.currency == "EUR"
    assert notice.plan is None
    assert notice.paid_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_cents", 0),
        ("amount_cents", -5),
        ("amount_cents", 12.5),
        ("amount_cents", "3000"),
        ("currency", "EURO"),
        ("currency", "E1R"),
        ("method", "bitcoin"),
        ("purpose", "gift"),
        ("paid_at", "2025-06-01T10:00:00"),  # no time zone: ambiguous
        ("paid_at", "yesterday"),
        ("contact_id", "../etc"),
        ("provider", ""),
        ("plan", ""),
    ],
)
def test_invalid_values_are_reported_on_their_field(field, value):
    assert fields_in_error(**{field: value}) == {field}


def test_missing_fields_are_each_reported():
    with pytest.raises(ValidationError) as exc:
        PaymentNoticeIn.model_validate_json(b'{"provider": "stripe"}')
    missing = {e["loc"][0] for e in exc.value.errors() if e["type"] == "missing"}
    assert missing == set(VALID) - {"provider"}
