"""The CNCCFP donor and member list: one tab-separated line per payment, columns as
configured."""

from __future__ import annotations

from datetime import date

import pytest
from memberships.receipts.settings import ReceiptsSettings
from memberships.reports import cnccfp
from pydantic import ValidationError

PAYMENT = {
    "_id": "p1",
    "contact_id": "c1",
    "amount_cents": 750_000,
    "currency": "EUR",
    "method": "cheque",
    "purpose": "donation",
    "details": {"cheque_number": "0001234", "bank": "Banque"},
    "slip_number": "B-2026-0003",
}
DONOR = {
    "given_name": "Marianne",
    "family_name": "Dupont",
    "address_lines": ["12 rue de la Roquette", "Bât. B"],
    "postcode": "75011",
    "commune": "Paris",
}


def fields(line: str) -> list[str]:
    assert line.endswith("\n")
    return line[:-1].split("\t")


def test_every_default_column_is_filled_from_the_payment_donor_and_receipt():
    config = ReceiptsSettings()
    values = cnccfp.row(PAYMENT, date(2026, 3, 1), DONOR, "2026-000042", config)
    line = fields(cnccfp.line(values, config.cnccfp_columns))
    assert (
        len(line)
        == len(config.cnccfp_columns)
        == len(fields(cnccfp.header_line(config.cnccfp_columns)))
    )
    by_column = dict(zip(config.cnccfp_columns, line, strict=True))
    assert by_column["record_id"] == "p1"
    assert by_column["nature"] == "Don"
    assert by_column["payment_date"] == "01/03/2026"
    assert by_column["donor_id"] == "c1"
    assert by_column["family_name"] == "Dupont" and by_column["given_name"] == "Marianne"
    assert by_column["tax_address"] == "12 rue de la Roquette, Bât. B"
    assert by_column["tax_postcode"] == "75011" and by_column["tax_commune"] == "Paris"
    assert by_column["tax_country"] == "France"
    assert by_column["amount"] == "7500,00"
    assert by_column["currency"] == "EUR"
    assert by_column["remittance_slip"] == "B-2026-0003"
    assert by_column["payment_method"] == "Chèque"
    assert by_column["receipt_number"] == "2026-000042"


def test_dues_of_an_elected_official_are_named_so():
    dues = {**PAYMENT, "purpose": "dues", "elected_official": True}
    values = cnccfp.row(dues, date(2026, 3, 1), DONOR, None, ReceiptsSettings())
    assert values["nature"] == "Cotisation d'élu"
    assert values["elected_mandate"] == "élu"
    assert values["receipt_number"] == ""
    assert cnccfp.nature({**PAYMENT, "purpose": "dues"}) == "Cotisation"


def test_a_tab_or_line_break_in_a_value_never_shifts_the_columns():
    donor = {**DONOR, "family_name": "Du\tpont\nBis"}
    config = ReceiptsSettings()
    line = cnccfp.line(
        cnccfp.row(PAYMENT, date(2026, 3, 1), donor, None, config), config.cnccfp_columns
    )
    assert len(fields(line)) == len(config.cnccfp_columns)
    assert "Du pont Bis" in line


def test_columns_are_configurable_in_number_and_order():
    config = ReceiptsSettings(cnccfp_columns=("amount", "family_name"))
    values = cnccfp.row(PAYMENT, date(2026, 3, 1), DONOR, None, config)
    assert cnccfp.line(values, config.cnccfp_columns) == "7500,00\tDupont\n"
    assert cnccfp.header_line(config.cnccfp_columns) == "Montant\tNom\n"


def test_a_column_named_twice_or_unknown_is_refused_at_startup():
    with pytest.raises(ValidationError):
        ReceiptsSettings(cnccfp_columns=("amount", "amount"))
    with pytest.raises(ValidationError):
        ReceiptsSettings(cnccfp_columns=("shoe_size",))


def test_an_unknown_donor_leaves_the_identity_columns_empty():
    values = cnccfp.row(PAYMENT, date(2026, 3, 1), None, None, ReceiptsSettings())
    assert values["family_name"] == "" and values["tax_country"] == ""
