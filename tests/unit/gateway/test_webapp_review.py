"""The duplicates review's and the segment editor's pure rules (gateway.webapp.duplicates,
gateway.webapp.screens.SegmentForm): two contacts side by side field by field with the
API's default choices, the review form as the merge body, a stale read told apart from
another refusal; a segment's filter as form fields and back, the API's reasons placed at
the field they are about; and the roles shown the forms are the ones the API lets in."""

from __future__ import annotations

import inspect

import pytest
from gateway.webapp.duplicates import (
    MERGE_FIELDS,
    MergeForm,
    changed_labels,
    field_rows,
    field_text,
    stale,
    valid_cursor,
)
from gateway.webapp.i18n import EN, FR
from gateway.webapp.screens import (
    GEO_FIELDS,
    MENU,
    MERGERS,
    NOTICES,
    PRESENCE,
    SEGMENT_EDITORS,
    TAG_MATCHES,
    SegmentForm,
)

CAMILLE = {
    "id": "a" * 32,
    "version": 3,
    "given_name": "Camille",
    "family_name": "Martin",
    "emails": [{"address": "camille@example.fr", "primary": True}],
    "phones": [],
    "address": {"lines": ["3 rue Oberkampf"], "postcode": "75011", "commune": "Paris"},
    "tags": ["bénévole"],
    "custom_fields": {"taille": "M"},
    "birth_year": None,
}
CAMILE = {
    "id": "b" * 32,
    "version": 1,
    "given_name": "Camile",
    "family_name": "MARTIN",
    "emails": [{"address": "c.martin@example.fr", "primary": True}],
    "phones": [{"number": "+33612345678", "kind": "mobile"}],
    "postcode": "75011",
    "tags": [],
    "birth_year": 1990,
}


# ---------------------------------------------------------------- duplicates review


def test_both_contacts_are_shown_field_by_field_with_the_apis_default_choice():
    rows = {r.name: r for r in field_rows(CAMILLE, CAMILE)}
    assert list(rows) == list(MERGE_FIELDS)
    assert (rows["given_name"].survivor, rows["given_name"].merged) == ("Camille", "Camile")
    assert rows["given_name"].chosen == "auto" and rows["emails"].chosen == "union"
    assert rows["address"].survivor == "3 rue Oberkampf, 75011, Paris"
    assert rows["address"].merged == "75011"  # only the postcode mirror
    assert rows["phones"].survivor == "" and rows["phones"].merged == "+33612345678"
    assert rows["birth_year"].survivor == "" and rows["birth_year"].merged == "1990"
    assert rows["custom_fields"].survivor == "taille: M"
    assert not rows["family_name"].same and rows["constituency"].same


def test_the_users_choices_are_kept_when_the_page_comes_back_and_unknown_ones_are_not():
    rows = {r.name: r for r in field_rows(CAMILLE, CAMILE, {"given_name": "merged", "tags": "x"})}
    assert rows["given_name"].chosen == "merged"
    assert rows["tags"].chosen == "union"  # "x" is not a choice: the default


def test_the_review_form_becomes_the_merge_body_with_the_versions_read():
    form = MergeForm.read(
        {
            "survivor_id": "a" * 32,
            "merged_id": "b" * 32,
            "survivor_version": "3",
            "merged_version": "1",
            "field.given_name": "merged",
            "field.emails": "survivor",
            "field.tags": "auto",  # not a choice tags take: left to the API's default
            "field.id": "merged",  # not a merge field
        }
    )
    assert form.body() == {
        "merged_id": "b" * 32,
        "fields": {"given_name": "merged", "emails": "survivor"},
        "survivor_version": 3,
        "merged_version": 1,
    }


@pytest.mark.parametrize("version", ["", "x", "-1", "0", "9" * 30])
def test_a_version_that_is_not_one_is_left_out(version):
    form = MergeForm.read({"survivor_id": "a", "merged_id": "b", "survivor_version": version})
    assert "survivor_version" not in form.body()


def test_a_stale_read_is_told_apart_from_another_refusal():
    assert stale(409, [("survivor_version", "the contact changed since you read it")])
    assert stale(409, [("", "a contact changed during the merge: read them again")])
    assert not stale(409, [("", "contacts of different federations are different people")])
    assert not stale(422, [("fields.given_name", "one of auto, survivor, merged")])


def test_a_merge_logs_changed_fields_are_named_once_by_their_merge_field():
    assert changed_labels(["email", "emails", "custom_fields.taille", "given_name", "odd"]) == [
        ("merge.field.emails", "emails"),
        ("merge.field.custom_fields", "custom_fields"),
        ("merge.field.given_name", "given_name"),
        ("", "odd"),
    ]


def test_only_a_cursor_the_api_could_have_given_is_passed_on():
    assert valid_cursor("ZDE6WyI3NTAxMSIsIDJd") == "ZDE6WyI3NTAxMSIsIDJd"
    assert valid_cursor("a&b=c") is None and valid_cursor("x" * 501) is None
    assert valid_cursor(None) is None


def test_field_text_reads_the_mirrors_of_an_older_contact():
    assert field_text("emails", {"email": "x@example.fr"}) == "x@example.fr"
    assert field_text("phones", {"phone": "+33600000000"}) == "+33600000000"


# ---------------------------------------------------------------- segment editing


@pytest.mark.parametrize(
    "flt",
    [
        {"op": "all"},
        {"op": "tags", "match": "none", "tags": ["bénévole", "tract 2026"]},
        {"op": "geo", "field": "department", "values": ["75", "2A"]},
        {
            "op": "and",
            "of": [
                {"op": "tags", "match": "all", "tags": ["a", "b"]},
                {"op": "geo", "field": "postcode", "values": ["75011", "75012"]},
                {"op": "has_email", "value": True},
                {"op": "has_phone", "value": False},
            ],
        },
    ],
)
def test_a_filter_the_form_can_say_comes_back_the_same_from_its_fields(flt):
    form = SegmentForm.of_segment({"name": "n", "version": 2, "filter": flt})
    assert form.filter_json is None
    assert form.filter() == flt
    posted = SegmentForm.read(
        {
            "name": "n",
            "tags_match": form.tags_match,
            "tags": form.tags,
            "geo_field": form.geo_field,
            "geo_values": form.geo_values,
            "has_email": form.has_email,
            "has_phone": form.has_phone,
            "version": "2",
        }
    )
    assert posted.patch_body() == {"name": "n", "description": "", "filter": flt, "version": 2}


@pytest.mark.parametrize(
    "flt",
    [
        {
            "op": "or",
            "of": [{"op": "has_email", "value": True}, {"op": "has_phone", "value": True}],
        },
        {"op": "custom", "name": "taille", "cmp": "eq", "value": "M"},
        {
            "op": "and",
            "of": [{"op": "has_email", "value": True}, {"op": "has_email", "value": True}],
        },
        {"op": "tags", "match": "any", "tags": ["a,b"]},  # a comma the form would split
        {"op": "geo", "field": "constituency", "values": ["Paris 1"]},  # a space, likewise
    ],
)
def test_a_filter_the_form_cannot_say_is_edited_as_json(flt):
    form = SegmentForm.of_segment({"name": "n", "version": 1, "filter": flt})
    assert form.filter_json is not None
    assert form.filter() == flt


def test_typed_values_are_split_and_trimmed_and_unknown_choices_read_as_defaults():
    form = SegmentForm.read(
        {
            "tags": " bénévole , , tract ",
            "tags_match": "most",
            "geo_field": "street",
            "geo_values": "75011,75012  75013",
            "has_email": "maybe",
        }
    )
    assert form.filter() == {
        "op": "and",
        "of": [
            {"op": "tags", "match": "any", "tags": ["bénévole", "tract"]},
            {"op": "geo", "field": "postcode", "values": ["75011", "75012", "75013"]},
        ],
    }


def test_json_that_does_not_parse_is_refused_before_the_api_is_asked():
    with pytest.raises(ValueError):
        SegmentForm.read({"name": "n", "filter_json": "{op: all"}).patch_body()


def test_the_apis_reasons_go_to_the_field_they_are_about():
    both = SegmentForm.read({"tags": "a", "geo_values": "999999", "has_phone": "yes"})
    assert both.errors_by_field(
        [
            ("filter.of.1.values", "not a postcode"),
            ("filter.of.0.match", "bad"),
            ("filter.of.2.value", "bad"),
            ("name", "must not be blank"),
            ("filter", "too many nodes"),
            ("version", "must be at least 1"),
        ]
    ) == [
        ("geo_values", "not a postcode"),
        ("tags_match", "bad"),
        ("has_phone", "bad"),
        ("name", "must not be blank"),
        ("filter", "too many nodes"),
        ("", "must be at least 1"),
    ]
    alone = SegmentForm.read({"geo_field": "department", "geo_values": "999"})
    assert alone.field_of("filter.values") == "geo_values"
    assert SegmentForm.read({"filter_json": "{}"}).field_of("filter.op") == "filter_json"


# ---------------------------------------------------------------- who sees what, in words


def _allowed(dependency) -> set[str]:
    """The roles a tribune_shared.auth.require_roles dependency lets in."""
    return {str(r) for r in inspect.getclosurevars(dependency.dependency).nonlocals["allowed"]}


def test_the_forms_are_shown_to_exactly_the_roles_the_api_lets_change():
    from contacts.import_api import may_merge
    from contacts.merge import MERGE_FIELDS as API_MERGE_FIELDS
    from contacts.segments_api import may_edit

    assert set(SEGMENT_EDITORS) == _allowed(may_edit)
    assert set(MERGERS) == _allowed(may_merge)
    assert {r for r, entries in MENU.items() if "duplicates" in entries} == set(MERGERS)
    assert {k: tuple(c.value for c in v) for k, v in API_MERGE_FIELDS.items()} == dict(MERGE_FIELDS)


def test_the_form_choices_are_the_filter_languages():
    from contacts.filter_language import GEO_FIELDS as API_GEO_FIELDS

    assert set(GEO_FIELDS) == set(API_GEO_FIELDS)


@pytest.mark.parametrize(
    ("prefix", "values"),
    [
        ("merge.field.", tuple(MERGE_FIELDS)),
        ("merge.choice.", ("auto", "survivor", "merged", "union")),
        ("segment.match.", TAG_MATCHES),
        ("segment.geo.", GEO_FIELDS),
        ("segment.presence.", tuple(p or "any" for p in PRESENCE)),
        ("", tuple(NOTICES.values())),
        ("nav.", ("duplicates",)),
    ],
)
def test_every_value_the_new_screens_write_has_a_text_in_both_languages(prefix, values):
    for value in values:
        assert prefix + value in FR and prefix + value in EN
