"""Applying form submissions to people, without I/O: reading the answers with the
contact rules, matching by email or phone (in the store and within the batch), the merge
rule (fill what is empty, add addresses and tags, never blank or overwrite), counting a
person once per form, and the list's cursor."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from contacts.custom_fields import CustomFieldDefinition
from contacts.domain import Contact, ContactRules, decode_time_cursor, encode_time_cursor
from contacts.submissions.domain import (
    Rejected,
    Submission,
    materialise,
    plan_batch,
    read_submission,
    submission_view,
)
from tribune_shared.errors import InvalidFields
from tribune_shared.events.contracts import ContactEmail, ContactPhone, DataOrigin, OriginKind

RULES = ContactRules()
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
FED = ("paris", "/root/paris/")


def doc(sid: str = "s1", form_id: str = "f1", **answers) -> dict:
    return {
        "_id": sid,
        "form_id": form_id,
        "form_kind": "petition",
        "federation_id": FED[0],
        "federation_path": FED[1],
        "status": "queued",
        "answers": answers,
        "consents": [
            {"channel": "email", "purpose": "news", "text_version": "v1", "text_sha256": "ab"}
        ],
        "proof": {"submitted_at": "2026-12-03T08:59:59Z", "ip": "203.0.113.0/24"},
        "form": {"kind": "petition", "title": "Écoles", "tags": ["Écoles"], "reference": "PET-26"},
        "received_at": NOW,
    }


def sub(sid: str = "s1", form_id: str = "f1", **answers) -> Submission:
    read = read_submission(doc(sid, form_id, **answers), RULES, {}, max_custom_text=500)
    assert isinstance(read, Submission), read
    return read


def operator_contact(**overrides) -> Contact:
    values = {
        "id": "c" * 32,
        "federation_id": FED[0],
        "federation_path": FED[1],
        "version": 3,
        "given_name": "Jeanne",
        "family_name": "Durand",
        "emails": [ContactEmail(address="jeanne@example.org", primary=True)],
        "phones": [ContactPhone(number="+33612345678", kind="mobile")],
        "tags": ["militante"],
        "custom_fields": {"quartier": "Nord"},
        "origin": DataOrigin(kind=OriginKind.manual, detail="permanence"),
        "created_at": NOW,
        "updated_at": NOW,
        "created_by": "u1",
    }
    return Contact.model_validate({**values, **overrides})


def definition(name: str, kind: str) -> CustomFieldDefinition:
    return CustomFieldDefinition(
        id=name,
        federation_id=FED[0],
        federation_path=FED[1],
        name=name,
        label=name,
        type=kind,
        choices=[],
        required=True,  # required for operators; a form's person is never forced
        created_at=NOW,
        created_by="u1",
    )


def ids():
    counter = itertools.count(1)
    return lambda: f"{next(counter):032x}"


def test_answers_are_read_with_the_contact_rules_and_the_form_adds_its_tags_and_reference():
    s = sub(given_name="  Ana ", email="Ana@EXAMPLE.org", phone="06 12 34 56 78", postcode="75011")
    assert s.fields.given_name == "Ana"
    assert s.fields.email == "Ana@example.org"
    assert [p.number for p in s.fields.phones or ()] == ["+33612345678"]
    assert s.fields.address is not None and s.fields.address.department == "75"
    assert s.fields.tags == ("écoles", "pet-26")
    assert s.keys == ["Ana@example.org", "+33612345678"]
    assert s.submitted_at == datetime(2026, 12, 3, 8, 59, 59, tzinfo=UTC)


def test_answers_that_break_the_contact_rules_reject_the_submission_with_the_reason():
    read = read_submission(doc(email="not an email"), RULES, {}, max_custom_text=500)
    assert isinstance(read, Rejected)
    assert read.reason.startswith("email:")


def test_custom_answers_reach_the_person_only_for_fields_the_federation_defines():
    definitions = {
        "quartier": definition("quartier", "text"),
        "age": definition("age", "number"),
    }
    answers = {"email": "a@example.org", "custom": {"quartier": " Sud ", "age": "old", "x": 1}}
    read = read_submission(doc(**answers), RULES, definitions, max_custom_text=500)
    assert isinstance(read, Submission)
    assert read.custom == {"quartier": "Sud"}  # "age" does not fit, "x" is not defined


def test_two_submissions_of_one_new_person_in_a_batch_make_one_contact_counted_once():
    first = sub("s1", email="ana@example.org", given_name="Ana")
    second = sub("s2", phone="0612345678", email="ana@example.org", family_name="Martin")
    plan = plan_batch([first, second], {}, {}, set(), RULES, ids())
    assert len(plan.targets) == 1
    [target] = plan.targets.values()
    assert (target.fields.given_name, target.fields.family_name) == ("Ana", "Martin")
    assert [p.number for p in target.fields.phones or ()] == ["+33612345678"]
    assert [(o.created, o.repeat) for o in plan.outcomes] == [(True, False), (False, True)]
    assert len(plan.signatures) == 1


def test_a_person_matched_by_phone_alone_in_the_batch_is_the_same_contact():
    first = sub("s1", phone="06 12 34 56 78", family_name="Martin")
    second = sub("s2", phone="+33 6 12 34 56 78", email="ana@example.org")
    plan = plan_batch([first, second], {}, {}, set(), RULES, ids())
    [target] = plan.targets.values()
    assert target.fields.email == "ana@example.org"
    assert {o.contact_id for o in plan.outcomes} == {target.contact_id}


def test_an_update_fills_what_is_empty_adds_addresses_and_never_overwrites_the_operator():
    stored = operator_contact(family_name="")
    key = (FED[0], "+33612345678")
    s = sub(
        given_name="Jeanne-Marie",  # the operator's given name stays
        family_name="Durand",  # empty on the contact: filled
        email="jeanne.perso@example.org",  # added, not replacing the primary
        phone="06 12 34 56 78",
    )
    plan = plan_batch([s], {key: stored.id}, {stored.id: stored}, set(), RULES, ids())
    [target] = plan.targets.values()
    assert target.fields.given_name == "Jeanne"
    assert target.fields.family_name == "Durand"
    assert [(e.address, e.primary) for e in target.fields.emails or ()] == [
        ("jeanne@example.org", True),
        ("jeanne.perso@example.org", False),
    ]
    assert target.fields.tags == ("militante", "écoles", "pet-26")
    written = materialise(plan, now=NOW, suppressed_keys=set())
    [(contact, changed, previous)] = written.updated
    assert previous == 3 and contact.version == 4 and written.versions[contact.id] == 4
    assert set(changed) >= {"family_name", "emails", "tags"}
    assert contact.origin.kind is OriginKind.manual  # the origin of a known person stays
    assert contact.custom_fields == {"quartier": "Nord"}
    assert contact.updated_by == "form:f1"


def test_blank_answers_never_blank_what_the_contact_has():
    stored = operator_contact()
    s = sub(email="jeanne@example.org", given_name="   ", family_name="")
    plan = plan_batch(
        [s], {(FED[0], "jeanne@example.org"): stored.id}, {stored.id: stored}, set(), RULES, ids()
    )
    [target] = plan.targets.values()
    assert (target.fields.given_name, target.fields.family_name) == ("Jeanne", "Durand")
    assert target.fields.phones == tuple(stored.phones)


def test_a_submission_that_adds_nothing_writes_no_new_version():
    stored = operator_contact(tags=["militante", "écoles", "pet-26"])
    s = sub(email="jeanne@example.org")
    plan = plan_batch(
        [s], {(FED[0], "jeanne@example.org"): stored.id}, {stored.id: stored}, set(), RULES, ids()
    )
    written = materialise(plan, now=NOW, suppressed_keys=set())
    assert written.updated == [] and written.created == []
    assert written.versions == {stored.id: 3}


def test_an_address_held_by_another_person_is_left_to_them():
    ana = operator_contact(id="a" * 32, emails=[ContactEmail(address="ana@example.org")], phones=[])
    bob = operator_contact(id="b" * 32, emails=[], phones=[ContactPhone(number="+33612345678")])
    holders = {(FED[0], "ana@example.org"): ana.id, (FED[0], "+33612345678"): bob.id}
    s = sub(email="ana@example.org", phone="0612345678")
    plan = plan_batch([s], holders, {ana.id: ana, bob.id: bob}, set(), RULES, ids())
    assert list(plan.targets) == [ana.id]  # matched on the email first
    assert plan.targets[ana.id].fields.phones == ()


def test_a_person_who_already_signed_is_a_repeat_and_not_counted_again():
    stored = operator_contact()
    s = sub(email="jeanne@example.org")
    holders = {(FED[0], "jeanne@example.org"): stored.id}
    plan = plan_batch([s], holders, {stored.id: stored}, {("f1", stored.id)}, RULES, ids())
    assert [(o.created, o.repeat) for o in plan.outcomes] == [(False, True)]
    assert plan.signatures == []
    # another form: counted there
    other = sub(email="jeanne@example.org", form_id="f2")
    plan = plan_batch([other], holders, {stored.id: stored}, {("f1", stored.id)}, RULES, ids())
    assert [(f, c) for f, c, _ in plan.signatures] == [("f2", stored.id)]


def test_a_new_person_gets_the_web_form_origin_and_a_suppressed_address_is_flagged():
    s = sub(email="ana@example.org", given_name="Ana")
    plan = plan_batch([s], {}, {}, set(), RULES, ids())
    written = materialise(plan, now=NOW, suppressed_keys={"ana@example.org"})
    [contact] = written.created
    assert contact.origin.kind is OriginKind.web_form
    assert contact.origin.detail == "form f1 (PET-26)"
    assert contact.origin.collected_on == NOW.date()
    assert contact.created_by == "form:f1" and contact.version == 1
    assert contact.suppressed is True


def test_the_same_address_in_two_federations_is_two_people():
    paris = sub("s1", email="ana@example.org")
    lyon_doc = doc("s2", email="ana@example.org") | {
        "federation_id": "lyon",
        "federation_path": "/root/lyon/",
    }
    lyon = read_submission(lyon_doc, RULES, {}, max_custom_text=500)
    assert isinstance(lyon, Submission)
    plan = plan_batch([paris, lyon], {}, {}, set(), RULES, ids())
    assert len(plan.targets) == 2
    assert all(o.created and not o.repeat for o in plan.outcomes)


def test_the_list_cursor_round_trips_and_a_forged_one_is_422():
    cursor = encode_time_cursor(NOW, "abc123")
    assert decode_time_cursor(cursor) == (NOW, "abc123")
    for bad in ("nope", encode_time_cursor(NOW, "x")[:-3]):
        with pytest.raises(InvalidFields) as caught:
            decode_time_cursor(bad)
        assert caught.value.field == "cursor"


def test_the_list_shows_the_person_the_boxes_and_the_times_but_not_the_answers():
    stored = doc() | {"status": "applied", "contact_id": "c1", "created": True, "repeat": False}
    view = submission_view(stored)
    assert view["contact_id"] == "c1" and view["created"] is True
    assert view["consents"] == [
        {"channel": "email", "purpose": "news", "text_version": "v1", "text_sha256": "ab"}
    ]
    assert view["submitted_at"] == "2026-12-03T08:59:59Z"
    assert "answers" not in view
