"""Search terms, page cursors and the stored shape of a contact (pure functions)."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

import pytest
from contacts.domain import (
    Contact,
    InvalidFields,
    decode_cursor,
    encode_cursor,
    fold,
    new_contact_id,
    phone_prefix,
    search_terms,
)
from contacts.settings import ContactsSettings
from contacts.store import from_document, search_filter, to_document
from pydantic import ValidationError
from tribune_shared.events.contracts import (
    ContactAddress,
    ContactEmail,
    ContactPhone,
    DataOrigin,
    OriginKind,
)

# ---------------------------------------------------------------- cursors


def test_cursor_round_trips_and_is_opaque() -> None:
    contact_id = new_contact_id()
    cursor = encode_cursor(contact_id)
    assert contact_id not in cursor
    assert decode_cursor(cursor) == contact_id


def test_contact_ids_are_uuid4_hex() -> None:
    ids = {new_contact_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        base64.urlsafe_b64encode(b"c1:not-an-id").decode(),
        base64.urlsafe_b64encode(b"c2:" + b"a" * 32).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "a" * 32,
    ],
)
def test_a_cursor_we_did_not_make_is_refused_on_the_cursor_field(cursor: str) -> None:
    with pytest.raises(InvalidFields) as caught:
        decode_cursor(cursor)
    assert caught.value.body()["detail"][0]["field"] == "cursor"


# ---------------------------------------------------------------- search


def test_fold_ignores_case_and_accents() -> None:
    assert fold("Éloïse LEFÈVRE") == "eloise lefevre"
    assert fold("Straße") == "strasse"


@pytest.mark.parametrize(
    ("query", "prefix"),
    [
        ("06 12", "+33612"),
        ("0612345678", "+33612345678"),
        ("0033 6 12", "+33612"),
        ("+33 6", "+336"),
        ("+44 20", "+4420"),
        ("06.12-34", "+3361234"),
    ],
)
def test_a_partly_typed_phone_becomes_an_e164_prefix(query: str, prefix: str) -> None:
    assert phone_prefix(query, "FR") == prefix


@pytest.mark.parametrize("query", ["dupont", "0", "612", "06 12 ab", "jean@example.org"])
def test_queries_that_are_not_a_phone_start_have_no_phone_prefix(query: str) -> None:
    assert phone_prefix(query, "FR") is None


def test_search_terms() -> None:
    terms = search_terms("  Jean   DUPONT ", "FR", max_words=5)
    assert terms.name_words == ("jean", "dupont")
    assert terms.email_prefix == "jean dupont"
    assert terms.phone_prefix is None
    assert search_terms("06 12", "FR", 5).phone_prefix == "+33612"


def test_search_terms_refuse_blank_and_too_many_words() -> None:
    for query, max_words in [("   ", 5), ("a b c", 2)]:
        with pytest.raises(InvalidFields) as caught:
            search_terms(query, "FR", max_words)
        assert caught.value.body()["detail"][0]["field"] == "q"


def test_search_filter_escapes_regex_characters() -> None:
    flt = search_filter(search_terms("a.b*(", "FR", 5))
    email_clause = flt["$or"][1]
    assert email_clause == {"search.emails": {"$regex": r"^a\.b\*\("}}


# ---------------------------------------------------------------- stored shape


def _contact(**changes) -> Contact:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = dict(
        id=new_contact_id(),
        federation_id="paris",
        federation_path="/root/paris/",
        version=1,
        given_name="Éloïse",
        family_name="Martin",
        email="Eloise@example.org",
        phone=None,
        postcode=None,
        tags=["lyon"],
        origin=DataOrigin(kind=OriginKind.petition, detail="p-42", collected_on=date(2026, 1, 1)),
        created_at=now,
        updated_at=now,
        created_by="u1",
    )
    values.update(changes)
    return Contact(**values)


def test_stored_document_omits_absent_email_and_phone_and_round_trips() -> None:
    contact = _contact()
    doc = to_document(contact)
    assert doc["_id"] == contact.id
    assert "phone" not in doc and "postcode" not in doc and doc["email"] == "Eloise@example.org"
    assert doc["emails"] == [{"address": "Eloise@example.org", "primary": True}]
    assert doc["phones"] == [] and "address" not in doc and "birth_year" not in doc
    assert doc["origin"] == {"kind": "petition", "detail": "p-42", "collected_on": "2026-01-01"}
    assert doc["search"] == {
        "given": "eloise",
        "family": "martin",
        "emails": ["eloise@example.org"],
    }
    assert from_document(doc) == contact


def test_a_document_stored_before_the_full_contact_reads_as_one() -> None:
    """Documents of the first API had single email/phone/postcode fields."""
    contact = _contact()
    doc = {
        k: v for k, v in to_document(contact).items() if k not in ("emails", "phones", "address")
    }
    doc.update(phone="+33612345678", postcode="75011")
    read = from_document(doc)
    assert read.emails == [ContactEmail(address="Eloise@example.org", primary=True)]
    assert read.phones == [ContactPhone(number="+33612345678", kind="mobile")]
    assert read.address == ContactAddress(postcode="75011")
    assert (read.email, read.phone, read.postcode) == (
        "Eloise@example.org",
        "+33612345678",
        "75011",
    )


def test_event_state_carries_the_personal_data() -> None:
    state = _contact(phone="+33612345678").state()
    assert (state.email, state.phone) == ("Eloise@example.org", "+33612345678")
    assert state.tags == ["lyon"]
    assert state.origin is not None and state.origin.kind is OriginKind.petition


# ---------------------------------------------------------------- settings


def test_default_region_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIBUNE_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("CONTACTS_DEFAULT_REGION", raising=False)
    assert ContactsSettings().default_region == "FR"
    monkeypatch.setenv("CONTACTS_DEFAULT_REGION", "be")
    assert ContactsSettings().default_region == "BE"
    monkeypatch.setenv("CONTACTS_DEFAULT_REGION", "XX")
    with pytest.raises(ValidationError, match="unknown region"):
        ContactsSettings()


def test_default_page_size_cannot_exceed_the_maximum() -> None:
    assert ContactsSettings().default_page_size == 50
    with pytest.raises(ValidationError, match="default_page_size"):
        ContactsSettings(default_page_size=300, max_page_size=200)
