"""What receipts and the legal reports are configured with (``MEMBERSHIPS_RECEIPTS``, a
JSON object: every key optional)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

BeneficiaryType = Literal["political_party", "financing_association"]

#: the CNCCFP file's columns, in the order of the arrêté listing them (see README)
CnccfpColumn = Literal[
    "record_id",
    "nature",
    "payment_date",
    "donor_id",
    "civility",
    "given_name",
    "family_name",
    "elected_mandate",
    "tax_address",
    "tax_commune",
    "tax_postcode",
    "tax_country",
    "currency",
    "amount",
    "bank_statement",
    "remittance_slip",
    "payment_method",
    "receipt_number",
]

#: every column, in that order (the default file)
DEFAULT_CNCCFP_COLUMNS: tuple[CnccfpColumn, ...] = get_args(CnccfpColumn)


class ReceiptsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the receipt's beneficiary (cadre "bénéficiaire" of the receipt)
    issuer_name: str = Field(
        default="Tribune (association de financement)", min_length=1, max_length=200
    )
    issuer_address: str = Field(
        default="1 place de la République, 75003 Paris", min_length=1, max_length=300
    )
    issuer_object: str = Field(
        default="Financement d'un parti politique (loi n° 88-227 du 11 mars 1988)",
        min_length=1,
        max_length=300,
        description="the beneficiary's object, as the receipt states it",
    )
    beneficiary_type: BeneficiaryType = "financing_association"
    #: SIREN or RNA number (CERFA 11580*05 asks for one)
    issuer_identifier: str = Field(default="", max_length=20)
    #: who signs (name and quality: the treasurer or the financial agent)
    signatory: str = Field(default="Le trésorier", min_length=1, max_length=200)
    #: the income-tax reduction the receipt mentions (CGI art. 200, 3: 66 %)
    tax_reduction_percent: int = Field(default=66, ge=0, le=100)
    #: how long a receipt keeps the donor's identity after the donor's erasure, counted
    #: from its issue (LPF art. L102 E: six years)
    retention_years: int = Field(default=6, ge=1, le=30)
    #: digits of the sequence in a receipt number ("2026-000042")
    number_digits: int = Field(default=6, ge=3, le=12)
    #: the country written for a tax address (contacts carry French addresses)
    default_country: str = Field(default="France", min_length=1, max_length=64)
    #: the CNCCFP file's columns, in order
    cnccfp_columns: tuple[CnccfpColumn, ...] = Field(
        default=DEFAULT_CNCCFP_COLUMNS, min_length=1, max_length=40
    )
    #: the CNCCFP file starts with a line naming the columns
    cnccfp_header: bool = True
    #: most rows one CNCCFP file or ledger export reads (beyond: narrow the request)
    export_max_rows: int = Field(default=200_000, ge=1, le=5_000_000)
    #: how often the worker looks for receipts past their retention period, in seconds
    retention_sweep_seconds: float = Field(default=3600.0, ge=1.0, le=604_800.0)
    #: longest reason of a cancellation or reissue
    reason_max_length: int = Field(default=500, ge=10, le=5000)

    @field_validator("cnccfp_columns")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a CNCCFP column appears twice")
        return value
