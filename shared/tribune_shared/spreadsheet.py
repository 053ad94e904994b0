"""CSV files meant for spreadsheets, as every service exporting one writes them: cells made
safe against formula injection (a cell starting with = + - @ or a tab/CR would be read as
a formula by Excel, LibreOffice or Google Sheets; OWASP "CSV Injection"), UTF-8 with a
byte order mark, RFC 4180 line ends."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

#: UTF-8 byte order mark: Excel reads the file as UTF-8 only with it
BOM = "\ufeff"
#: characters that make a spreadsheet read a cell as a formula (or split it)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading formula character is escaped with a
    single quote (OWASP's advice), so ``=HYPERLINK(...)`` stays a string."""
    if value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def encode_rows(rows: Iterable[Sequence[str]], delimiter: str = ",") -> str:
    """CSV text (RFC 4180: CRLF line ends, quotes doubled, fields with the delimiter,
    quotes or line breaks quoted)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue()
