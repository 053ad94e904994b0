"""CSV import rules on hostile files (pure): cells are split in linear time whatever they
hold, a row's size is bounded (an over-long cell or row is a rejected row naming its
column, and the import goes on), a list cell checks a bounded number of values, and the
sample is read without csv.Sniffer. The per-row cost next to a normal file is measured by
bench/contacts_import_hostile.py (a ratio, not a timing assertion)."""

from __future__ import annotations

import csv
import io
import random
import re

import pytest
from contacts import domain, imports
from contacts.domain import ContactRules
from contacts.imports import (
    SEPARATORS,
    ImportRules,
    ParsedRow,
    RawRow,
    ReadLimits,
    RejectedRow,
    Target,
    detect_delimiter,
    parse_row,
    read_header,
    read_records,
    resolve_mapping,
    split_cell,
)
from contacts.settings import ContactsSettings
from pydantic import ValidationError

LIMITS = ReadLimits(max_columns=200, max_cell_chars=4_096, max_row_chars=65_536)
RULES = ImportRules(contact=ContactRules())
#: a cell about as long as csv's own field limit (131,072): took a minute to split
BIG = 131_000


def rows_of(text: str, limits: ReadLimits = LIMITS, delimiter: str = ";") -> list[RawRow]:
    return list(read_records(io.StringIO(text, newline=""), delimiter, limits))


def parse(text: str, limits: ReadLimits = LIMITS) -> list[ParsedRow | RejectedRow]:
    header = read_header(text[:65_536], ";")
    mapping = resolve_mapping(header, {}, {})
    return [parse_row(r, len(header), mapping, RULES) for r in rows_of(text, limits)]


# ---------------------------------------------------------------- splitting cells

#: the regular expressions the splitting replaced (quadratic on long runs of spaces),
#: kept here as the reference of what a cell splits into
OLD_PATTERNS = {
    Target.email: re.compile(r"\s*[|;,]\s*"),
    Target.phone: re.compile(r"\s*[|;,/]\s*"),
    Target.address_line: re.compile(r"\s*(?:\||\r\n|\r|\n)\s*"),
    Target.tags: re.compile(r"\s*[|;,]\s*"),
}


@pytest.mark.parametrize("target", list(OLD_PATTERNS))
def test_cells_split_as_they_did_before(target):
    rng = random.Random(9)
    alphabet = "ab@. \t\u00a0,;|/\r\n"
    for _ in range(3_000):
        cell = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))).strip()
        old = [part for part in OLD_PATTERNS[target].split(cell) if part.strip()]
        assert split_cell(cell, SEPARATORS[target]) == old, repr(cell)


def test_hostile_cells_split_right():
    spaces = " " * BIG
    # spaces that no separator follows: what the old patterns backtracked over
    assert split_cell(f"bénévole{spaces}actif", SEPARATORS[Target.tags]) == [
        f"bénévole{spaces}actif"
    ]
    assert split_cell(f"a@x.fr{spaces}b", SEPARATORS[Target.email]) == [f"a@x.fr{spaces}b"]
    assert split_cell(f"a@x.fr{spaces},{spaces}b@y.fr", SEPARATORS[Target.email]) == [
        "a@x.fr",
        "b@y.fr",
    ]
    assert split_cell(",;|" * BIG, SEPARATORS[Target.email]) == []
    assert split_cell(f"{spaces}06 12 34 56 78{spaces}/{spaces}", SEPARATORS[Target.phone]) == [
        "06 12 34 56 78"
    ]
    lines = f"12 rue de la Paix{spaces}\r\n{spaces}|\n\r{spaces}Bât. A"
    assert split_cell(lines, SEPARATORS[Target.address_line]) == ["12 rue de la Paix", "Bât. A"]
    assert split_cell(" ,  " * BIG + "tag", SEPARATORS[Target.tags]) == ["tag"]


def test_a_row_of_long_space_runs_within_the_bounds_imports():
    spaces = " " * 1_300
    text = (
        "Nom;Courriel;Portable;Étiquettes;Adresse\n"
        f"Dupont;a@x.fr{spaces},{spaces}b@y.fr;06 12 34 56 78{spaces}/;{' ,  ' * 500}tag,"
        f'bénévole{spaces}actif;"12{spaces}rue X{spaces}\n{spaces}|Bât. A"\n'
    )
    (row,) = parse(text)
    assert isinstance(row, ParsedRow)
    assert [e.address for e in row.fields.emails] == ["a@x.fr", "b@y.fr"]
    assert [p.number for p in row.fields.phones] == ["+33612345678"]
    assert row.fields.tags == ("tag", "bénévole actif")
    assert row.fields.address.lines == ["12 rue X", "Bât. A"]


# ---------------------------------------------------------------- size bounds


def test_a_131k_character_cell_is_rejected_with_its_column_and_the_import_goes_on():
    text = f"Nom;Courriel;Portable\nDupont;a@x.fr{' ' * BIG}b@y.fr;06 12 34 56 78\nDurand;d@x.fr;\n"
    first, second = rows_of(text)
    assert (first.row, first.cells) == (2, ())  # too long to be kept
    assert first.error == "Courriel: more than 4096 characters"
    assert (second.row, second.cells, second.error) == (3, ("Durand", "d@x.fr", ""), None)
    rejected, imported = parse(text)
    assert isinstance(rejected, RejectedRow)
    assert rejected.reason == "Courriel: more than 4096 characters"
    assert isinstance(imported, ParsedRow) and imported.fields.email == "d@x.fr"


def test_an_over_long_cell_within_the_row_bound_is_named_and_its_row_kept():
    long = "x" * 5_000
    (row,) = rows_of(f"Nom;;Ville\nDupont;{long};{long}\n")
    assert row.error == "column 2: more than 4096 characters; Ville: more than 4096 characters"
    assert row.cells == ("Dupont", long, long)  # shown as it was in rejected.csv


def test_the_bounds_are_the_configured_ones():
    limits = ReadLimits(max_columns=3, max_cell_chars=64, max_row_chars=1_024)
    rows = rows_of(
        "Nom;Courriel\n"
        f"{'x' * 65};a@x.fr\n"  # a cell over 64
        f"{'x' * 60};{'y' * 60}\n"  # fine
        f"a;b;c;d;e\n"  # 5 fields, at most 3
        f"{'z;' * 600}\n",  # 1,200 characters, at most 1,024
        limits,
    )
    assert [(r.row, r.error) for r in rows] == [
        (2, "Nom: more than 64 characters"),
        (3, None),
        (4, "5 fields; at most 3 (a value holding the delimiter must be quoted)"),
        (5, "more than 3 fields (a value holding the delimiter must be quoted)"),
    ]
    assert rows[2].cells == ("a", "b", "c")  # the kept copy is bounded too


def test_a_row_of_delimiters_is_rejected_with_a_bounded_copy():
    (row,) = rows_of("Nom;Courriel\n" + "Dupont" + ";" * 60_000 + "\n")
    assert row.error == "60001 fields; at most 200 (a value holding the delimiter must be quoted)"
    assert len(row.cells) == 200


class RecordingText(io.StringIO):
    """A text file that records how many characters each read handed out."""

    def __init__(self, text: str) -> None:
        super().__init__(text, newline="")
        self.reads: list[int] = []

    def readline(self, size: int | None = -1, /) -> str:
        line = super().readline(-1 if size is None else size)
        self.reads.append(len(line))
        return line


def test_a_row_beyond_the_row_bound_is_never_read_whole():
    limits = ReadLimits(max_columns=200, max_cell_chars=4_096, max_row_chars=10_000)
    text = (
        "Nom;Adresse\r\n"
        + "Dupont;"
        + "x" * 1_000_000
        + "\r\n"  # one physical line of a million characters
        + 'Durand;"12 rue X\r\n'  # a quote left open: the field runs on...
        + ("y" * 5_000 + "\r\n") * 3  # ...past the bound, over several lines
        + "Martin;3 rue Y\r\n"
        + ";".join(["z" * 4_000] * 3)  # no cell over the bound, the row is
        + "\r\n"
    )
    source = RecordingText(text)
    rows = list(read_records(source, ";", limits))
    assert max(source.reads) <= max(limits.max_row_chars + 1, imports._LineFeed.SKIP_CHUNK)
    assert [(r.row, r.error) for r in rows] == [
        (2, "Adresse: more than 4096 characters"),
        (3, "Adresse: more than 4096 characters (a quote left open?)"),
        # reading starts afresh on the line after the cut, as csv.reader does after its
        # own field size error: the rest of the open field is a row of its own
        (4, "Nom: more than 4096 characters"),
        (5, None),
        (6, "the row is longer than 10000 characters"),
    ]
    assert rows[3].cells == ("Martin", "3 rue Y")


def test_a_crlf_cut_by_the_row_bound_does_not_make_an_extra_row():
    limits = ReadLimits(max_columns=200, max_cell_chars=1_024, max_row_chars=1_024)
    # the row is cut right after its CR: the LF that follows still ends it
    text = "Nom\r\n" + "x" * 1_024 + "\r\nDupont\r\n"
    rows = rows_of(text, limits)
    assert [(r.row, r.error is None) for r in rows] == [(2, False), (3, True)]


# ---------------------------------------------------------------- bounded checks per row


def test_a_list_cell_checks_at_most_the_configured_number_of_values(monkeypatch):
    calls: list[str] = []
    real = imports.normalise_phone

    def counting(value: str, region: str) -> str:
        calls.append(value)
        return real(value, region)

    monkeypatch.setattr(imports, "normalise_phone", counting)
    many = "/".join(f"06{i:08d}" for i in range(370))
    (row,) = parse(f"Nom;Portable\nDupont;{many}\n")
    assert isinstance(row, RejectedRow) and row.reason == "Portable: at most 10 numbers"
    assert calls == []  # refused before a single number is parsed
    repeated = " / ".join(["06 12 34 56 78", "0612345678"] * 100)
    (row,) = parse(f"Nom;Portable\nDupont;{repeated}\n")
    assert isinstance(row, ParsedRow) and [p.number for p in row.fields.phones] == ["+33612345678"]
    assert len(calls) == 2  # each distinct spelling once
    tags = ",".join(f"t{i}" for i in range(51))
    (row,) = parse(f"Nom;Tags;Adresse\nDupont;{tags};a|b|c|d|e\n")
    assert isinstance(row, RejectedRow)
    assert row.reason == "Adresse: at most 4 lines; Tags: at most 50 distinct tags"


def test_an_over_long_email_is_refused_before_it_is_validated(monkeypatch):
    validated: list[str] = []
    real = domain.validate_email

    def counting(value: str, **kwargs):
        validated.append(value)
        return real(value, **kwargs)

    monkeypatch.setattr(domain, "validate_email", counting)
    (row,) = parse("Nom;Courriel\nDupont;a" + " " * 4_000 + "@x.fr\n")
    assert isinstance(row, RejectedRow)
    assert row.reason == "Courriel: not a valid email address: at most 254 characters"
    assert validated == []


# ---------------------------------------------------------------- the sample


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ('"a\n' * 7_000, ","),  # seconds for csv.Sniffer's regular expressions
        (',"' * 10_000 + "\n", ","),
        ('nom;adresse\nDupont;"1, rue X"\n' + ('Durand;"2, rue Y"\n' * 2_000), ";"),
    ],
)
def test_the_delimiter_is_found_without_csv_sniffer(monkeypatch, sample, expected):
    monkeypatch.setattr(csv, "Sniffer", None)  # quadratic on quotes and line breaks
    assert detect_delimiter(sample) == expected


# ---------------------------------------------------------------- settings


def test_the_bounds_are_settings_that_hold_together(monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    settings = ContactsSettings()
    assert (settings.import_max_cell_chars, settings.import_max_row_chars) == (4_096, 65_536)
    with pytest.raises(ValidationError, match="import_max_cell_chars must not exceed"):
        ContactsSettings(import_max_cell_chars=8_192, import_max_row_chars=4_096)
    with pytest.raises(ValidationError, match="import_sample_bytes must not exceed"):
        ContactsSettings(import_sample_bytes=131_072, import_max_row_chars=65_536)
    with pytest.raises(ValidationError):  # csv's own field limit must never fire first
        ContactsSettings(import_max_row_chars=131_073)
