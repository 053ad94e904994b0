"""Benchmark: the per-row cost of importing a CSV of hostile cells, next to a normal file.

    uv run python bench/contacts_import_hostile.py [--rows 3000]

What the contacts worker does with each row of an import, on its parsing thread (the
file read by ``read_records``, each row checked and normalised by ``parse_row``, as
``contacts.import_jobs`` does), timed in one run on two files of the same rows:

1. normal: the messy French export of ``bench/contacts_import.py`` (``contacts.messy_csv``);
2. hostile: the same rows, each with cells made to hurt a parser (one kind per row, in
   turn): thousands of spaces inside a tag, an address line, an email or a phone (what
   the old patterns backtracked over), or around separators; runs of separators; a
   cell of quotes; an email cell of 131,000 spaces; hundreds of phone numbers in one
   cell; a row of 60,000 delimiters.

It prints each file's cost per row (the mean, and the slowest row: parsing holds the
GIL, so one slow row stalls the worker's consumers, relay and import lease) and the
ratio hostile / normal; the goal is a ratio <= 2. Before the fix, one 131,072-character
cell took about a minute (quadratic regular expressions). No store and no Kafka: what is
written for a row (a contact, or a rejected row) does not depend on what its cells held.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from contacts.domain import ContactRules
from contacts.import_jobs import read_limits
from contacts.imports import (
    ImportRules,
    ParsedRow,
    ReadLimits,
    detect_delimiter,
    parse_row,
    read_header,
    read_records,
    resolve_mapping,
)
from contacts.messy_csv import HEADER, records
from contacts.settings import ContactsSettings

ENCODING = "utf-8-sig"
DELIMITER = ";"
GIVEN, FAMILY, EMAIL, PHONE, MOBILE, ADDRESS, POSTCODE, TOWN, TAGS = range(len(HEADER))

Attack = Callable[[list[str]], list[str]]


def _set(index: int, make: Callable[[str], str]) -> Attack:
    def attack(record: list[str]) -> list[str]:
        out = list(record)
        out[index] = make(out[index])
        return out

    return attack


SPACES = " " * 4_000

#: (name, what it does to a record, whether the row still imports). Spaces that no
#: separator follows are what the old patterns backtracked over (quadratic).
ATTACKS: list[tuple[str, Attack, bool]] = [
    ("spaces inside a tag", _set(TAGS, lambda v: "bénévole" + SPACES + "actif"), True),
    ("spaces inside an address line", _set(ADDRESS, lambda v: v + SPACES + "bis"), True),
    ("spaces around an email separator", _set(EMAIL, lambda v: f"{v}{SPACES[:2000]},"), True),
    ("spaces and commas as tags", _set(TAGS, lambda v: " ,  " * 1000 + "tag"), True),
    ("a run of separators", _set(EMAIL, lambda v: ",;|" * 1300 + v), True),
    ("spaces inside an email", _set(EMAIL, lambda v: "a" + SPACES + "@exemple.fr"), False),
    ("spaces inside a phone", _set(MOBILE, lambda v: v + SPACES + "9"), False),
    ("a name of quotes", _set(GIVEN, lambda v: '"' * 4_000), False),
    ("131,000 spaces in an email", _set(EMAIL, lambda v: v + " " * 131_000 + "x"), False),
    (
        "370 phones in one cell",
        _set(PHONE, lambda v: "/".join(f"06{i:08d}" for i in range(370))),
        False,
    ),
    ("60,000 delimiters", lambda record: [*record, *[""] * 60_000], False),
]


def write(path: Path, rows: Iterator[list[str]]) -> None:
    with open(path, "w", encoding=ENCODING, newline="") as out:
        writer = csv.writer(out, delimiter=DELIMITER, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def normal_rows(n: int) -> list[list[str]]:
    # No duplicates nor invalid rows: the two files differ only by the hostile cells.
    rows = records(n, seed=11, duplicate_rate=0, invalid_rate=0, empty_rate=0)
    return [r for r in rows if r is not None]


def hostile_rows(normal: list[list[str]]) -> Iterator[list[str]]:
    for i, record in enumerate(normal):
        yield ATTACKS[i % len(ATTACKS)][1](record)


def parse_file(path: Path, limits: ReadLimits, rules: ImportRules) -> dict[str, float]:
    """The worker's parsing of a file: each row read and parsed, timed one by one."""
    with open(path, encoding=ENCODING, errors="replace", newline="") as handle:
        sample = handle.read(64 * 1024)
    delimiter = detect_delimiter(sample)
    header = read_header(sample, delimiter)
    mapping = resolve_mapping(header, {}, {})
    times: list[float] = []
    valid = 0
    with open(path, encoding=ENCODING, errors="replace", newline="") as handle:
        rows = read_records(handle, delimiter, limits)
        while True:
            started = time.perf_counter()
            raw = next(rows, None)
            if raw is None:
                break
            parsed = parse_row(raw, len(header), mapping, rules)
            times.append(time.perf_counter() - started)
            valid += isinstance(parsed, ParsedRow)
    return {
        "records": len(times),
        "valid": valid,
        "total_s": sum(times),
        "max_us": max(times) * 1e6,
        "bytes": path.stat().st_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each file (best kept)")
    args = parser.parse_args()

    settings = ContactsSettings.model_construct()  # the defaults, no environment needed
    limits = read_limits(settings)
    rules = ImportRules(contact=ContactRules(region=settings.default_region))
    normal = normal_rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"normal": Path(tmp) / "normal.csv", "hostile": Path(tmp) / "hostile.csv"}
        write(paths["normal"], iter(normal))
        write(paths["hostile"], hostile_rows(normal))
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            for name, path in paths.items():
                runs[name].append(parse_file(path, limits, rules))
    rows = len(normal)
    best = {name: min(r, key=lambda x: x["total_s"]) for name, r in runs.items()}
    print(
        f"{rows} rows; cells at most {limits.max_cell_chars} characters, rows at most "
        f"{limits.max_row_chars}; hostile rows, in turn: "
        + ", ".join(name for name, _, _ in ATTACKS)
    )
    per_row = {name: run["total_s"] / rows * 1e6 for name, run in best.items()}
    for name, run in best.items():
        print(
            f"{name:8s}: {run['bytes'] / 1e6:6.1f} MB, {run['records']:6.0f} records read, "
            f"{run['valid']:6.0f} valid; {per_row[name]:7.1f} us/row, "
            f"slowest row {run['max_us'] / 1e3:6.2f} ms"
        )
    ratio = per_row["hostile"] / per_row["normal"]
    print(f"ratio hostile/normal per row: {ratio:.2f} (goal <= 2)")
    # A row cut at the row bound inside a quoted line break leaves the rest of that
    # field to be read as rows of their own (rejected): more records than rows.
    expected_valid = sum(1 for i in range(rows) if ATTACKS[i % len(ATTACKS)][2])
    ok = (
        best["normal"]["records"] == best["normal"]["valid"] == rows
        and best["hostile"]["records"] >= rows
        and best["hostile"]["valid"] == expected_valid
    )
    if not ok:
        print(f"COUNTS DIFFER: expected {expected_valid} valid hostile rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
