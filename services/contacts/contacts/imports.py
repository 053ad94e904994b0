"""CSV import rules, free of I/O: how a real-world export is read (encoding, delimiter,
header names in French or English), how its columns map to contact fields, how one row
becomes a contact with the very rules of the create endpoint (``contacts.domain``), how
rows that name the same person are folded together, and the CSV of rejected rows.

The job runner (``contacts.import_jobs``) does the I/O; everything here is pure so it can
be tested on small generated files.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, TextIO

from tribune_shared.events.contracts import (
    ContactAddress,
    ContactEmail,
    ContactPhone,
    DataOrigin,
)

from contacts.custom_fields import CustomFieldDefinition, normalise_custom_fields
from contacts.domain import (
    ContactFields,
    ContactRules,
    InvalidFields,
    fold,
    normalise_contact,
    normalise_phone,
)
from contacts.export_csv import neutralise

# ---------------------------------------------------------------- encodings

UTF8_BOM = codecs.BOM_UTF8
#: bytes cp1252 leaves undefined: a file holding one is read as latin-1
_CP1252_UNDEFINED = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
#: encodings a user may force (else detected)
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1")


class EncodingDetector:
    """Fed a file's bytes in order (any chunking): UTF-16 or UTF-8 with a BOM, else
    UTF-8 if every byte decodes strictly as UTF-8, else cp1252 (Windows "ANSI", what
    Excel writes in France), else latin-1 (which reads any byte)."""

    def __init__(self) -> None:
        self._head = b""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.utf8_ok = True
        self.cp1252_ok = True
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if len(self._head) < 4:
            self._head += chunk[: 4 - len(self._head)]
        if self.utf8_ok:
            try:
                self._utf8.decode(chunk)
            except UnicodeDecodeError:
                self.utf8_ok = False
        if self.cp1252_ok and _CP1252_UNDEFINED.search(chunk):
            self.cp1252_ok = False

    def result(self) -> str:
        if self._head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        if self._head.startswith(UTF8_BOM):
            return "utf-8-sig" if self._utf8_complete() else "cp1252"
        if self._utf8_complete():
            return "utf-8"
        return "cp1252" if self.cp1252_ok else "latin-1"

    def _utf8_complete(self) -> bool:
        if not self.utf8_ok:
            return False
        try:
            self._utf8.decode(b"", final=True)  # a truncated sequence at the very end
        except UnicodeDecodeError:
            self.utf8_ok = False
        return self.utf8_ok


def detect_encoding(data: bytes) -> str:
    detector = EncodingDetector()
    detector.feed(data)
    return detector.result()


def decode_sample(sample: bytes, encoding: str) -> str:
    """The start of a file as text, without a character cut at the end of the sample."""
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    return decoder.decode(sample, final=False)


# ---------------------------------------------------------------- delimiters

DELIMITERS = (";", ",", "\t")
DELIMITER_NAMES = {";": "semicolon", ",": "comma", "\t": "tab"}


def _complete_lines(sample: str) -> str:
    """The sample cut after its last line break (the last line may be truncated)."""
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    return sample[: cut + 1] if cut >= 0 else sample


def _records(text: str, delimiter: str, limit: int = 200) -> list[list[str]]:
    out: list[list[str]] = []
    try:
        for record in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if any(cell.strip() for cell in record):
                out.append(record)
            if len(out) >= limit:
                break
    except csv.Error:
        pass
    return out


def _consistency(text: str, delimiter: str) -> tuple[float, int]:
    """(share of records with the header's number of fields, header's number of fields)."""
    records = _records(text, delimiter)
    if not records or len(records[0]) < 2:
        return 0.0, len(records[0]) if records else 0
    width = len(records[0])
    body = records[1:] or records
    same = sum(1 for r in body if len(r) == width or (len(r) < width and r))
    return same / len(body), width


def detect_delimiter(sample: str) -> str:
    """The delimiter of a CSV sample: the one whose records agree best with the header
    (ties: the one splitting the header in more columns); a one-column file reads as
    comma-separated. Only csv.reader reads the sample (linear time): csv.Sniffer is not
    used, its regular expressions take seconds on a sample of quotes and line breaks,
    and the upload reads the sample on the API's event loop."""
    text = _complete_lines(sample) or sample
    scores = {d: _consistency(text, d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: scores[d])
    return best if scores[best][1] >= 2 else ","


# ---------------------------------------------------------------- header mapping


class Target(StrEnum):
    """Contact fields a column can feed (``custom.<name>`` for a custom field)."""

    given_name = "given_name"
    family_name = "family_name"
    email = "email"
    phone = "phone"
    address_line = "address_line"
    postcode = "postcode"
    commune = "commune"
    commune_insee = "commune_insee"
    department = "department"
    constituency = "constituency"
    polling_station = "polling_station"
    birth_year = "birth_year"
    tags = "tags"
    ignore = "ignore"


#: targets several columns may feed (values are collected in column order)
MULTI = frozenset({Target.email, Target.phone, Target.address_line, Target.tags})
CUSTOM_PREFIX = "custom."

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def header_key(name: str) -> str:
    """How a header is compared: accents, case, punctuation and spacing ignored
    ("Téléphone  portable" -> "telephone portable", "E-mail" -> "e mail")."""
    return _NON_ALNUM.sub(" ", fold(name)).strip()


_SYNONYMS: dict[Target, tuple[str, ...]] = {
    Target.given_name: (
        "prenom",
        "prenoms",
        "first name",
        "firstname",
        "given name",
        "given name s",
        "forename",
        "prenom usuel",
        "first",
    ),
    Target.family_name: (
        "nom",
        "nom de famille",
        "nom famille",
        "last name",
        "lastname",
        "surname",
        "family name",
        "nom d usage",
        "nom usage",
        "nom de naissance",
        "name",
        "last",
    ),
    Target.email: (
        "email",
        "e mail",
        "courriel",
        "mail",
        "adresse email",
        "adresse e mail",
        "adresse mail",
        "adresse electronique",
        "adresse courriel",
        "email address",
        "e mail address",
        "mel",
        "other emails",
        "autres emails",
    ),
    Target.phone: (
        "telephone",
        "tel",
        "phone",
        "telephone fixe",
        "tel fixe",
        "fixe",
        "numero de telephone",
        "n de telephone",
        "no de telephone",
        "phone number",
        "portable",
        "mobile",
        "tel portable",
        "telephone portable",
        "telephone mobile",
        "tel mobile",
        "numero de portable",
        "cellulaire",
        "gsm",
        "mobile phone",
        "cell",
        "cell phone",
        "other phones",
        "autres telephones",
    ),
    Target.address_line: (
        "adresse",
        "address",
        "adresse postale",
        "rue",
        "street",
        "voie",
        "complement d adresse",
        "complement adresse",
        "complement",
        "address line",
        "adresse ligne",
        "ligne adresse",
        "address lines",
        "lieu dit",
    ),
    Target.postcode: (
        "code postal",
        "cp",
        "postcode",
        "post code",
        "postal code",
        "zip",
        "zip code",
        "zipcode",
        "code post",
    ),
    Target.commune: ("ville", "commune", "city", "town", "localite", "nom commune"),
    Target.commune_insee: (
        "code insee",
        "insee",
        "code commune",
        "commune insee",
        "code insee commune",
    ),
    Target.department: ("departement", "department", "dept", "dep", "code departement"),
    Target.constituency: ("circonscription", "constituency", "circo"),
    Target.polling_station: ("bureau de vote", "polling station", "bureau", "bv"),
    Target.birth_year: ("annee de naissance", "birth year", "annee naissance", "year of birth"),
    Target.tags: ("tags", "tag", "etiquettes", "etiquette", "labels", "mots cles", "groupes"),
}
#: header key -> target (built once)
KNOWN_HEADERS: dict[str, Target] = {
    key: target for target, keys in _SYNONYMS.items() for key in keys
}


def guess_target(header: str) -> Target | None:
    """The field a header names, if any ("Téléphone 2" -> phone: a number suffix is
    allowed for the fields several columns may feed)."""
    key = header_key(header)
    if key in KNOWN_HEADERS:
        return KNOWN_HEADERS[key]
    stem = key.rstrip("0123456789")
    if 1 <= len(key) - len(stem) <= 2 and stem.rstrip() in KNOWN_HEADERS:
        target = KNOWN_HEADERS[stem.rstrip()]
        return target if target in MULTI else None
    return None


@dataclass(frozen=True)
class ColumnMapping:
    """Which column (0-based index, as headed in the file) feeds which target
    (a Target value or ``custom.<name>``)."""

    index: int
    header: str
    target: str


@dataclass(frozen=True)
class ImportMapping:
    """The resolved mapping of a file: the mapped columns in file order, and the
    headers left aside (unknown, or a second column for a one-value field)."""

    columns: tuple[ColumnMapping, ...]
    unmapped: tuple[str, ...] = ()

    def as_list(self) -> list[dict[str, Any]]:
        return [{"index": c.index, "header": c.header, "target": c.target} for c in self.columns]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]], unmapped: Iterable[str] = ()):
        return cls(
            tuple(
                ColumnMapping(int(i["index"]), str(i["header"]), str(i["target"])) for i in items
            ),
            tuple(unmapped),
        )

    def targets(self) -> set[str]:
        return {c.target for c in self.columns}


def parse_mapping_items(items: Iterable[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``column=field`` strings (CLI, query string) as a dict, and the malformed ones."""
    out: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for item in items:
        column, sep, target = item.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            problems.append(("mapping", f"{item!r}: expected column=field"))
            continue
        out[column.strip()] = target.strip()
    return out, problems


def _custom_target(target: str) -> str | None:
    return target[len(CUSTOM_PREFIX) :] if target.startswith(CUSTOM_PREFIX) else None


def _target_problem(target: str, definitions: Mapping[str, CustomFieldDefinition]) -> str | None:
    name = _custom_target(target)
    if name is not None:
        if name not in definitions:
            return f"unknown custom field {name!r} (define it first, or map the column elsewhere)"
        return None
    if target not in Target.__members__:
        known = ", ".join([*Target.__members__, "custom.<name>"])
        return f"unknown field {target!r} (one of {known})"
    return None


def _find_column(header: Sequence[str], column: str) -> int | None:
    stripped = [h.strip() for h in header]
    if column.strip() in stripped:
        return stripped.index(column.strip())
    key = header_key(column)
    keys = [header_key(h) for h in header]
    if key and key in keys:
        return keys.index(key)
    return None


def resolve_mapping(
    header: Sequence[str],
    overrides: Mapping[str, str],
    definitions: Mapping[str, CustomFieldDefinition],
) -> ImportMapping:
    """Auto-map the header (French/English synonyms, custom fields by name or label),
    then apply the user's ``column -> field`` overrides (``ignore`` drops a column).
    Raises InvalidFields (field ``mapping.<column>``) for an unknown field, a column that
    is not in the file or a one-value field fed twice by the overrides."""
    problems: list[tuple[str, str]] = []
    chosen: dict[int, str] = {}
    for column, target in overrides.items():
        where = f"mapping.{column}"
        index = _find_column(header, column)
        if index is None:
            shown = ", ".join(h for h in header if h.strip())
            problems.append((where, f"no column {column!r} in the file (columns: {shown})"))
            continue
        reason = _target_problem(target, definitions)
        if reason:
            problems.append((where, reason))
            continue
        chosen[index] = target
    single_taken: dict[str, int] = {}
    for index, target in sorted(chosen.items()):
        if target == Target.ignore or target in MULTI:
            continue
        if target in single_taken:
            problems.append(
                (
                    f"mapping.{header[index]}",
                    f"{target} is already fed by {header[single_taken[target]]!r}",
                )
            )
        single_taken[target] = index
    if problems:
        raise InvalidFields(problems)
    by_label = {header_key(d.label): n for n, d in definitions.items() if d.label}
    by_name = {header_key(n): n for n in definitions}
    columns: list[ColumnMapping] = []
    unmapped: list[str] = []
    for index, name in enumerate(header):
        if index in chosen:
            target = chosen[index]
        else:
            key = header_key(name)
            custom = by_name.get(key) or by_label.get(key)
            if custom is None and key.startswith("custom "):
                custom = by_name.get(key.removeprefix("custom "))
            guessed = guess_target(name)
            if custom is not None:
                target = CUSTOM_PREFIX + custom
            elif guessed is not None:
                target = guessed.value
            else:
                if name.strip():
                    unmapped.append(name)
                continue
            if target not in MULTI and target in single_taken:
                unmapped.append(name)
                continue
            if target not in MULTI:
                single_taken[target] = index
        if target != Target.ignore:
            columns.append(ColumnMapping(index, name, target))
    return ImportMapping(tuple(columns), tuple(unmapped))


def check_mapping_usable(mapping: ImportMapping) -> None:
    """A contact needs an email, a phone or a family name: one of them must be mapped."""
    if not mapping.targets() & {Target.email, Target.phone, Target.family_name}:
        raise InvalidFields(
            [("mapping", "no column maps to email, phone or family_name (override the mapping)")]
        )


# ---------------------------------------------------------------- reading rows


@dataclass(frozen=True)
class RawRow:
    """A record of the file and its row number as a spreadsheet shows it (header = 1)."""

    row: int
    cells: tuple[str, ...]
    #: why the record is rejected before its values are read (malformed CSV, beyond the
    #: size bounds)
    error: str | None = None


@dataclass(frozen=True)
class ReadLimits:
    """The size bounds of one record of a file (``ContactsSettings.import_max_columns``,
    ``import_max_cell_chars``, ``import_max_row_chars``). A record beyond them is a
    rejected row with the reason (the column, when it can be named) and the import goes
    on: the work and memory a row can cost stay bounded whatever the file holds."""

    max_columns: int
    max_cell_chars: int
    max_row_chars: int


class _RecordTooLong(Exception):
    """The record being read outgrew ``ReadLimits.max_row_chars``."""


class _LineFeed:
    """A file's physical lines for ``csv.reader``, never more than ``max_chars`` of one
    record read into memory (``readline`` with a size): a record outgrowing the bound is
    not handed to the reader, the rest of its line is skipped in bounded chunks, and
    reading starts afresh on the next line (what csv.reader does after its own field size
    error). Lines must be whole: the reader ends an unquoted field at the end of each."""

    SKIP_CHUNK = 64 * 1024

    def __init__(self, source: TextIO, max_chars: int) -> None:
        self._readline = source.readline
        self.max_chars = max_chars
        #: the lines of the record being read (at most ``max_chars`` + 1 characters)
        self.record: list[str] = []
        self._size = 0
        #: a line cut just after a CR: a LF that follows ends that line, not a new one
        self._after_cr = False

    def start_record(self) -> None:
        self.record = []
        self._size = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        line = self._read(self.max_chars - self._size + 1)
        if not line:
            raise StopIteration
        self.record.append(line)
        self._size += len(line)
        if self._size > self.max_chars:
            if line.endswith("\r"):
                self._after_cr = True
            elif not line.endswith("\n"):
                self._skip_line()
            raise _RecordTooLong()
        return line

    def _read(self, size: int) -> str:
        line = self._readline(size)
        if self._after_cr:
            self._after_cr = False
            if line.startswith("\n"):
                line = line[1:] or self._readline(size)
        return line

    def _skip_line(self) -> None:
        while chunk := self._readline(self.SKIP_CHUNK):
            if chunk.endswith("\r"):
                self._after_cr = True
                return
            if chunk.endswith("\n"):
                return


def read_records(source: TextIO, delimiter: str, limits: ReadLimits) -> Iterator[RawRow]:
    """Every record after the header with its row number, empty ones skipped (they still
    count in the numbering, like a spreadsheet's rows). ``source`` is text opened with
    ``newline=""`` so quoted line breaks stay inside their field. A record beyond
    ``limits`` is a row with its error (its cells kept up to ``max_columns`` if it was
    read, none if it was too long to read)."""
    feed = _LineFeed(source, limits.max_row_chars)
    reader = csv.reader(feed, delimiter=delimiter)
    row = 0
    header: list[str] | None = None
    while True:
        feed.start_record()
        try:
            record = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            row += 1
            if header is not None:
                yield RawRow(row, (), error=_too_long(feed.record, delimiter, header, limits))
            continue
        except csv.Error as exc:
            row += 1
            if header is not None:
                yield RawRow(row, (), error=f"malformed CSV: {exc}")
            continue
        row += 1
        if header is None:
            if _names_columns(record):
                header = [cell.strip() for cell in record]
            continue
        if not any(cell.strip() for cell in record):
            continue
        if problem := _size_problem(record, header, limits):
            yield RawRow(row, tuple(record[: limits.max_columns]), error=problem)
            continue
        yield RawRow(row, tuple(record))


def _column_name(header: Sequence[str], index: int) -> str:
    name = header[index] if index < len(header) else ""
    return name or f"column {index + 1}"


def _size_problem(record: Sequence[str], header: Sequence[str], limits: ReadLimits) -> str | None:
    if len(record) > limits.max_columns:
        return (
            f"{len(record)} fields; at most {limits.max_columns} "
            "(a value holding the delimiter must be quoted)"
        )
    long = [_column_name(header, i) for i, c in enumerate(record) if len(c) > limits.max_cell_chars]
    if long:
        return "; ".join(f"{name}: more than {limits.max_cell_chars} characters" for name in long)
    return None


def _too_long(
    lines: Sequence[str], delimiter: str, header: Sequence[str], limits: ReadLimits
) -> str:
    """Why a record too long to read is rejected: its over-long cells, named from what was
    read of it (at most ``max_row_chars`` characters), else its length."""
    try:
        cells = next(csv.reader(lines, delimiter=delimiter), [])
    except csv.Error:
        cells = []
    if len(cells) > limits.max_columns:
        return (
            f"more than {limits.max_columns} fields (a value holding the delimiter must be quoted)"
        )
    problem = _size_problem(cells, header, limits)
    problem = problem or f"the row is longer than {limits.max_row_chars} characters"
    # Read over several lines: most likely a quote opened and never closed.
    return problem + (" (a quote left open?)" if len(lines) > 1 else "")


def read_header(sample: str, delimiter: str) -> list[str]:
    """The first non-empty record of the file (its column names)."""
    for record in csv.reader(
        io.StringIO(_complete_lines(sample) or sample, newline=""), delimiter=delimiter
    ):
        if _names_columns(record):
            return [cell.strip() for cell in record]
    return []


def _names_columns(record: Sequence[str]) -> bool:
    """A header names at least one column with a letter or a digit (a line of
    delimiters, or blank lines, before it are skipped)."""
    return any(any(c.isalnum() for c in cell) for cell in record)


# ---------------------------------------------------------------- one row -> one contact

#: what separates the values of a cell holding several ("a@x.fr; b@y.fr", "bénévole,
#: tractage", address lines on their own lines)
SEPARATORS: dict[Target, str] = {
    Target.email: "|;,",
    Target.phone: "|;,/",
    Target.address_line: "|\r\n",
    Target.tags: "|;,",
}


def split_cell(value: str, separators: str) -> list[str]:
    """The values of a cell holding several, trimmed, blank ones left out
    ("a@x.fr ;; b@y.fr" -> ["a@x.fr", "b@y.fr"]). Plain string operations, linear in the
    cell's length whatever it holds: the regular expressions they replace
    (``\\s*[|;,]\\s*`` and the like) took quadratic time on a long run of spaces, a
    minute for one 131k-character cell with the worker's GIL held all along."""
    first = separators[0]
    for other in separators[1:]:
        value = value.replace(other, first)
    # filter/map keep the loop in C: a cell of separators is thousands of empty values
    return list(filter(None, map(str.strip, filter(None, value.split(first)))))


@dataclass(frozen=True)
class ImportRules:
    """What every row of a job is checked against."""

    contact: ContactRules
    definitions: Mapping[str, CustomFieldDefinition] = field(default_factory=dict)
    max_custom_text: int = 500
    #: tags added to every row of the job (normalised)
    extra_tags: tuple[str, ...] = ()


@dataclass
class ParsedRow:
    """A valid row, normalised: what it adds to the file."""

    row: int
    fields: ContactFields
    custom: dict[str, Any]
    cells: tuple[str, ...] = ()

    @property
    def keys(self) -> list[str]:
        """Its duplicate keys: every email and phone (normalised)."""
        return [
            *(e.address for e in self.fields.emails or ()),
            *(p.number for p in self.fields.phones or ()),
        ]


@dataclass(frozen=True)
class RejectedRow:
    row: int
    reason: str
    cells: tuple[str, ...]


def _values(cells: Sequence[str], index: int) -> str:
    return cells[index].strip() if index < len(cells) else ""


def _dedupe(values: Iterable[tuple[str, str]], key) -> list[tuple[str, str]]:
    """(column, value) pairs without repeats of the same normalised value."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for column, value in values:
        try:
            k = key(value)
        except ValueError:
            k = "raw:" + value
        if k in seen:
            continue
        seen.add(k)
        out.append((column, value))
    return out


def parse_row(
    raw: RawRow, header_width: int, mapping: ImportMapping, rules: ImportRules
) -> ParsedRow | RejectedRow:
    """Validate and normalise one record with the rules of the create endpoint; every
    problem of the row is given at once, on the column it came from."""
    cells = raw.cells
    if raw.error is not None:
        return RejectedRow(raw.row, raw.error, cells)
    if len(cells) > header_width:
        return RejectedRow(
            raw.row,
            f"{len(cells)} fields where the header has {header_width} "
            "(a value holding the delimiter must be quoted)",
            cells,
        )
    collected: dict[str, list[tuple[str, str]]] = {}
    for column in mapping.columns:
        value = _values(cells, column.index)
        if value:
            collected.setdefault(column.target, []).append((column.header, value))

    def one(target: Target) -> tuple[str, str] | None:
        values = collected.get(target.value)
        return values[0] if values else None

    problems: list[tuple[str, str]] = []

    def several(target: Target, most: int, what: str) -> list[tuple[str, str]]:
        """The (column, value) pairs of a list field, none (and the problem) beyond
        ``most``: each value is then parsed or validated at most ``most`` times per row,
        however many a cell holds. Exact repeats count once, except address lines (two
        equal lines are two lines)."""
        values = [
            (column, part)
            for column, value in collected.get(target.value, [])
            for part in split_cell(value, SEPARATORS[target])
        ]
        if target is not Target.address_line:
            columns: dict[str, str] = {}
            for column, value in values:
                columns.setdefault(value, column)
            values = [(column, value) for value, column in columns.items()]
        if len(values) > most:
            problems.append((values[0][0], f"at most {most} {what}"))
            return []
        return values

    contact_rules = rules.contact
    emails = _dedupe(
        several(Target.email, contact_rules.max_emails, "addresses"), lambda v: v.strip().casefold()
    )
    phones = _dedupe(
        several(Target.phone, contact_rules.max_phones, "numbers"),
        lambda v: normalise_phone(v, contact_rules.region),
    )
    email_columns = [c for c, _ in emails]
    phone_columns = [c for c, _ in phones]
    lines = [v for _, v in several(Target.address_line, contact_rules.max_address_lines, "lines")]
    address = None
    address_parts = {
        t: one(t)
        for t in (Target.postcode, Target.commune, Target.commune_insee, Target.department)
    }
    if lines or any(address_parts.values()):
        address = ContactAddress(
            lines=lines,
            postcode=(address_parts[Target.postcode] or ("", None))[1],
            commune=(address_parts[Target.commune] or ("", None))[1],
            commune_insee=(address_parts[Target.commune_insee] or ("", None))[1],
            department=(address_parts[Target.department] or ("", None))[1],
        )
    birth_year = None
    if (year := one(Target.birth_year)) is not None:
        digits = year[1].strip()
        if len(digits) == 4 and digits.isdecimal():
            birth_year = int(digits)
        else:
            problems.append((year[0], "not a year (4 digits)"))
    tags = [v for _, v in several(Target.tags, contact_rules.max_tags, "distinct tags")]
    tags += rules.extra_tags
    given = one(Target.given_name)
    family = one(Target.family_name)
    constituency = one(Target.constituency)
    station = one(Target.polling_station)
    raw_fields = ContactFields(
        given_name=given[1] if given else "",
        family_name=family[1] if family else "",
        emails=tuple(ContactEmail(address=v, primary=i == 0) for i, (_, v) in enumerate(emails))
        if emails
        else None,
        phones=tuple(ContactPhone(number=v) for _, v in phones) if phones else None,
        address=address,
        constituency=constituency[1] if constituency else None,
        polling_station=station[1] if station else None,
        birth_year=birth_year,
        tags=tuple(tags),
    )
    fields: ContactFields | None = None
    try:
        fields = normalise_contact(raw_fields, rules.contact)
    except InvalidFields as exc:
        columns = {
            "given_name": given[0] if given else "given_name",
            "family_name": family[0] if family else "family_name",
            "constituency": constituency[0] if constituency else "constituency",
            "polling_station": station[0] if station else "polling_station",
            "address.postcode": _column(address_parts[Target.postcode], "postcode"),
            "address.commune": _column(address_parts[Target.commune], "commune"),
            "address.commune_insee": _column(address_parts[Target.commune_insee], "commune_insee"),
            "address.department": _column(address_parts[Target.department], "department"),
            "birth_year": year[0] if year else "birth_year",
        }
        for name, reason in exc.problems:
            problems.append((_problem_column(name, columns, email_columns, phone_columns), reason))
    custom_raw = {
        target[len(CUSTOM_PREFIX) :]: values[0][1]
        for target, values in collected.items()
        if target.startswith(CUSTOM_PREFIX)
    }
    custom, custom_problems = normalise_custom_fields(
        custom_raw, rules.definitions, max_text=rules.max_custom_text
    )
    custom_columns = {
        f"custom_fields.{target[len(CUSTOM_PREFIX) :]}": values[0][0]
        for target, values in collected.items()
        if target.startswith(CUSTOM_PREFIX)
    }
    for name, reason in custom_problems:
        problems.append((custom_columns.get(name, name), reason))
    if problems or fields is None:
        return RejectedRow(raw.row, "; ".join(f"{c}: {r}" for c, r in problems), cells)
    return ParsedRow(raw.row, fields, custom, cells)


def _column(pair: tuple[str, str] | None, default: str) -> str:
    return pair[0] if pair else default


_LIST_FIELD = re.compile(r"^(emails|phones)\.(\d+)\.")


def _problem_column(
    name: str, columns: Mapping[str, str], emails: Sequence[str], phones: Sequence[str]
) -> str:
    """The column a problem of normalise_contact is about (its field name otherwise)."""
    if name in columns:
        return columns[name]
    if match := _LIST_FIELD.match(name):
        which = emails if match.group(1) == "emails" else phones
        index = int(match.group(2))
        if index < len(which):
            return which[index]
    if name == "emails" and emails:
        return emails[0]
    if name == "phones" and phones:
        return phones[0]
    if name.startswith("address.lines"):
        return "address"
    return name


# ---------------------------------------------------------------- folding duplicates


class DuplicateRule(StrEnum):
    """What a row naming a contact that already exists (in the base or earlier in the
    file: same normalised email or phone) does."""

    merge = "merge"  # fill the contact's empty fields, add emails/phones/tags
    skip = "skip"  # leave the contact as it is
    flag = "flag"  # leave it, and list the row for review


def fold_into(
    target: ContactFields,
    target_custom: Mapping[str, Any],
    row: ContactFields,
    row_custom: Mapping[str, Any],
    rules: ContactRules,
) -> tuple[ContactFields, dict[str, Any]]:
    """A contact with a duplicate row folded in: empty names, codes, birth year and
    address (as a whole) filled; emails, phones and tags added (the contact's first and
    primary ones stay first, up to the configured maxima); custom fields filled."""
    emails = list(target.emails or ())
    known = {e.address for e in emails}
    for email in row.emails or ():
        if email.address not in known and len(emails) < rules.max_emails:
            emails.append(ContactEmail(address=email.address, primary=not emails))
            known.add(email.address)
    phones = list(target.phones or ())
    known = {p.number for p in phones}
    for phone in row.phones or ():
        if phone.number not in known and len(phones) < rules.max_phones:
            phones.append(phone)
            known.add(phone.number)
    tags = list(target.tags)
    for tag in row.tags:
        if tag not in tags and len(tags) < rules.max_tags:
            tags.append(tag)
    address = target.address if target.address is not None else row.address
    custom = dict(target_custom)
    for name, value in row_custom.items():
        custom.setdefault(name, value)
    primary = next((e.address for e in emails if e.primary), None)
    folded = ContactFields(
        given_name=target.given_name or row.given_name,
        family_name=target.family_name or row.family_name,
        email=primary,
        phone=phones[0].number if phones else None,
        postcode=address.postcode if address else None,
        tags=tuple(tags),
        emails=tuple(emails),
        phones=tuple(phones),
        address=address,
        constituency=target.constituency or row.constituency,
        polling_station=target.polling_station or row.polling_station,
        birth_year=target.birth_year if target.birth_year is not None else row.birth_year,
        custom_fields=custom,
    )
    return folded, custom


def data_signature(fields: ContactFields, custom: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a row can change in a contact (to tell a row that adds nothing)."""
    return (
        fields.given_name,
        fields.family_name,
        tuple((e.address, e.primary) for e in fields.emails or ()),
        tuple(p.number for p in fields.phones or ()),
        fields.address,
        fields.constituency,
        fields.polling_station,
        fields.birth_year,
        tuple(fields.tags),
        tuple(sorted(custom.items())),
    )


# ---------------------------------------------------------------- origin and options


def check_import_origin(
    kind: str | None, detail: str | None, collected_on: str | None, today: date
) -> tuple[DataOrigin | None, list[tuple[str, str]]]:
    """The job's data origin (required: kind and detail), and the problems."""
    from tribune_shared.events.contracts import OriginKind

    problems: list[tuple[str, str]] = []
    kinds = [k.value for k in OriginKind]
    origin_kind: OriginKind | None = None
    if not kind:
        problems.append(("origin_kind", f"required: one of {', '.join(kinds)}"))
    elif kind not in kinds:
        problems.append(("origin_kind", f"one of {', '.join(kinds)}"))
    else:
        origin_kind = OriginKind(kind)
    detail = (detail or "").strip()
    if not detail:
        problems.append(("origin_detail", "required: where the file comes from"))
    elif len(detail) > 500:
        problems.append(("origin_detail", "at most 500 characters"))
    day = None
    if collected_on:
        try:
            day = date.fromisoformat(collected_on.strip())
        except ValueError:
            problems.append(("origin_collected_on", "a date (YYYY-MM-DD)"))
        else:
            if day > today:
                problems.append(("origin_collected_on", "must not be in the future"))
    if problems or origin_kind is None:
        return None, problems
    return DataOrigin(kind=origin_kind, detail=detail, collected_on=day), []


# ---------------------------------------------------------------- rejected rows CSV


def issues_csv_header(columns: Sequence[str], *, flagged: bool) -> list[str]:
    """The header of the rejected (or flagged) rows CSV: the file's column names come
    from the uploaded file, so they are made safe for spreadsheets like every cell."""
    extra = ["existing_contact_id"] if flagged else []
    return ["row", "reason", *extra, *(neutralise(c) for c in columns)]


def issues_csv_row(
    row: int,
    reason: str,
    cells: Sequence[str],
    width: int,
    existing_id: str | None = None,
    *,
    flagged: bool = False,
) -> list[str]:
    """One line of the rejected (or flagged) rows CSV: the row number, the reason and
    the row as it was, cells made safe for spreadsheets."""
    padded = list(cells) + [""] * max(0, width - len(cells))
    extra = [existing_id or ""] if flagged else []
    return [str(row), neutralise(reason), *extra, *(neutralise(c) for c in padded)]


def encode_csv(rows: Iterable[Sequence[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------- progress


def rate(rows: int, seconds: float) -> float:
    """Rows per second (0 before the first second's worth of time)."""
    return round(rows / seconds, 1) if seconds > 0 else 0.0


__all__ = [
    "DELIMITERS",
    "ENCODINGS",
    "MULTI",
    "ColumnMapping",
    "DuplicateRule",
    "EncodingDetector",
    "ImportMapping",
    "ImportRules",
    "ParsedRow",
    "RawRow",
    "ReadLimits",
    "RejectedRow",
    "Target",
    "check_import_origin",
    "check_mapping_usable",
    "decode_sample",
    "detect_delimiter",
    "detect_encoding",
    "fold_into",
    "guess_target",
    "header_key",
    "issues_csv_row",
    "parse_mapping_items",
    "parse_row",
    "read_header",
    "read_records",
    "resolve_mapping",
    "split_cell",
]
