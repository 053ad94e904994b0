"""Duplicates and merges, free of I/O.

Exact duplicates (same normalised email or phone in a federation) cannot exist: the
create endpoint refuses them (409) and an import folds them (``contacts.imports``).
*Likely* duplicates are people whose names are alike (rapidfuzz, order of the words and
accents ignored) at the same postcode in the same federation: contacts are compared only
within such a block, and a block larger than the configured maximum only within a sliding
window of its contacts sorted by name (sorted-neighbourhood), so the work stays bounded.

A merge keeps one contact (the survivor) and deletes the other; for each field the
caller picks whose value survives, or lets the defaults decide (the survivor's value,
else the merged one's; the union of emails, phones, tags and custom fields).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rapidfuzz import fuzz, process

from contacts.domain import Contact, ContactFields, InvalidFields, clean_text, fold

# ---------------------------------------------------------------- likely duplicates


def name_key(given_name: str, family_name: str) -> str:
    """What names are compared on: folded (no case, no accents), words as typed."""
    return fold(clean_text(f"{given_name} {family_name}"))


def name_score(a: str, b: str) -> float:
    """0-100: how alike two name keys are, whatever the order of the words
    ("Jean Dupont" / "DUPONT Jean" = 100, "Jean Dupont" / "Jean Dupond" ~ 91)."""
    return fuzz.token_sort_ratio(a, b)


@dataclass(frozen=True)
class Candidate:
    id: str
    federation_id: str
    postcode: str
    key: str


@dataclass(frozen=True)
class LikelyPair:
    a: str
    b: str
    score: float
    postcode: str
    federation_id: str


def block_pairs(block: Sequence[Candidate], threshold: float, max_block: int) -> list[LikelyPair]:
    """The pairs of a block (one postcode, one federation) whose names score at least
    ``threshold``, best first (ties by ids). Blocks above ``max_block`` contacts are
    compared only within windows of ``max_block`` contacts sorted by name."""
    people = sorted((c for c in block if c.key), key=lambda c: (c.key, c.id))
    if len(people) < 2:
        return []
    found: dict[tuple[str, str], float] = {}
    window = max(2, max_block)
    step = window if len(people) <= window else max(1, window // 2)
    start = 0
    while start < len(people):
        part = people[start : start + window]
        keys = [c.key for c in part]
        scores = process.cdist(
            keys, keys, scorer=fuzz.token_sort_ratio, score_cutoff=threshold, workers=1
        )
        for i in range(len(part)):
            for j in range(i + 1, len(part)):
                score = float(scores[i][j])
                if score >= threshold:
                    a, b = sorted((part[i].id, part[j].id))
                    found[(a, b)] = max(found.get((a, b), 0.0), score)
        if start + window >= len(people):
            break
        start += step
    postcode, federation_id = block[0].postcode, block[0].federation_id
    pairs = [LikelyPair(a, b, round(s, 1), postcode, federation_id) for (a, b), s in found.items()]
    pairs.sort(key=lambda p: (-p.score, p.a, p.b))
    return pairs


def blocks(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """Candidates grouped by (postcode, federation), in postcode then federation order."""
    grouped: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        grouped.setdefault((c.postcode, c.federation_id), []).append(c)
    return [grouped[k] for k in sorted(grouped)]


_CURSOR = "d1:"


def encode_duplicates_cursor(postcode: str, skip: int) -> str:
    raw = _CURSOR + json.dumps([postcode, skip], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_duplicates_cursor(cursor: str) -> tuple[str, int]:
    """(postcode to start at, pairs of that postcode already returned)."""
    bad = InvalidFields([("cursor", "not a cursor returned by this API")])
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_CURSOR):
            raise bad
        postcode, skip = json.loads(raw.removeprefix(_CURSOR))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise bad from None
    if not isinstance(postcode, str) or not isinstance(skip, int) or skip < 0:
        raise bad
    return postcode, skip


# ---------------------------------------------------------------- merge choices


class Choice(StrEnum):
    auto = "auto"  # the survivor's value, or the merged one's when the survivor has none
    survivor = "survivor"
    merged = "merged"
    union = "union"  # lists: the survivor's then the merged one's (emails, phones, tags)


#: field -> choices it accepts (the first is the default)
MERGE_FIELDS: dict[str, tuple[Choice, ...]] = {
    "given_name": (Choice.auto, Choice.survivor, Choice.merged),
    "family_name": (Choice.auto, Choice.survivor, Choice.merged),
    "emails": (Choice.union, Choice.survivor, Choice.merged),
    "phones": (Choice.union, Choice.survivor, Choice.merged),
    "address": (Choice.auto, Choice.survivor, Choice.merged),
    "constituency": (Choice.auto, Choice.survivor, Choice.merged),
    "polling_station": (Choice.auto, Choice.survivor, Choice.merged),
    "birth_year": (Choice.auto, Choice.survivor, Choice.merged),
    "tags": (Choice.union, Choice.survivor, Choice.merged),
    "custom_fields": (Choice.union, Choice.survivor, Choice.merged),
}


def check_choices(choices: Mapping[str, str]) -> dict[str, Choice]:
    """Every field's choice (defaults filled in); 422 on fields.<name> for an unknown
    field or a choice the field does not take."""
    problems: list[tuple[str, str]] = []
    out: dict[str, Choice] = {}
    for name, value in choices.items():
        allowed = MERGE_FIELDS.get(name)
        if allowed is None:
            problems.append(
                (f"fields.{name}", f"not a merge field (one of {', '.join(MERGE_FIELDS)})")
            )
        elif value not in [c.value for c in allowed]:
            problems.append((f"fields.{name}", f"one of {', '.join(c.value for c in allowed)}"))
        else:
            out[name] = Choice(value)
    if problems:
        raise InvalidFields(problems)
    return {name: out.get(name, allowed[0]) for name, allowed in MERGE_FIELDS.items()}


def _empty(value: Any) -> bool:
    return value in (None, "", [], {}, ())


def _pick(choice: Choice, survivor: Any, merged: Any) -> Any:
    if choice is Choice.survivor:
        return survivor
    if choice is Choice.merged:
        return merged
    return merged if _empty(survivor) else survivor


def merged_fields(
    survivor: Contact, merged: Contact, choices: Mapping[str, Choice]
) -> tuple[ContactFields, dict[str, Any]]:
    """The survivor's data after the merge (to be normalised with the create rules):
    unions keep the survivor's entries first, and its primary email primary."""

    def union(a: Sequence[Any], b: Sequence[Any], key) -> list[Any]:
        seen = {key(x) for x in a}
        return [*a, *(x for x in b if key(x) not in seen)]

    def listed(name: str, a: Sequence[Any], b: Sequence[Any], key) -> list[Any]:
        choice = choices[name]
        if choice is Choice.survivor:
            return list(a)
        if choice is Choice.merged:
            return list(b)
        return union(a, b, key)

    emails = listed("emails", survivor.emails, merged.emails, lambda e: e.address)
    primaries = [e for e in emails if e.primary]
    if len(primaries) > 1:  # the union keeps the survivor's primary address
        first = primaries[0].address
        emails = [e.model_copy(update={"primary": e.address == first}) for e in emails]
    phones = listed("phones", survivor.phones, merged.phones, lambda p: p.number)
    tags = listed("tags", survivor.tags, merged.tags, lambda t: t)
    custom_choice = choices["custom_fields"]
    if custom_choice is Choice.survivor:
        custom = dict(survivor.custom_fields)
    elif custom_choice is Choice.merged:
        custom = dict(merged.custom_fields)
    else:
        custom = {**merged.custom_fields, **survivor.custom_fields}
    fields = ContactFields(
        given_name=_pick(choices["given_name"], survivor.given_name, merged.given_name),
        family_name=_pick(choices["family_name"], survivor.family_name, merged.family_name),
        emails=tuple(emails),
        phones=tuple(phones),
        address=_pick(choices["address"], survivor.address, merged.address),
        constituency=_pick(choices["constituency"], survivor.constituency, merged.constituency),
        polling_station=_pick(
            choices["polling_station"], survivor.polling_station, merged.polling_station
        ),
        birth_year=_pick(choices["birth_year"], survivor.birth_year, merged.birth_year),
        tags=tuple(tags),
        custom_fields=custom,
    )
    return fields, custom
