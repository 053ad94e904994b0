"""Receipt settings: bounded, checked at startup."""

from __future__ import annotations

import pytest
from memberships.receipts.settings import DEFAULT_CNCCFP_COLUMNS, ReceiptsSettings
from pydantic import ValidationError


def test_defaults_follow_the_law():
    config = ReceiptsSettings()
    assert config.tax_reduction_percent == 66  # CGI art. 200, 3
    assert config.retention_years == 6  # LPF art. L102 E
    assert config.cnccfp_columns == DEFAULT_CNCCFP_COLUMNS


@pytest.mark.parametrize(
    "bad",
    [
        {"tax_reduction_percent": 101},
        {"retention_years": 0},
        {"number_digits": 2},
        {"export_max_rows": 0},
        {"beneficiary_type": "company"},
        {"cnccfp_columns": []},
        {"unknown": 1},
    ],
)
def test_out_of_bounds_values_are_refused(bad):
    with pytest.raises(ValidationError):
        ReceiptsSettings(**bad)
