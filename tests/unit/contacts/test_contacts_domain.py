"""Contact rules: normalisation of what people type and the validation they get back."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from contacts.domain import (
    ContactFields,
    ContactRules,
    InvalidFields,
    check_origin,
    normalise_contact,
    normalise_email,
    normalise_phone,
    normalise_postcode,
    normalise_tags,
)
from tribune_shared.events.contracts import (
    ContactAddress,
    ContactEmail,
    ContactPhone,
    DataOrigin,
    OriginKind,
)

FR = ContactRules(region="FR")


def problems(raw: ContactFields, rules: ContactRules = FR) -> dict[str, str]:
    with pytest.raises(InvalidFields) as caught:
        normalise_contact(raw, rules)
    body = caught.value.body()
    assert body["error"] == "validation_error"
    return {d["field"]: d["reason"] for d in body["detail"]}


# ---------------------------------------------------------------- email


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("jean.dupont@example.org", "jean.dupont@example.org"),
        ("  Jean.Dupont@EXAMPLE.Org  ", "Jean.Dupont@example.org"),
        ("marie@Bücher.Example", "marie@bücher.example"),
    ],
)
def test_email_is_trimmed_and_its_domain_lowercased(typed: str, stored: str) -> None:
    assert normalise_email(typed) == stored


@pytest.mark.parametrize(
    "typed",
    ["jean.dupont", "jean@", "@example.org", "jean dupont@example.org", "a@b", "x@localhost"],
)
def test_malformed_email_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalise_email(typed)


def test_bad_email_is_reported_on_the_email_field() -> None:
    found = problems(ContactFields(family_name="Dupont", email="jean.dupont@"))
    assert list(found) == ["email"]
    assert "not a valid email address" in found["email"]


# ---------------------------------------------------------------- phone


@pytest.mark.parametrize(
    "typed",
    [
        "06 12 34 56 78",
        "0612345678",
        "06.12.34.56.78",
        "06-12-34-56-78",
        "+33 6 12 34 56 78",
        "+33612345678",
        "0033 6 12 34 56 78",
        "+33 (0)6 12 34 56 78",
    ],
)
def test_french_phone_formats_become_e164(typed: str) -> None:
    assert normalise_phone(typed, "FR") == "+33612345678"


def test_french_landline_and_foreign_numbers() -> None:
    assert normalise_phone("01 23 45 67 89", "FR") == "+33123456789"
    assert normalise_phone("+1 650 253 0000", "FR") == "+16502530000"
    assert normalise_phone("+44 20 7946 0018", "FR") == "+442079460018"


def test_default_region_reads_national_numbers() -> None:
    assert normalise_phone("020 7946 0018", "GB") == "+442079460018"
    with pytest.raises(ValueError, match="read as FR"):
        normalise_phone("020 7946 0018", "FR")


@pytest.mark.parametrize("typed", ["06 12 34 56", "12", "call me", "06 12 34 56 78 90 12", "+"])
def test_invalid_phone_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="phone number"):
        normalise_phone(typed, "FR")


def test_bad_phone_is_reported_on_the_phone_field() -> None:
    assert list(problems(ContactFields(family_name="Dupont", phone="06 12"))) == ["phone"]


# ---------------------------------------------------------------- names, postcode, tags


def test_names_are_trimmed_and_inner_spaces_collapsed() -> None:
    result = normalise_contact(
        ContactFields(given_name="  Jean   Pierre ", family_name="\tDe  la Tour\n"), FR
    )
    assert (result.given_name, result.family_name) == ("Jean Pierre", "De la Tour")


def test_name_longer_than_the_limit_is_refused() -> None:
    rules = ContactRules(max_name_length=10)
    assert normalise_contact(ContactFields(family_name="x" * 10), rules).family_name == "x" * 10
    found = problems(ContactFields(family_name="x" * 11), rules)
    assert found == {"family_name": "must be at most 10 characters"}
    # the limit applies after trimming
    assert normalise_contact(ContactFields(family_name=f"  {'x' * 10}  "), rules).family_name


def test_name_with_control_characters_is_refused() -> None:
    assert "given_name" in problems(ContactFields(given_name="Jean\x00", family_name="Dupont"))


def test_french_postcode_is_five_digits() -> None:
    assert normalise_postcode(" 75011 ", "FR") == "75011"
    for bad in ["7501", "750111", "75O11", "2A004"]:
        with pytest.raises(ValueError, match="5 digits"):
            normalise_postcode(bad, "FR")
    found = problems(ContactFields(family_name="Dupont", postcode="7501"))
    assert found == {"postcode": "a French postcode is 5 digits"}


def test_postcode_of_another_region_uses_a_generic_rule() -> None:
    assert normalise_postcode("sw1a 1aa", "GB") == "SW1A 1AA"
    with pytest.raises(ValueError):
        normalise_postcode("!", "GB")


def test_tags_are_normalised_and_deduplicated_in_order() -> None:
    typed = [" Bénévole", "tractage", "bénévole ", "TRACTAGE", "porte  à porte"]
    assert normalise_tags(typed, FR) == ("bénévole", "tractage", "porte à porte")


def test_tag_rules() -> None:
    rules = ContactRules(max_tags=2, max_tag_length=5)
    assert normalise_tags(["a", "A", "b"], rules) == ("a", "b")  # duplicates do not count
    with pytest.raises(ValueError, match="at most 2 distinct tags"):
        normalise_tags(["a", "b", "c"], rules)
    with pytest.raises(ValueError, match="at most 5 characters"):
        normalise_tags(["toolong"], rules)
    with pytest.raises(ValueError, match="must not be empty"):
        normalise_tags(["ok", "   "], rules)
    assert "tags" in problems(ContactFields(family_name="Dupont", tags=("",)))


# ---------------------------------------------------------------- the whole contact


def test_a_contact_needs_an_email_a_phone_or_a_family_name() -> None:
    assert problems(ContactFields(given_name="Jean")) == {
        "contact": "at least one of email, phone or family_name is required"
    }
    # blanks count as absent
    assert "contact" in problems(ContactFields(given_name="Jean", email="  ", phone=""))
    assert normalise_contact(ContactFields(email="a@example.org"), FR).email == "a@example.org"
    assert normalise_contact(ContactFields(phone="0612345678"), FR).phone == "+33612345678"
    assert normalise_contact(ContactFields(family_name="Dupont"), FR).family_name == "Dupont"


def test_blank_optional_values_are_stored_as_absent() -> None:
    result = normalise_contact(
        ContactFields(family_name="Dupont", email=" ", phone="  ", postcode=""), FR
    )
    assert (result.email, result.phone, result.postcode) == (None, None, None)


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        ContactFields(family_name="Dupont", email="nope", phone="12", postcode="1", tags=("",))
    )
    assert set(found) == {"email", "phone", "postcode", "tags"}


def test_a_full_contact_is_normalised() -> None:
    result = normalise_contact(
        ContactFields(
            given_name=" Éloïse ",
            family_name=" Martin ",
            email="Eloise.Martin@Example.ORG",
            phone="0033 6 12 34 56 78",
            postcode="69001",
            tags=("Lyon", "lyon", "adhérente"),
        ),
        FR,
    )
    # The single values of the first API become the lists and the address; the single
    # fields mirror the primary email, the first phone and the postcode.
    assert result == ContactFields(
        given_name="Éloïse",
        family_name="Martin",
        email="Eloise.Martin@example.org",
        phone="+33612345678",
        postcode="69001",
        tags=("lyon", "adhérente"),
        emails=(ContactEmail(address="Eloise.Martin@example.org", primary=True),),
        phones=(ContactPhone(number="+33612345678", kind="mobile"),),
        address=ContactAddress(postcode="69001", department="69"),
    )


def test_origin_collected_in_the_future_is_refused() -> None:
    today = date(2026, 3, 1)
    check_origin(DataOrigin(kind=OriginKind.petition, collected_on=today), today)
    check_origin(DataOrigin(kind=OriginKind.manual), today)
    with pytest.raises(InvalidFields) as caught:
        check_origin(
            DataOrigin(kind=OriginKind.petition, collected_on=today + timedelta(days=1)), today
        )
    assert caught.value.body()["detail"] == [
        {"field": "origin.collected_on", "reason": "must not be in the future"}
    ]
