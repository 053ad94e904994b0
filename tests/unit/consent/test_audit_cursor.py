"""The consent audit log's cursor: what the service hands out reads back, anything else is
a 422 naming the cursor (a huge one once overflowed the date arithmetic: a 500)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from consent.service import _cursor, _read_cursor
from tribune_shared.errors import InvalidField


def test_a_cursor_the_service_returned_reads_back():
    at = datetime(2026, 3, 1, 12, 30, 5, 123000, tzinfo=UTC)
    assert _read_cursor(_cursor({"at": at, "_id": "e1"})) == (at, "e1")
    assert _read_cursor(None) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "9" * 30 + ":e1",  # past what a date can hold
        "99999999999999999:e1",
        "\u00b2:e1",  # a digit to str.isdigit, not to int
        "-5:e1",
        "12",
        "12:",
        ":e1",
    ],
)
def test_a_cursor_it_did_not_return_is_a_422_naming_it(cursor):
    with pytest.raises(InvalidField) as refused:
        _read_cursor(cursor)
    assert refused.value.status_code == 422 and refused.value.field == "cursor"
