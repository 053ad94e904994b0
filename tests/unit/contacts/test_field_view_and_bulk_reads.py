"""What each role sees of a contact, and the bulk-read windows (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime

from contacts.bulk_reads import ReadLimits, trail_id, window_of
from contacts.domain import Contact, search_terms
from contacts.field_view import (
    HIDDEN_FIELDS,
    ContactView,
    hidden_filter_nodes,
    hidden_list_filters,
    view_of,
)
from contacts.store import search_filter
from support import make_identity
from tribune_shared.auth import Role
from tribune_shared.events.contracts import ContactAddress, ContactEmail, ContactPhone

DETAIL_ROLES = [Role.admin, Role.secretary, Role.treasurer, Role.campaign_manager, Role.dpo]
NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)


def contact() -> Contact:
    return Contact(
        id="a" * 32,
        federation_id="paris",
        federation_path="/root/paris/",
        version=3,
        given_name="Ana",
        family_name="Martin",
        emails=[ContactEmail(address="ana@example.org", primary=True)],
        phones=[ContactPhone(number="+33612345678")],
        address=ContactAddress(lines=["3 rue X"], postcode="75011", department="75"),
        constituency="75-07",
        polling_station="0701",
        birth_year=1984,
        tags=["bénévole"],
        custom_fields={"quartier": "Roquette"},
        origin={"kind": "petition"},
        created_at=NOW,
        updated_at=NOW,
        created_by="u1",
    )


def test_a_viewer_gets_names_federation_and_tags_and_is_told_what_is_hidden():
    view = view_of(contact(), make_identity("/root/paris/", Role.viewer), DETAIL_ROLES)
    dumped = view.model_dump(mode="json")
    assert (dumped["given_name"], dumped["family_name"], dumped["tags"]) == (
        "Ana",
        "Martin",
        ["bénévole"],
    )
    assert dumped["federation_path"] == "/root/paris/" and dumped["constituency"] == "75-07"
    for name, empty in HIDDEN_FIELDS.items():
        assert dumped[name] == empty, name
    assert dumped["hidden_fields"] == list(HIDDEN_FIELDS)
    assert "ana@example.org" not in view.model_dump_json()


def test_roles_with_details_get_the_contact_as_it_is_without_hidden_fields():
    full = contact()
    for role in DETAIL_ROLES:
        view = view_of(full, make_identity("/root/", role), DETAIL_ROLES)
        assert isinstance(view, ContactView)
        assert view.model_dump(mode="json") == full.model_dump(mode="json")
    # a role left out of the setting gets the restricted view
    narrowed = view_of(full, make_identity("/root/", Role.campaign_manager), [Role.admin])
    assert narrowed.hidden_fields and narrowed.emails == []


def test_filters_on_hidden_fields_are_found_wherever_they_are_nested():
    tree = {
        "op": "and",
        "of": [
            {"op": "tags", "match": "any", "tags": ["x"]},
            {"op": "geo", "field": "constituency", "values": ["75-07"]},
            {"op": "not", "filter": {"op": "geo", "field": "postcode", "values": ["75011"]}},
            {"op": "or", "of": [{"op": "has_email", "value": True}, {"op": "custom"}]},
        ],
    }
    assert sorted(hidden_filter_nodes(tree)) == [
        "filter.of.2.filter",
        "filter.of.3.of.0",
        "filter.of.3.of.1",
    ]
    assert list(hidden_filter_nodes({"op": "all"})) == []
    assert hidden_list_filters(
        {"postcode": ["75011"], "department": []},
        {"quartier": "x"},
        {"has_email": None, "has_phone": False},
    ) == ["postcode", "cf.quartier", "has_phone"]


def test_a_names_only_search_leaves_emails_and_phones_out():
    terms = search_terms("06 12", "FR", 5)
    assert "$or" in search_filter(terms)
    names_only = search_filter(terms, names_only=True)
    assert "search.emails" not in str(names_only) and "phones.number" not in str(names_only)


def test_windows_are_fixed_and_trail_ids_one_per_user_and_window():
    start, end = window_of(NOW, 3600)
    assert (start, end) == (
        datetime(2026, 3, 1, 10, tzinfo=UTC),
        datetime(2026, 3, 1, 11, tzinfo=UTC),
    )
    assert window_of(end, 3600)[0] == end
    a, b = trail_id("u1", start), trail_id("u2", start)
    assert a != b and len(a) == 32 and a[:12] == b[:12]
    assert trail_id("u1", end) > a  # later windows sort later, like export ids
    limits = ReadLimits(window_seconds=3600, max_pages=2, max_contacts=10)
    assert not limits.exceeded(2, 10)
    assert limits.exceeded(3, 0) and limits.exceeded(0, 11)
    # the trail is written when a total passes another limit's worth
    assert limits.steps(2, 10) == (0, 0)
    assert limits.steps(3, 11) == (1, 1)
    assert limits.steps(5, 21) == (1, 1) and limits.steps(6, 22) == (2, 2)
