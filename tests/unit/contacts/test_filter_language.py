"""The segment filter language: parsing with clear errors and bounds, compilation to a
MongoDB query, evaluation on a plain dict, and the two agreeing on generated contacts.

The agreement is checked here against a small reference interpreter of the MongoDB
operators the compiler emits (MongoDB's documented semantics: array fields match on any
element, comparisons only within a type, $nin and $not match missing fields), and in
tests/integration/test_contacts_segments.py against the real store."""

from __future__ import annotations

import json
import operator
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contacts.filter_language import (
    FilterError,
    FilterLimits,
    compile_filter,
    custom_field_names,
    custom_nodes,
    dump_filter,
    evaluate,
    federation_nodes,
    parse_filter,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def problems(raw: Any, limits: FilterLimits | None = None) -> dict[str, str]:
    with pytest.raises(FilterError) as caught:
        parse_filter(raw, limits)
    body = caught.value.body()
    assert body["error"] == "validation_error"
    return {d["field"]: d["reason"] for d in body["detail"]}


# ---------------------------------------------------------------- parsing


def test_a_filter_is_parsed_and_normalised_like_stored_values() -> None:
    flt = parse_filter(
        {
            "op": "and",
            "of": [
                {"op": "tags", "match": "any", "tags": [" Bénévole ", "bénévole", "TRACTAGE"]},
                {"op": "geo", "field": "department", "values": ["2a", " 75 "]},
                {"op": "custom", "name": "quartier", "cmp": "eq", "value": "  Belle  ville "},
                {"op": "date", "field": "created_at", "since": "2026-01-01T10:00:00.123456Z"},
            ],
        }
    )
    assert dump_filter(flt) == {
        "op": "and",
        "of": [
            {"op": "tags", "match": "any", "tags": ["bénévole", "tractage"]},
            {"op": "geo", "field": "department", "values": ["2A", "75"]},
            {"op": "custom", "name": "quartier", "cmp": "eq", "value": "Belle ville"},
            # BSON dates are milliseconds: the filter is too, so both sides agree
            {"op": "date", "field": "created_at", "since": "2026-01-01T10:00:00.123000Z"},
        ],
    }
    # what is dumped parses back to the same filter (segments are stored this way)
    assert parse_filter(dump_filter(flt)) == flt


def test_a_date_without_a_zone_is_utc() -> None:
    flt = parse_filter({"op": "date", "field": "updated_at", "until": "2026-03-01"})
    assert compile_filter(flt) == {"updated_at": {"$lt": datetime(2026, 3, 1, tzinfo=UTC)}}


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"op": "nope"}, "filter", "does not match any of the expected tags"),
        ({"tags": ["a"]}, "filter", "Unable to extract tag"),
        ("everyone", "filter", "valid dictionary"),
        ({"op": "and", "of": []}, "filter.of", "at least 1 item"),
        (
            {"op": "or", "of": [{"op": "all"}, {"op": "tags", "match": "some", "tags": ["a"]}]},
            "filter.of.1.match",
            "'any', 'all' or 'none'",
        ),
        (
            {"op": "not", "filter": {"op": "tags", "match": "any", "tags": ["ok", 3]}},
            "filter.filter.tags.1",
            "valid string",
        ),
        ({"op": "tags", "match": "any", "tags": ["  "]}, "filter.tags", "item 0 must not be blank"),
        ({"op": "geo", "field": "city", "values": ["Lyon"]}, "filter.field", "Input should be"),
        ({"op": "federation", "federation_id": "../x"}, "filter.federation_id", "pattern"),
        ({"op": "custom", "name": "Bad.Name", "cmp": "eq", "value": 1}, "filter.name", "pattern"),
        ({"op": "custom", "name": "age", "cmp": "eq", "value": True}, "filter.value", "a string"),
        ({"op": "custom", "name": "age", "cmp": "eq", "value": [1]}, "filter", "needs one value"),
        ({"op": "custom", "name": "age", "cmp": "in", "value": 1}, "filter", "non-empty list"),
        ({"op": "custom", "name": "age", "cmp": "exists", "value": 1}, "filter", "takes no value"),
        ({"op": "custom", "name": "age", "cmp": "gt", "value": 1e300}, "filter.value", "between"),
        ({"op": "date", "field": "created_at"}, "filter", "give 'since', 'until' or both"),
        (
            {"op": "date", "field": "created_at", "since": "2026-02-01", "until": "2026-01-01"},
            "filter",
            "'since' must be before 'until'",
        ),
        ({"op": "has_email", "value": "yes"}, "filter.value", "valid boolean"),
        ({"op": "all", "extra": 1}, "filter.extra", "Extra inputs"),
    ],
)
def test_a_bad_node_is_a_422_naming_its_path(raw: Any, field: str, reason: str) -> None:
    found = problems(raw)
    assert field in found, found
    assert reason in found[field]


def test_every_bad_node_is_reported_at_once() -> None:
    found = problems(
        {
            "op": "and",
            "of": [
                {"op": "tags", "match": "any", "tags": []},
                {"op": "or", "of": [{"op": "geo", "field": "postcode", "values": []}]},
            ],
        }
    )
    assert set(found) == {"filter.of.0.tags", "filter.of.1.of.0.values"}


def test_depth_node_count_and_list_sizes_are_bounded() -> None:
    limits = FilterLimits(max_depth=3, max_nodes=5, max_values=3)
    nested: dict[str, Any] = {"op": "all"}
    for _ in range(3):
        nested = {"op": "not", "filter": nested}
    assert problems(nested, limits) == {
        "filter.filter.filter.filter": "nested deeper than 3 levels"
    }
    wide = {"op": "or", "of": [{"op": "and", "of": [{"op": "all"}] * 2}] * 2}  # 7 nodes
    assert problems(wide, limits) == {"filter": "more than 5 nodes"}
    long = {"op": "tags", "match": "any", "tags": ["a", "b", "c", "d"]}
    assert problems(long, limits) == {"filter.tags": "more than 3 items"}
    # within the limits it parses
    parse_filter({"op": "not", "filter": {"op": "not", "filter": {"op": "all"}}}, limits)


def test_a_hostile_tree_is_refused_before_it_is_validated() -> None:
    """A 100,000-deep tree would exhaust the recursion of any recursive validator."""
    nested: dict[str, Any] = {"op": "all"}
    for _ in range(100_000):
        nested = {"op": "not", "filter": nested}
    found = problems(nested)
    assert list(found.values()) == ["nested deeper than 10 levels"]


def test_texts_are_bounded_by_the_settings_before_they_are_normalised(monkeypatch) -> None:
    import contacts.filter_language as language
    from contacts.settings import ContactsSettings

    limits = ContactsSettings(segment_max_text_length=10).filter_limits
    normalised: list[str] = []
    clean_text = language.clean_text
    monkeypatch.setattr(language, "clean_text", lambda v: normalised.append(v) or clean_text(v))
    huge = {"op": "tags", "match": "any", "tags": ["ok", "x" * 1_000_000]}
    assert problems({"op": "not", "filter": huge}, limits) == {
        "filter.filter.tags.1": "must be at most 10 characters"
    }
    assert normalised == []  # refused on the raw JSON: no megabyte was normalised
    custom = {"op": "custom", "name": "note", "cmp": "eq", "value": "y" * 11}
    assert problems(custom, limits) == {"filter.value": "must be at most 10 characters"}
    values = {"op": "custom", "name": "note", "cmp": "in", "value": ["a", "y" * 11]}
    assert problems(values, limits) == {"filter.value.1": "must be at most 10 characters"}
    # within the bound it parses, and the stored text is held to the same bound
    parse_filter({"op": "geo", "field": "postcode", "values": ["x" * 10]}, limits)
    assert normalised == ["x" * 10]
    # a text may grow when normalised: NFC turns U+095E (a composition exclusion) into two
    # characters, so 6 sent are 12 kept
    grows = {"op": "tags", "match": "any", "tags": ["\u095e" * 6]}
    assert problems(grows, limits) == {"filter.tags": "item 0 must be at most 10 characters"}


def test_references_are_listed_with_their_paths() -> None:
    flt = parse_filter(
        {
            "op": "or",
            "of": [
                {"op": "federation", "federation_id": "paris"},
                {"op": "not", "filter": {"op": "custom", "name": "age", "cmp": "exists"}},
            ],
        }
    )
    assert [(p, n.federation_id) for p, n in federation_nodes(flt)] == [("filter.of.0", "paris")]
    assert [(p, n.name) for p, n in custom_nodes(flt)] == [("filter.of.1.filter", "age")]
    assert custom_field_names(flt) == {"age"}


# ---------------------------------------------------------------- compile and evaluate


def test_compiled_queries() -> None:
    def compiled(raw: dict[str, Any]) -> dict[str, Any]:
        return compile_filter(parse_filter(raw))

    assert compiled({"op": "tags", "match": "all", "tags": ["a", "b"]}) == {
        "tags": {"$all": ["a", "b"]}
    }
    assert compiled({"op": "tags", "match": "none", "tags": ["a"]}) == {"tags": {"$nin": ["a"]}}
    assert compiled({"op": "geo", "field": "commune_insee", "values": ["2a004"]}) == {
        "address.commune_insee": {"$in": ["2A004"]}
    }
    assert compiled({"op": "federation", "federation_id": "paris"}) == {
        "federation_path": {"$regex": "/paris/"}
    }
    assert compiled({"op": "custom", "name": "age", "cmp": "lt", "value": 30}) == {
        "custom_fields.age": {"$lt": 30}
    }
    assert compiled({"op": "has_phone", "value": False}) == {"phone": {"$not": {"$type": "string"}}}
    assert compiled({"op": "not", "filter": {"op": "all"}}) == {"$nor": [{}]}


def contact(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "federation_path": "/root/paris/p11/",
        "tags": ["bénévole", "tractage"],
        "email": "m@example.fr",
        "address": {"postcode": "75011", "commune_insee": "75111", "department": "75"},
        "constituency": "75-07",
        "custom_fields": {"age": 42, "quartier": "Roquette", "adhesion": "2019-05-01"},
        "created_at": T0,
        "updated_at": T0 + timedelta(days=10),
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("raw", "matches"),
    [
        ({"op": "all"}, True),
        ({"op": "tags", "match": "any", "tags": ["Tractage", "x"]}, True),
        ({"op": "tags", "match": "all", "tags": ["tractage", "x"]}, False),
        ({"op": "tags", "match": "none", "tags": ["x"]}, True),
        ({"op": "geo", "field": "postcode", "values": ["75011", "75012"]}, True),
        ({"op": "geo", "field": "polling_station", "values": ["1"]}, False),
        ({"op": "federation", "federation_id": "paris"}, True),
        ({"op": "federation", "federation_id": "p1"}, False),  # a segment, not a prefix
        ({"op": "custom", "name": "age", "cmp": "gt", "value": 41.5}, True),
        ({"op": "custom", "name": "age", "cmp": "lt", "value": "9"}, False),  # kinds differ
        ({"op": "custom", "name": "age", "cmp": "eq", "value": 42.0}, True),
        ({"op": "custom", "name": "adhesion", "cmp": "lt", "value": "2020-01-01"}, True),
        (
            {"op": "custom", "name": "quartier", "cmp": "in", "value": ["Bastille", "Roquette"]},
            True,
        ),
        ({"op": "custom", "name": "absent", "cmp": "exists"}, False),
        (
            {"op": "not", "filter": {"op": "custom", "name": "absent", "cmp": "gt", "value": 1}},
            True,
        ),
        ({"op": "date", "field": "created_at", "since": "2026-01-01T00:00:00Z"}, True),
        ({"op": "date", "field": "updated_at", "until": "2026-01-11T00:00:00Z"}, False),
        ({"op": "has_email"}, True),
        ({"op": "has_phone"}, False),
        ({"op": "or", "of": [{"op": "has_phone"}, {"op": "has_email", "value": False}]}, False),
    ],
)
def test_evaluate(raw: dict[str, Any], matches: bool) -> None:
    flt = parse_filter(raw)
    assert evaluate(flt, contact()) is matches
    # the same contact as another service projects it from the event JSON (ISO dates)
    projected = json.loads(json.dumps(contact(), default=lambda d: d.isoformat()))
    assert evaluate(flt, projected) is matches


def test_missing_fields_match_only_negations() -> None:
    bare = {"federation_path": "/root/", "created_at": T0, "updated_at": T0}
    for raw, matches in [
        ({"op": "tags", "match": "none", "tags": ["a"]}, True),
        ({"op": "tags", "match": "any", "tags": ["a"]}, False),
        ({"op": "geo", "field": "department", "values": ["75"]}, False),
        ({"op": "custom", "name": "age", "cmp": "lt", "value": 100}, False),
        ({"op": "has_email", "value": False}, True),
    ]:
        assert evaluate(parse_filter(raw), bare) is matches, raw


# ---------------------------------------------------------------- generated agreement


def generated_contacts(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Contacts of the document shape, with the awkward cases: missing fields, numbers of
    both kinds, strings where numbers are expected, boundaries of the date ranges."""
    paths = ["/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/", "/root/paris2/"]
    out = []
    for i in range(n):
        doc: dict[str, Any] = {
            "_id": f"c{i:04d}",
            "federation_path": rng.choice(paths),
            "created_at": T0 + timedelta(days=rng.randrange(0, 20)),
            "updated_at": T0
            + timedelta(days=rng.randrange(10, 30), milliseconds=rng.choice([0, 1])),
        }
        if rng.random() < 0.8:
            doc["tags"] = rng.sample(["a", "b", "c", "d"], rng.randrange(0, 4))
        if rng.random() < 0.6:
            doc["email"] = f"p{i}@example.fr"
        if rng.random() < 0.5:
            doc["phone"] = f"+336{i:08d}"
        if rng.random() < 0.7:
            postcode = rng.choice(["75011", "69001", "13001", "20000"])
            doc["address"] = {"postcode": postcode, "department": rng.choice(["75", "69", "2A"])}
            if rng.random() < 0.5:
                doc["address"]["commune_insee"] = rng.choice(["75111", "69381", "2A004"])
        if rng.random() < 0.5:
            doc["constituency"] = rng.choice(["75-01", "69-02"])
        if rng.random() < 0.3:
            doc["polling_station"] = rng.choice(["0001", "0002"])
        custom: dict[str, Any] = {}
        if rng.random() < 0.7:
            custom["age"] = rng.choice([18, 30, 30.0, 42.5, 65, "30", "x"])
        if rng.random() < 0.6:
            custom["quartier"] = rng.choice(["Bastille", "Roquette", "Croix-Rousse", "10"])
        if rng.random() < 0.5:
            custom["adhesion"] = rng.choice(["2018-01-01", "2019-05-01", "2024-12-31"])
        if custom:
            doc["custom_fields"] = custom
        out.append(doc)
    return out


def generated_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    leaves = [
        lambda: {
            "op": "tags",
            "match": rng.choice(["any", "all", "none"]),
            "tags": rng.sample(["a", "b", "c", "d", "z"], rng.randrange(1, 3)),
        },
        lambda: {
            "op": "geo",
            "field": rng.choice(["postcode", "commune_insee", "department", "constituency"]),
            "values": rng.sample(["75011", "69001", "75111", "2A004", "75", "2A", "75-01"], 2),
        },
        lambda: {"op": "federation", "federation_id": rng.choice(["paris", "p11", "lyon", "root"])},
        lambda: {
            "op": "custom",
            "name": rng.choice(["age", "quartier", "adhesion", "absent"]),
            "cmp": (cmp := rng.choice(["eq", "in", "lt", "gt", "exists"])),
            **(
                {}
                if cmp == "exists"
                else {"value": [rng.choice([30, "Roquette", 42.5]), rng.choice(["10", 18])]}
                if cmp == "in"
                else {"value": rng.choice([30, 30.0, 42.5, "30", "Bastille", "2019-01-01", "x"])}
            ),
        },
        lambda: {
            "op": "date",
            "field": rng.choice(["created_at", "updated_at"]),
            **rng.choice(
                [
                    {"since": (T0 + timedelta(days=10)).isoformat()},
                    {"until": (T0 + timedelta(days=15)).isoformat()},
                    {
                        "since": (T0 + timedelta(days=5)).isoformat(),
                        "until": (T0 + timedelta(days=20, milliseconds=1)).isoformat(),
                    },
                ]
            ),
        },
        lambda: {"op": rng.choice(["has_email", "has_phone"]), "value": rng.random() < 0.5},
        lambda: {"op": "all"},
    ]
    if depth < 3 and rng.random() < 0.45:
        op = rng.choice(["and", "or", "not"])
        if op == "not":
            return {"op": "not", "filter": generated_filter(rng, depth + 1)}
        return {
            "op": op,
            "of": [generated_filter(rng, depth + 1) for _ in range(rng.randrange(1, 4))],
        }
    return rng.choice(leaves)()


# A reference interpreter of the MongoDB query operators the compiler uses.

_MISSING = object()


def _lookup(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _bracket(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _candidates(value: Any) -> list[Any]:
    """MongoDB matches an array field on the array itself or on any element."""
    if value is _MISSING:
        return []
    return [value, *value] if isinstance(value, list) else [value]


def _operator(op: str, arg: Any, value: Any) -> bool:
    found = _candidates(value)
    if op == "$in":
        return any(v == a and _bracket(v) == _bracket(a) for v in found for a in arg)
    if op == "$nin":
        return not _operator("$in", arg, value)
    if op == "$all":
        return all(_operator("$in", [a], value) for a in arg)
    if op == "$exists":
        return (value is not _MISSING) is arg
    if op == "$ne":
        return not any(v == arg for v in found) and not (arg is None and value is _MISSING)
    if op == "$type":
        return any(isinstance(v, str) for v in found)
    if op == "$not":
        return not _field(arg, value)
    if op == "$regex":
        return any(isinstance(v, str) and re.search(arg, v) for v in found)
    compare = {"$lt": operator.lt, "$gt": operator.gt, "$gte": operator.ge, "$lte": operator.le}
    return any(_bracket(v) == _bracket(arg) and compare[op](v, arg) for v in found)


def _field(condition: Any, value: Any) -> bool:
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        return all(_operator(op, arg, value) for op, arg in condition.items())
    return any(v == condition and _bracket(v) == _bracket(condition) for v in _candidates(value))


def mongo_matches(query: dict[str, Any], doc: dict[str, Any]) -> bool:
    for key, condition in query.items():
        if key == "$and":
            ok = all(mongo_matches(q, doc) for q in condition)
        elif key == "$or":
            ok = any(mongo_matches(q, doc) for q in condition)
        elif key == "$nor":
            ok = not any(mongo_matches(q, doc) for q in condition)
        else:
            ok = _field(condition, _lookup(doc, key))
        if not ok:
            return False
    return True


def test_compile_and_evaluate_agree_on_generated_contacts() -> None:
    rng = random.Random(20260314)
    contacts = generated_contacts(rng, 150)
    matched_some = 0
    for _ in range(400):
        flt = parse_filter(generated_filter(rng))
        query = compile_filter(flt)
        by_query = {c["_id"] for c in contacts if mongo_matches(query, c)}
        by_evaluate = {c["_id"] for c in contacts if evaluate(flt, c)}
        assert by_query == by_evaluate, dump_filter(flt)
        matched_some += 0 < len(by_evaluate) < len(contacts)
    # the generated filters are selective (neither always nor never matching)
    assert matched_some > 150
