"""French administrative geography, free of I/O: commune INSEE codes and departments.

A commune's INSEE code starts with its department (2 characters, 3 overseas), so the
department derived from it is exact. From a postcode it is a good guess (La Poste's
first digits), used only when neither the department nor the INSEE code is given.
"""

from __future__ import annotations

import re

#: metropolitan departments 01-95 (no 20 since 1976), Corsica 2A/2B, overseas 971-976
#: (975, Saint-Pierre-et-Miquelon, is a collectivity, not a department)
DEPARTMENTS: frozenset[str] = frozenset(
    {f"{i:02d}" for i in range(1, 96) if i != 20} | {"2A", "2B", "971", "972", "973", "974", "976"}
)

_INSEE = re.compile(r"(?:\d{5}|2[AB]\d{3})")
#: Corsican postcodes below 20200 are in Corse-du-Sud (2A), the others in Haute-Corse (2B)
_CORSICA_SPLIT = 20200


def normalise_insee(value: str) -> str:
    """A commune INSEE code: 5 characters, digits, or 2A/2B and 3 digits for Corsica."""
    value = value.strip().upper()
    if not _INSEE.fullmatch(value) or value[:2] in ("00", "20"):
        raise ValueError("not a commune INSEE code (5 characters; 2A/2B for Corsica)")
    return value


def normalise_department(value: str) -> str:
    value = value.strip().upper()
    if len(value) == 1 and value.isdigit():
        value = "0" + value  # "1" is Ain
    if value not in DEPARTMENTS:
        raise ValueError("not a French department code (01-95, 2A, 2B, 971-976)")
    return value


def department_of_insee(insee: str) -> str | None:
    """The department of a commune (None for overseas collectivities: 975, 977, 98x)."""
    code = insee[:3] if insee.startswith("97") else insee[:2]
    return code if code in DEPARTMENTS else None


def department_of_postcode(postcode: str) -> str | None:
    """The department a French postcode most likely belongs to (None if unknown)."""
    if len(postcode) != 5 or not postcode.isdigit():
        return None
    if postcode.startswith("20"):
        return "2A" if int(postcode) < _CORSICA_SPLIT else "2B"
    code = postcode[:3] if postcode.startswith("97") else postcode[:2]
    return code if code in DEPARTMENTS else None
