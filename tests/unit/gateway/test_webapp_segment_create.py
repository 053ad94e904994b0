"""Creating a segment from the back office (the new segment page of
gateway.webapp.screens_api): the same form and the same form -> body rules as the edit
form, rendered in both languages; what the user typed kept with each reason at its field
when the API refuses it; the size a filter would have now; the link on the segments list
only for the roles the API lets create one."""

from __future__ import annotations

import re
from typing import Any

import pytest
from gateway.webapp.i18n import EN, FR
from gateway.webapp.screens import (
    GEO_FIELDS,
    NOTICES,
    PRESENCE,
    SEGMENT_EDITORS,
    TAG_MATCHES,
    SegmentForm,
    notice_of,
)
from webapp_support import render_page, segment_page

NOW = "2026-03-14T10:00:00Z"
MANAGER = {"id": "u1", "email": "cm@tribune.test", "role": "campaign_manager", "federation_id": "f"}
TYPED = {
    "name": "Tract <b>",
    "description": "Quartier nord",
    "tags_match": "all",
    "tags": "tract, bénévole",
    "geo_field": "postcode",
    "geo_values": "29200 999999",
    "has_email": "yes",
    "has_phone": "",
}


def render(template: str, lang: str = "fr", /, me: dict[str, Any] = MANAGER, **context: Any) -> str:
    return render_page(template, lang, me=me, menu=("segments", "campaigns"), **context)


def new_page(**over: Any) -> dict[str, Any]:
    return {
        "active": "segments",
        "form": SegmentForm(),
        "errors": [],
        "preview": None,
        "tag_matches": TAG_MATCHES,
        "geo_fields": GEO_FIELDS,
        "presence": PRESENCE,
        **over,
    }


def segments_page(**over: Any) -> dict[str, Any]:
    return {
        "active": "segments",
        "items": [{"id": "s" * 32, "name": "Tract", "description": "", "updated_at": NOW}],
        "sizes": {"s" * 32: 3},
        "next_query": None,
        "notice": None,
        "editors": SEGMENT_EDITORS,
        **over,
    }


# ---------------------------------------------------------------- form -> body


def test_the_new_segments_body_is_the_edit_forms_without_a_version():
    typed = SegmentForm.read({**TYPED, "version": "4"})
    assert typed.create_body() == {
        "name": "Tract <b>",
        "description": "Quartier nord",
        "filter": {
            "op": "and",
            "of": [
                {"op": "tags", "match": "all", "tags": ["tract", "bénévole"]},
                {"op": "geo", "field": "postcode", "values": ["29200", "999999"]},
                {"op": "has_email", "value": True},
            ],
        },
    }
    assert typed.patch_body() == {**typed.create_body(), "version": 4}


def test_an_empty_new_form_makes_a_segment_of_everyone():
    assert SegmentForm.read({"name": "Tous"}).create_body() == {
        "name": "Tous",
        "description": "",
        "filter": {"op": "all"},
    }


def test_a_new_segments_filter_typed_as_json_that_does_not_parse_is_refused_before_the_api():
    with pytest.raises(ValueError):
        SegmentForm.read({"name": "n", "filter_json": "{op: all"}).create_body()


def test_the_apis_reasons_about_a_new_segment_go_to_the_field_they_are_about():
    typed = SegmentForm.read(TYPED)
    assert typed.errors_by_field(
        [
            ("name", "a segment with this name already exists in this federation"),
            ("filter.of.1.values.1", "must be at most 10 characters"),
            ("", "a federation may keep at most 500 segments"),
        ]
    ) == [
        ("name", "a segment with this name already exists in this federation"),
        ("geo_values", "must be at most 10 characters"),
        ("", "a federation may keep at most 500 segments"),
    ]


def test_the_created_notice_has_a_text_in_both_languages():
    assert notice_of("segment_created") == NOTICES["segment_created"]
    for key in ("segment.new", "segment.new_form", "segment.create", "segment.preview",
                "segment.preview_heading", NOTICES["segment_created"]):  # fmt: skip
        assert key in FR and key in EN


# ---------------------------------------------------------------- the pages


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_new_segment_form_renders_in_both_languages_with_the_edit_forms_fields(lang):
    html = render("segment_new.html", lang, **new_page())
    assert "<script>" not in html and " style=" not in html and " on" + "click=" not in html
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    ids = set(re.findall(r' id="([^"]+)"', html))
    assert labels <= ids and {"name", "description", "tags", "geo_values"} <= labels
    assert '<form method="post" action="/app/segments/new"' in html
    assert 'name="csrf_token" value="tok"' in html
    assert 'name="version"' not in html and "filter_json" not in html
    assert 'name="action" value="create"' in html and 'name="action" value="preview"' in html
    words = {
        "fr": ("Nouveau segment", "Créer le segment", "Voir combien de contacts", "Étiquettes"),
        "en": ("New segment", "Create the segment", "See how many contacts", "Tags"),
    }[lang]
    for text in words:
        assert text in html


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_a_refused_new_segment_keeps_what_was_typed_with_each_reason_at_its_field(lang):
    typed = SegmentForm.read(TYPED)
    errors = typed.errors_by_field(
        [("name", "must not be blank"), ("filter.of.1.values.1", "too long"), ("", "other")]
    )
    html = render("segment_new.html", lang, **new_page(form=typed, errors=errors))
    assert 'value="Tract &lt;b&gt;"' in html and "<b>" not in html
    assert ">Quartier nord</textarea>" in html
    assert 'value="tract, bénévole"' in html and 'value="29200 999999"' in html
    assert '<option value="all" selected>' in html and '<option value="yes" selected>' in html
    assert 'aria-invalid="true" aria-describedby="name-error"' in html
    assert '<p class="field-error" id="name-error">must not be blank</p>' in html
    assert 'aria-describedby="geo_values-error geo-hint"' in html
    assert '<p class="field-error" id="geo_values-error">too long</p>' in html
    assert 'role="alert"' in html and "other" in html  # the rest at the top, once
    assert html.count("must not be blank") == 1


def test_the_preview_shows_the_size_and_a_few_contacts_with_the_form_kept():
    preview = {
        "count": 1234,
        "sample": [{"id": "p" * 32, "given_name": "Léa", "family_name": "<M>"}],
    }
    html = render("segment_new.html", **new_page(form=SegmentForm.read(TYPED), preview=preview))
    assert "Contacts retenus par ce filtre" in html
    assert re.search(r'data-size="new">1\s234<', html)
    assert f'href="/app/people/{"p" * 32}">Léa &lt;M&gt;</a>' in html
    assert 'value="tract, bénévole"' in html
    assert "1,234" in render(
        "segment_new.html", "en", **new_page(form=SegmentForm.read(TYPED), preview=preview)
    )


@pytest.mark.parametrize("role", SEGMENT_EDITORS)
def test_the_roles_the_api_lets_create_a_segment_see_the_link(role):
    html = render("segments.html", me={**MANAGER, "role": role}, **segments_page())
    assert '<a href="/app/segments/new">Nouveau segment</a>' in html
    english = render("segments.html", "en", me={**MANAGER, "role": role}, **segments_page())
    assert '<a href="/app/segments/new">New segment</a>' in english


@pytest.mark.parametrize("role", ["viewer", "treasurer", "dpo"])
def test_roles_the_api_does_not_let_create_a_segment_see_no_link(role):
    html = render("segments.html", me={**MANAGER, "role": role}, **segments_page())
    assert "/app/segments/new" not in html
    assert "Tract" in html  # the list itself still shown


def test_the_new_segments_page_says_it_was_created():
    segment = {
        "id": "s" * 32,
        "name": "Tract",
        "description": "",
        "updated_at": NOW,
        "version": 1,
        "filter": {"op": "tags", "match": "any", "tags": ["tract"]},
    }
    html = render(
        "segment.html",
        **segment_page(
            segment, preview={"count": 2, "sample": []}, notice=notice_of("segment_created")
        ),
    )
    assert '<p class="notice" role="status">Segment créé.</p>' in html
    # the edit form is the same form: the same fields, filled
    assert 'id="tags" name="tags" type="text" maxlength="1000" value="tract"' in html
