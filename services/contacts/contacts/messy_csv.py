"""Messy French contact exports, generated (for the tests and the import benchmark):
accents, French phone formats, invalid emails, duplicates of earlier rows (same phone in
another format, same email with its domain in capitals, a new tag), addresses holding a
quoted line break, empty lines; written with a BOM or in cp1252, comma- or
semicolon-separated. ``Expected`` says what an import with duplicates=merge must count.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GIVEN = (
    "Jean",
    "Marie",
    "Éloïse",
    "François",
    "Chloé",
    "Hélène",
    "Gaëlle",
    "Léa",
    "Amélie",
    "Jérôme",
    "Noël",
    "Zoé",
    "Maëlys",
    "Anaïs",
    "Benoît",
    "Céline",
    "Mathéo",
    "Inès",
    "Raphaël",
    "Cécile",
    "Loïc",
    "Agnès",
    "Joël",
    "Thérèse",
    "Ophélie",
    "Stéphane",
)
FAMILY = (
    "Dupont",
    "Lefèvre",
    "Girard",
    "Müller",
    "Faure",
    "Rousseau",
    "Lambert",
    "Fontaine",
    "Chevalier",
    "Bérénger",
    "Garçon",
    "Mercier",
    "Boër",
    "Lemaître",
    "Noël",
    "Pérez",
    "Deschênes",
    "Œillet",
    "Besançon",
    "Thibault",
    "Leroy",
    "Moreau",
    "Ménard",
    "Caron",
)
STREETS = (
    "rue de la Paix",
    "avenue Jean Jaurès",
    "boulevard Voltaire",
    "place de l'Église",
    "chemin des Prés",
    "allée des Châtaigniers",
    "impasse Molière",
)
TOWNS = (
    ("75011", "Paris"),
    ("69003", "Lyon"),
    ("13001", "Marseille"),
    ("33000", "Bordeaux"),
    ("59000", "Lille"),
    ("31000", "Toulouse"),
    ("44000", "Nantes"),
    ("67000", "Strasbourg"),
)
TAGS = ("bénévole", "sympathisant", "adhérent", "pétition", "marché", "porte-à-porte")
HEADER = (
    "Prénom",
    "Nom",
    "Courriel",
    "Téléphone",
    "Portable",
    "Adresse",
    "Code postal",
    "Ville",
    "Étiquettes",
)
INVALID_EMAILS = ("jean.dupont@", "pas-un-email", "marie@@exemple.fr", "sans arobase.fr", "x@y")


def _ascii(text: str) -> str:
    import unicodedata

    folded = unicodedata.normalize("NFKD", text.replace("Œ", "Oe").replace("œ", "oe"))
    return "".join(c for c in folded if c.isalnum() and c.isascii()).lower()


def phone_formats(national: str) -> list[str]:
    """Ways French people write one mobile number ("0612345678")."""
    digits = national[1:]
    pairs = " ".join(national[i : i + 2] for i in range(0, 10, 2))
    return [
        pairs,  # 06 12 34 56 78
        national,  # 0612345678
        ".".join(national[i : i + 2] for i in range(0, 10, 2)),  # 06.12.34.56.78
        "+33 " + digits[0] + " " + " ".join(digits[i : i + 2] for i in range(1, 9, 2)),
        "0033" + digits,
        "+33" + digits,
    ]


@dataclass
class Expected:
    rows: int = 0  # data rows (empty lines excluded)
    created: int = 0
    merged: int = 0  # duplicates of an earlier row (merged into its contact)
    rejected: int = 0
    empty_lines: int = 0
    quoted_newlines: int = 0


@dataclass(frozen=True)
class Person:
    given: str
    family: str
    email: str
    mobile: str  # national form
    street: str
    postcode: str
    town: str
    tags: tuple[str, ...]


def records(
    n: int,
    *,
    seed: int = 7,
    duplicate_rate: float = 0.05,
    invalid_rate: float = 0.03,
    newline_rate: float = 0.05,
    empty_rate: float = 0.01,
    expected: Expected | None = None,
) -> Iterator[list[str] | None]:
    """``n`` data rows (None stands for an empty line, not counted in ``n``)."""
    rng = random.Random(seed)
    expected = expected if expected is not None else Expected()
    people: list[Person] = []
    for i in range(n):
        if rng.random() < empty_rate:
            expected.empty_lines += 1
            yield None
        expected.rows += 1
        if people and rng.random() < duplicate_rate:
            p = rng.choice(people)
            local, _, domain = p.email.partition("@")
            extra = rng.choice(TAGS)
            expected.merged += 1
            yield [
                p.given if rng.random() < 0.5 else "",
                p.family.upper(),
                f"{local}@{domain.upper()}",
                "",
                rng.choice(phone_formats(p.mobile)),
                "",
                p.postcode,
                p.town,
                extra,
            ]
            continue
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        mobile = f"06{i:08d}" if rng.random() < 0.6 else f"075{i:07d}"  # unique, valid
        postcode, town = rng.choice(TOWNS)
        person = Person(
            given=given,
            family=family,
            email=f"{_ascii(given)}.{_ascii(family)}.{i}@exemple.fr",
            mobile=mobile,
            street=f"{rng.randint(1, 200)} {rng.choice(STREETS)}",
            postcode=postcode,
            town=town,
            tags=tuple(rng.sample(TAGS, rng.randint(0, 2))),
        )
        street = person.street
        if rng.random() < newline_rate:
            street += f"\nBâtiment {rng.choice('ABCD')}"
            expected.quoted_newlines += 1
        email = person.email
        invalid = rng.random() < invalid_rate
        if invalid:
            email = rng.choice(INVALID_EMAILS)
            expected.rejected += 1
        else:
            people.append(person)
            expected.created += 1
        landline = " ".join(f"014{i:07d}"[j : j + 2] for j in range(0, 10, 2))
        yield [
            person.given,
            person.family,
            email,
            landline if rng.random() < 0.3 else "",
            rng.choice(phone_formats(mobile)),
            street,
            postcode,
            town,
            ", ".join(person.tags),
        ]


def write_messy_csv(
    path: Path,
    n: int,
    *,
    encoding: str = "utf-8-sig",
    delimiter: str = ";",
    seed: int = 7,
    **rates: float,
) -> Expected:
    """Write ``n`` data rows (and the header) to ``path``, streaming; what an import with
    duplicates=merge must find."""
    expected = Expected()
    with open(path, "w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(HEADER)
        for record in records(n, seed=seed, expected=expected, **rates):
            if record is None:
                out.write("\r\n" if expected.empty_lines % 2 else delimiter * 8 + "\r\n")
            else:
                writer.writerow(record)
    return expected


def messy_csv_bytes(
    n: int, *, encoding: str = "utf-8-sig", delimiter: str = ";", seed: int = 7, **rates: float
) -> tuple[bytes, Expected]:
    """The same as bytes (small files for tests)."""
    expected = Expected()
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(HEADER)
    for record in records(n, seed=seed, expected=expected, **rates):
        if record is None:
            out.write("\r\n" if expected.empty_lines % 2 else delimiter * 8 + "\r\n")
        else:
            writer.writerow(record)
    return out.getvalue().encode(encoding), expected
