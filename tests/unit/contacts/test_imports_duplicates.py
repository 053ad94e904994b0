"""Likely duplicates (rapidfuzz, blocked by postcode and federation) and merge choices."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from contacts.domain import Contact, InvalidFields
from contacts.merge import (
    Candidate,
    Choice,
    block_pairs,
    blocks,
    check_choices,
    decode_duplicates_cursor,
    encode_duplicates_cursor,
    merged_fields,
    name_key,
    name_score,
)
from tribune_shared.events.contracts import DataOrigin


def test_names_compare_without_case_accents_or_word_order():
    assert name_key(" Éloïse ", "LEFÈVRE") == "eloise lefevre"
    assert name_score(name_key("Jean", "Dupont"), name_key("DUPONT", "Jéan")) == 100
    assert name_score("jean dupont", "jean dupond") > 88 > name_score("jean dupont", "paul martin")


def cand(i: str, name: str, postcode: str = "75011", fed: str = "paris") -> Candidate:
    return Candidate(i, fed, postcode, name)


def test_a_block_yields_its_alike_pairs_best_first():
    block = [
        cand("a", "jean dupont"),
        cand("b", "dupont jean"),
        cand("c", "jeanne dupont"),
        cand("d", "paul martin"),
        cand("e", ""),  # no name: never paired
    ]
    pairs = block_pairs(block, 88, max_block=100)
    assert [(p.a, p.b, p.score) for p in pairs] == [
        ("a", "b", 100.0),
        ("a", "c", 91.7),
        ("b", "c", 91.7),
    ]
    assert all(p.postcode == "75011" and p.federation_id == "paris" for p in pairs)
    assert block_pairs(block, 95, max_block=100) == pairs[:1]


def test_blocks_are_per_postcode_and_federation():
    grouped = blocks(
        [cand("a", "x"), cand("b", "x", fed="lyon"), cand("c", "x", "69003"), cand("d", "x")]
    )
    assert [[c.id for c in g] for g in grouped] == [["c"], ["b"], ["a", "d"]]


def test_an_oversized_block_is_compared_in_windows_of_names_in_order():
    # 40 people whose names sort together in pairs ("name00a", "name00b"...)
    block = [cand(f"{i:02d}{s}", f"person{i:02d} x{s}") for i in range(20) for s in "ab"]
    full = block_pairs(block, 80, max_block=1000)
    windowed = block_pairs(block, 80, max_block=6)
    neighbours = {(p.a, p.b) for p in full if p.a[:2] == p.b[:2]}
    assert neighbours <= {(p.a, p.b) for p in windowed}  # neighbours in name order are found
    assert len(windowed) < len(full)  # the rest is bounded away


def test_the_duplicates_cursor_round_trips_and_refuses_forgeries():
    assert decode_duplicates_cursor(encode_duplicates_cursor("75011", 3)) == ("75011", 3)
    for bad in ("nope", "ZDE6WzEsMl0", encode_duplicates_cursor("x", 0)[:-2] + "!!"):
        with pytest.raises(InvalidFields):
            decode_duplicates_cursor(bad)


def contact(i: str, **fields) -> Contact:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = {
        "id": i * 32,
        "federation_id": "paris",
        "federation_path": "/root/paris/",
        "version": 1,
        "given_name": "",
        "family_name": "",
        "tags": [],
        "origin": DataOrigin(kind="manual"),
        "created_at": now,
        "updated_at": now,
        "created_by": "u",
    }
    return Contact.model_validate({**base, **fields})


def test_merge_defaults_keep_the_survivor_fill_its_gaps_and_unite_lists():
    survivor = contact(
        "a", family_name="Dupont", email="a@x.fr", tags=["t1"], custom_fields={"x": 1}
    )
    merged = contact(
        "b",
        given_name="Jean",
        family_name="DUPONT",
        email="b@x.fr",
        phone="+33612345678",
        tags=["t2", "t1"],
        birth_year=1970,
        custom_fields={"x": 2, "y": 3},
    )
    fields, custom = merged_fields(survivor, merged, check_choices({}))
    assert (fields.given_name, fields.family_name) == ("Jean", "Dupont")
    assert [(e.address, e.primary) for e in fields.emails] == [("a@x.fr", True), ("b@x.fr", False)]
    assert [p.number for p in fields.phones] == ["+33612345678"]
    assert fields.tags == ("t1", "t2") and fields.birth_year == 1970
    assert custom == {"x": 1, "y": 3}


def test_merge_choices_pick_either_side():
    survivor = contact("a", given_name="Jean", email="a@x.fr", tags=["t1"])
    merged = contact("b", given_name="Jean-Pierre", email="b@x.fr", tags=["t2"])
    choices = check_choices({"given_name": "merged", "emails": "merged", "tags": "survivor"})
    fields, _ = merged_fields(survivor, merged, choices)
    assert fields.given_name == "Jean-Pierre"
    assert [e.address for e in fields.emails] == ["b@x.fr"]
    assert fields.tags == ("t1",)


def test_merge_choices_are_checked():
    assert check_choices({})["emails"] is Choice.union
    with pytest.raises(InvalidFields) as exc:
        check_choices({"colour": "merged", "given_name": "union", "tags": "auto"})
    assert {f for f, _ in exc.value.problems} == {
        "fields.colour",
        "fields.given_name",
        "fields.tags",
    }
