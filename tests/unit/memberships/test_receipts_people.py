"""The people projection receipts read: newer versions only, erased people forgotten."""

from __future__ import annotations

from unittest.mock import patch

from memberships.people.domain import identity_from_doc, identity_state
from tribune_shared.contact_directory import ERASED_VERSION
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactAddress, ContactCreatedV1, ContactState


def _event(**contact):
    return new_envelope(
        ContactCreatedV1(contact_id="c1", contact_version=3, contact=ContactState(**contact)),
        producer="contacts",
        federation_id="paris",
        federation_path="/root/paris/",
    )


def test_the_projection_keeps_the_name_and_the_postal_address():
    state = identity_state(
        _event(
            given_name="Ada",
            family_name="Lovelace",
            address=ContactAddress(lines=["1 rue X"], postcode="75011", commune="Paris"),
        )
    )
    assert state.version == 3
    person = identity_from_doc({"_id": state.doc_id, **state.fields})
    assert person.full_name == "Ada Lovelace"
    assert person.address_lines == ("1 rue X",) and person.commune == "Paris"
    assert person.complete
    assert person.federation_path == "/root/paris/"


def test_a_contact_without_an_address_is_not_complete_for_a_receipt():
    state = identity_state(_event(given_name="Ada", family_name="Lovelace", postcode="75011"))
    person = identity_from_doc({"_id": state.doc_id, **state.fields})
    assert person.postcode == "75011"
    assert not person.complete


def test_an_erased_persons_event_is_a_tombstone():
    envelope = _event(given_name="Ada")
    erased = ContactCreatedV1(contact_id="c1", contact_version=3, contact=ContactState())
    object.__setattr__(erased, "_erased_fields", frozenset({"contact.given_name"}))
    with patch("memberships.people.domain.decode_as", return_value=erased):
        state = identity_state(envelope)
    assert state.version == ERASED_VERSION and state.replace
    assert state.fields == {"erased": True}
