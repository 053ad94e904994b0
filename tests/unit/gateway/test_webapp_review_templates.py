"""The duplicates review's and the segment editor's templates rendered with answers shaped
as the contacts API gives them, in both languages: what a secretary or a campaign manager
must see (the pair and why, both records side by side with a labelled choice per field
and the versions read, the fresh values after a stale read; the filter's fields filled,
each refusal next to its field, the delete confirmation) and what a viewer must not (the
forms)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import webapp_support
from gateway.webapp.duplicates import changed_labels, display_name, emails_of, field_rows
from gateway.webapp.screens import (
    SegmentForm,
    federation_tree,
)
from webapp_support import render_page

NOW = "2026-03-14T10:00:00Z"
TREE = federation_tree(
    [
        {"id": "root", "name": "National", "parent_id": None, "path": "/root/"},
        {"id": "paris", "name": "Paris", "parent_id": "root", "path": "/root/paris/"},
    ]
)
SECRETARY = {"id": "u1", "email": "sec@tribune.test", "role": "secretary", "federation_id": "root"}
A = {
    "id": "a" * 32,
    "version": 4,
    "given_name": "Camille",
    "family_name": "Martin <b>",
    "emails": [{"address": "camille@example.fr", "primary": True}],
    "phones": [],
    "address": {"lines": [], "postcode": "75011", "commune": "Paris"},
    "tags": ["bénévole"],
    "custom_fields": {},
}
B = {
    **A,
    "id": "b" * 32,
    "version": 2,
    "given_name": "Camile",
    "emails": [{"address": "c.martin@example.fr", "primary": True}],
}
MERGE = {
    "id": "m1",
    "federation_id": "paris",
    "surviving_contact_id": "a" * 32,
    "merged_contact_id": "c" * 32,
    "merged_by": "u1",
    "merged_by_email": "sec@tribune.test",
    "merged_at": NOW,
    "choices": {},
    "changed_fields": ["emails", "email", "given_name"],
    "surviving_version": 5,
    "merged_version": 1,
}
SEGMENT = {
    "id": "s" * 32,
    "name": "Tract <i>",
    "description": "",
    "updated_at": NOW,
    "version": 3,
    "filter": {
        "op": "and",
        "of": [
            {"op": "tags", "match": "any", "tags": ["tract"]},
            {"op": "geo", "field": "postcode", "values": ["75011"]},
        ],
    },
}


def render(
    template: str, lang: str = "fr", /, me: dict[str, Any] = SECRETARY, **context: Any
) -> str:
    return render_page(template, lang, me=me, menu=("imports", "duplicates", "segments"), **context)


def duplicates_page(**over: Any) -> dict[str, Any]:
    return {
        "active": "duplicates",
        "pairs": [{"score": 96.3, "postcode": "75011", "federation_id": "paris", "a": A, "b": B}],
        "partial_postcode": None,
        "next_query": "cursor=abc",
        "tree": TREE,
        "names": {"paris": "Paris"},
        "federation_id": "paris",
        "merges": [MERGE],
        "display_name": display_name,
        "emails_of": emails_of,
        "changed_labels": changed_labels,
        "notice": None,
        **over,
    }


def review_page(**over: Any) -> dict[str, Any]:
    return {
        "active": "duplicates",
        "survivor": A,
        "merged": B,
        "rows": field_rows(A, B),
        "display_name": display_name,
        "errors": [],
        "changed": False,
        **over,
    }


def segment_page(**over: Any) -> dict[str, Any]:
    return webapp_support.segment_page(over.pop("segment", SEGMENT), **over)


PAGES = {
    "duplicates.html": duplicates_page,
    "duplicate.html": review_page,
    "segment.html": segment_page,
}


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_new_screen_renders_in_both_languages_without_inline_code(name, lang):
    html = render(name, lang, **PAGES[name]())
    assert "<script>" not in html and " style=" not in html and " on" + "click=" not in html
    assert "<b>" not in html and "<i>" not in html  # names escaped
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    ids = set(re.findall(r' id="([^"]+)"', html))
    assert labels <= ids  # every label names a field of the page


def test_the_duplicates_screen_lists_the_pair_why_and_the_latest_merges():
    html = render("duplicates.html", **duplicates_page())
    assert "Camille Martin &lt;b&gt;" in html and "c.martin@example.fr" in html
    assert "96,3" in html  # the French way; "96.3" in English
    assert "Noms proches, même code postal (75011), même fédération (Paris)" in html
    assert f'href="/app/duplicates/review?survivor={"a" * 32}&amp;merged={"b" * 32}"' in html
    assert 'href="/app/duplicates?cursor=abc"' in html
    assert "Dernières fusions" in html and "sec@tribune.test" in html
    assert "Adresses e-mail, Prénom" in html  # email and emails said once
    assert '<option value="paris" selected>' in html
    english = render("duplicates.html", "en", **duplicates_page(pairs=[], merges=[]))
    assert "No likely duplicate." in english and "No merge yet." in english
    assert "96.3" in render("duplicates.html", "en", **duplicates_page())


def test_a_role_that_may_not_read_the_merge_log_sees_the_pairs_alone():
    html = render("duplicates.html", **duplicates_page(merges=None))
    assert "Dernières fusions" not in html and "Camille" in html


def test_the_review_shows_both_records_a_labelled_choice_per_field_and_the_versions_read():
    html = render("duplicate.html", **review_page())
    assert 'name="survivor_version" value="4"' in html and 'name="merged_version" value="2"' in html
    assert f'name="survivor_id" value="{"a" * 32}"' in html
    assert 'action="/app/duplicates/merge"' in html and 'name="csrf_token"' in html
    assert 'id="f-given_name-auto" name="field.given_name" value="auto" checked' in html
    assert 'id="f-emails-union" name="field.emails" value="union" checked' in html
    assert '<legend class="visually-hidden">Prénom</legend>' in html
    assert "camille@example.fr" in html and "c.martin@example.fr" in html
    assert f'href="/app/duplicates/review?survivor={"b" * 32}&amp;merged={"a" * 32}"' in html
    assert "modifiée depuis" not in html


def test_after_a_stale_read_the_review_says_so_and_keeps_the_users_choices():
    html = render(
        "duplicate.html",
        "en",
        **review_page(changed=True, rows=field_rows(A, B, {"given_name": "merged"})),
    )
    assert "One of the two records changed since this page was opened" in html
    assert 'value="merged" checked' in html


def test_the_segment_page_offers_its_filter_as_fields_and_the_delete_confirmation():
    html = render("segment.html", **segment_page())
    assert 'action="/app/segments/' + "s" * 32 + '"' in html
    assert 'name="version" value="3"' in html
    assert 'id="tags" name="tags" type="text" maxlength="1000" value="tract"' in html
    assert 'value="75011"' in html
    assert 'action="/app/segments/' + "s" * 32 + '/delete"' in html
    assert 'name="confirm" value="yes" required' in html
    assert "Je confirme la suppression définitive du segment « Tract &lt;i&gt; »" in html
    assert "filter_json" not in html


def test_a_refusal_is_shown_next_to_its_field():
    html = render(
        "segment.html",
        "en",
        **segment_page(errors=[("geo_values", "not a postcode: 999"), ("", "other problem")]),
    )
    assert 'aria-invalid="true" aria-describedby="geo_values-error geo-hint"' in html
    assert '<p class="field-error" id="geo_values-error">not a postcode: 999</p>' in html
    assert "other problem" in html  # the rest at the top


def test_a_filter_the_form_cannot_say_is_edited_as_json():
    odd = {**SEGMENT, "filter": {"op": "custom", "name": "taille", "cmp": "exists"}}
    html = render("segment.html", **segment_page(segment=odd, form=SegmentForm.of_segment(odd)))
    assert 'id="filter_json" name="filter_json"' in html and "&#34;taille&#34;" in html
    assert 'id="tags"' not in html


def test_after_a_stale_read_the_segment_page_says_so():
    html = render("segment.html", **segment_page(changed=True))
    assert "modifié par quelqu&#39;un d&#39;autre" in html


@pytest.mark.parametrize("role", ["viewer", "treasurer", "dpo"])
def test_roles_the_api_does_not_let_change_a_segment_see_no_form(role):
    html = render("segment.html", me={**SECRETARY, "role": role}, **segment_page())
    assert '<form method="post" action="/app/segments/' not in html
    assert "Contacts aujourd" in html  # the segment itself still shown


def test_an_import_that_made_or_flagged_contacts_links_to_the_review():
    job = {
        "id": "j" * 32,
        "status": "done",
        "federation_id": "paris",
        "created_at": NOW,
        "file": {"name": "fete.csv", "delimiter": ","},
        "progress": {"rows_done": 3, "total": 3},
        "counts": dict.fromkeys(
            ("created", "updated", "merged", "unchanged", "skipped", "rejected", "flagged"), 0
        ),
        "error": None,
    }
    page = {"rejected": None, "flagged": None, "running": False, "poll_seconds": 3}
    page.update(errors=[], notice=None, active="imports")
    quiet = render("import.html", job=job, **page)
    assert "/app/duplicates?" not in quiet  # nothing new: nothing to review
    merged = render("import.html", job={**job, "counts": {**job["counts"], "merged": 2}}, **page)
    assert 'href="/app/duplicates?federation_id=paris"' in merged
    assert "Examiner les doublons probables" in merged
