"""The full contact (emails, phones, postal address, areas, birth year), custom fields,
sorted page cursors and the CSV export's cells: pure rules."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest
from contacts.custom_fields import (
    CustomFieldDefinition,
    CustomFieldType,
    check_definition,
    check_filter_node,
    normalise_custom_fields,
)
from contacts.domain import (
    Contact,
    ContactFields,
    ContactRules,
    InvalidFields,
    SortOrder,
    decode_page_cursor,
    encode_cursor,
    encode_page_cursor,
    normalise_contact,
    parse_sort,
    phone_kind,
)
from contacts.export_csv import BOM, encode_rows, header, neutralise, row
from contacts.filter_language import parse_filter
from contacts.geography import department_of_insee, department_of_postcode
from tribune_shared.events.contracts import (
    ContactAddress,
    ContactEmail,
    ContactPhone,
    DataOrigin,
    OriginKind,
)
from tribune_shared.store import ancestor_paths

FR = ContactRules(region="FR")
TODAY = date(2026, 3, 14)


def normalised(**fields) -> ContactFields:
    return normalise_contact(ContactFields(family_name="Dupont", **fields), FR, TODAY)


def problems(**fields) -> dict[str, str]:
    with pytest.raises(InvalidFields) as caught:
        normalised(**fields)
    return {d["field"]: d["reason"] for d in caught.value.body()["detail"]}


# ---------------------------------------------------------------- emails and phones


def test_emails_have_exactly_one_primary() -> None:
    result = normalised(
        emails=(
            ContactEmail(address="perso@Example.ORG"),
            ContactEmail(address="Travail@Mairie.FR", primary=True),
        )
    )
    assert result.emails == (
        ContactEmail(address="perso@example.org", primary=False),
        ContactEmail(address="Travail@mairie.fr", primary=True),
    )
    assert result.email == "Travail@mairie.fr"  # the mirror is the primary
    # none marked: the first one is the primary
    first = normalised(
        emails=(ContactEmail(address="a@example.org"), ContactEmail(address="b@x.fr"))
    )
    assert [e.primary for e in first.emails] == [True, False]
    two = (
        ContactEmail(address="a@x.fr", primary=True),
        ContactEmail(address="b@x.fr", primary=True),
    )
    assert problems(emails=two) == {"emails": "exactly one address may be primary"}


def test_email_problems_name_the_entry() -> None:
    found = problems(
        emails=(
            ContactEmail(address="ok@example.org"),
            ContactEmail(address="nope@"),
            ContactEmail(address=" ok@EXAMPLE.org"),
        )
    )
    assert "not a valid email address" in found["emails.1.address"]
    assert found["emails.2.address"] == "listed twice"
    assert problems(email="a@x.fr", emails=()) == {"email": "give either email or emails, not both"}
    many = tuple(ContactEmail(address=f"p{i}@x.fr") for i in range(11))
    assert problems(emails=many) == {"emails": "at most 10 addresses"}


def test_phones_are_e164_with_their_kind() -> None:
    result = normalised(
        phones=(ContactPhone(number="06 12 34 56 78"), ContactPhone(number="01 42 76 40 40"))
    )
    assert result.phones == (
        ContactPhone(number="+33612345678", kind="mobile"),
        ContactPhone(number="+33142764040", kind="landline"),
    )
    assert result.phone == "+33612345678"
    found = problems(
        phones=(ContactPhone(number="+33 6 12 34 56 78"), ContactPhone(number="0612345678"))
    )
    assert found == {"phones.1.number": "listed twice"}
    assert (
        "not a valid phone number"
        in problems(phones=(ContactPhone(number="06 12"),))["phones.0.number"]
    )


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("+33612345678", "mobile"),
        ("+33781234567", "mobile"),
        ("+33142764040", "landline"),
        ("+33800123456", "other"),  # toll-free
        ("+16502530000", "mobile"),  # NANP: fixed line or mobile, cannot tell
        ("+442079460018", "landline"),
    ],
)
def test_phone_kind(number: str, kind: str) -> None:
    assert phone_kind(number) == kind


# ---------------------------------------------------------------- address and areas


def test_department_is_derived_from_the_insee_code_or_the_postcode() -> None:
    by_insee = normalised(address=ContactAddress(postcode="20000", commune_insee="2a004"))
    assert by_insee.address == ContactAddress(
        postcode="20000", commune_insee="2A004", department="2A"
    )
    by_postcode = normalised(address=ContactAddress(postcode="97400", commune="Saint-Denis"))
    assert by_postcode.address.department == "974"
    given = normalised(address=ContactAddress(department="1", lines=[" 3  rue X ", " "]))
    assert given.address == ContactAddress(lines=["3 rue X"], department="01")
    assert normalised(address=ContactAddress(lines=["  "])).address is None


@pytest.mark.parametrize(
    ("postcode", "department"),
    [
        ("75011", "75"),
        ("01000", "01"),
        ("20090", "2A"),
        ("20200", "2B"),
        ("97110", "971"),
        ("97500", None),  # Saint-Pierre-et-Miquelon is not a department
        ("98000", None),  # Monaco
        ("00100", None),
    ],
)
def test_department_of_postcode(postcode: str, department: str | None) -> None:
    assert department_of_postcode(postcode) == department


def test_department_of_insee() -> None:
    assert department_of_insee("75056") == "75"
    assert department_of_insee("2B033") == "2B"
    assert department_of_insee("97611") == "976"
    assert department_of_insee("97701") is None


def test_address_problems() -> None:
    found = problems(
        address=ContactAddress(
            postcode="7501", commune_insee="20004", department="20", lines=["a\x00"]
        )
    )
    assert found["address.postcode"] == "a French postcode is 5 digits"
    assert "INSEE" in found["address.commune_insee"]
    assert "department" in found["address.department"]
    assert "control characters" in found["address.lines.0"]
    mismatch = problems(address=ContactAddress(commune_insee="69123", department="75"))
    assert mismatch == {"address.department": "does not match the commune's INSEE code (69)"}
    # the postcode of the first API is the address's; not both
    assert problems(postcode="75011", address=ContactAddress(postcode="75012")) == {
        "postcode": "give the postcode in address or alone, not both"
    }
    merged = normalised(postcode="75011", address=ContactAddress(commune="Paris"))
    assert merged.address == ContactAddress(postcode="75011", commune="Paris", department="75")


def test_areas_and_birth_year() -> None:
    result = normalised(constituency=" 75-07 ", polling_station="paris  0701", birth_year=1984)
    assert (result.constituency, result.polling_station) == ("75-07", "PARIS 0701")
    assert result.birth_year == 1984
    assert problems(birth_year=1899) == {"birth_year": "must be between 1900 and 2026"}
    assert problems(birth_year=2027) == {"birth_year": "must be between 1900 and 2026"}
    assert "at most 32" in problems(constituency="x" * 33)["constituency"]


def test_every_problem_of_the_full_contact_at_once() -> None:
    found = problems(
        emails=(ContactEmail(address="bad"),),
        phones=(ContactPhone(number="x"),),
        address=ContactAddress(commune_insee="1"),
        birth_year=1,
        tags=("",),
    )
    assert set(found) == {
        "emails.0.address",
        "phones.0.number",
        "address.commune_insee",
        "birth_year",
        "tags",
    }


# ---------------------------------------------------------------- custom fields


def definition(name: str, type_: str, *, choices=(), required=False) -> CustomFieldDefinition:
    return CustomFieldDefinition(
        id="d" * 32,
        federation_id="paris",
        federation_path="/root/paris/",
        name=name,
        label=name,
        type=CustomFieldType(type_),
        choices=list(choices),
        required=required,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        created_by="u",
    )


DEFINITIONS = {
    "quartier": definition("quartier", "text"),
    "cotisation": definition("cotisation", "number"),
    "adhesion": definition("adhesion", "date"),
    "mandat": definition("mandat", "choice", choices=["Maire", "Adjoint"], required=True),
}


def test_custom_values_are_typed_and_normalised() -> None:
    values, found = normalise_custom_fields(
        {
            "quartier": "  Belle  ville ",
            "cotisation": "1 234,50",
            "adhesion": "05/03/2019",
            "mandat": "maire",
        },
        DEFINITIONS,
        max_text=100,
    )
    assert found == []
    assert values == {
        "quartier": "Belle ville",
        "cotisation": 1234.5,
        "adhesion": "2019-03-05",
        "mandat": "Maire",
    }
    values, _ = normalise_custom_fields(
        {"cotisation": 30.0, "mandat": "Adjoint"}, DEFINITIONS, max_text=9
    )
    assert values["cotisation"] == 30 and isinstance(values["cotisation"], int)


def test_unknown_ill_typed_and_missing_required_custom_values() -> None:
    _, found = normalise_custom_fields(
        {
            "inconnu": 1,
            "cotisation": "beaucoup",
            "adhesion": "2019-02-30",
            "quartier": 12,
        },
        DEFINITIONS,
        max_text=100,
    )
    assert dict(found) == {
        "custom_fields.inconnu": "unknown custom field",
        "custom_fields.cotisation": "must be a number",
        "custom_fields.adhesion": "must be a date (YYYY-MM-DD or DD/MM/YYYY)",
        "custom_fields.quartier": "must be a string",
        "custom_fields.mandat": "required",
    }
    _, found = normalise_custom_fields({"mandat": "Préfet"}, DEFINITIONS, max_text=100)
    assert dict(found) == {"custom_fields.mandat": "must be one of Maire, Adjoint"}
    _, found = normalise_custom_fields(
        {"cotisation": True}, DEFINITIONS, max_text=100, required=False
    )
    assert dict(found) == {"custom_fields.cotisation": "must be a number"}


def test_definition_rules() -> None:
    choices, found = check_definition(
        "mandat", CustomFieldType.choice, [" Maire ", "Adjoint"], max_choices=5, max_text=50
    )
    assert (choices, found) == (["Maire", "Adjoint"], [])
    _, found = check_definition("Bad Name", CustomFieldType.text, ["x"], max_choices=5, max_text=50)
    assert {f for f, _ in found} == {"name", "choices"}
    _, found = check_definition("c", CustomFieldType.choice, [], max_choices=5, max_text=50)
    assert found == [("choices", "a choice field needs at least one choice")]
    _, found = check_definition(
        "c", CustomFieldType.choice, ["a", "a "], max_choices=5, max_text=50
    )
    assert found == [("choices.1", "listed twice")]


def test_a_child_sees_its_ancestors_definitions() -> None:
    assert ancestor_paths("/root/paris/p11/") == ["/root/", "/root/paris/", "/root/paris/p11/"]


def test_filter_values_are_checked_against_the_definitions() -> None:
    def check(raw: dict) -> list[tuple[str, str]]:
        node = parse_filter({"op": "custom", **raw})
        return check_filter_node("filter", node, DEFINITIONS)

    assert check({"name": "cotisation", "cmp": "gt", "value": 10}) == []
    assert check({"name": "adhesion", "cmp": "lt", "value": "2020-01-01"}) == []
    assert check({"name": "mandat", "cmp": "in", "value": ["Maire"]}) == []
    assert check({"name": "nope", "cmp": "exists"}) == [
        ("filter.name", "unknown custom field 'nope'")
    ]
    assert check({"name": "cotisation", "cmp": "gt", "value": "10"})[0][0] == "filter.value"
    assert "YYYY-MM-DD" in check({"name": "adhesion", "cmp": "lt", "value": "01/01/2020"})[0][1]
    assert "not one of" in check({"name": "mandat", "cmp": "eq", "value": "maire"})[0][1]


# ---------------------------------------------------------------- sorted pages


def test_sort_orders() -> None:
    assert parse_sort(None) == SortOrder("id", False)
    assert parse_sort("-updated_at") == SortOrder("updated_at", True)
    assert parse_sort("family_name").field == "search.family"
    with pytest.raises(InvalidFields) as caught:
        parse_sort("email")
    assert caught.value.body()["detail"][0]["field"] == "sort"


def test_a_sorted_cursor_carries_the_key_and_the_id() -> None:
    order = SortOrder("created_at", True)
    at = datetime(2026, 3, 14, 9, 30, 0, 250000, tzinfo=UTC)
    cursor = encode_page_cursor(order, at, "a" * 32)
    assert decode_page_cursor(cursor, order) == (at, "a" * 32)
    by_name = encode_page_cursor(SortOrder("family_name"), "lefevre", "b" * 32)
    assert decode_page_cursor(by_name, SortOrder("family_name")) == ("lefevre", "b" * 32)
    # the id order keeps the cursors of the first API
    assert encode_page_cursor(SortOrder(), "c" * 32, "c" * 32) == encode_cursor("c" * 32)
    for other in (SortOrder("created_at"), SortOrder("family_name", True)):
        with pytest.raises(InvalidFields) as caught:
            decode_page_cursor(cursor, other)
        assert caught.value.body()["detail"][0] == {
            "field": "cursor",
            "reason": "made for another sort order (-created_at)",
        }
    with pytest.raises(InvalidFields):
        decode_page_cursor(encode_cursor("a" * 32), order)


# ---------------------------------------------------------------- CSV export


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+33612345678", "'+33612345678"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Dupont", "Dupont"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralised(cell: str, safe: str) -> None:
    assert neutralise(cell) == safe


def test_a_row_per_contact() -> None:
    contact = Contact(
        id="e" * 32,
        federation_id="paris",
        federation_path="/root/paris/",
        version=2,
        given_name="=cmd|' /C calc'!A0",
        family_name='Dupont; "Jr"\nII',
        emails=[ContactEmail(address="a@x.fr"), ContactEmail(address="b@x.fr", primary=True)],
        phones=[ContactPhone(number="+33612345678", kind="mobile")],
        address=ContactAddress(lines=["1 rue A", "Bât. B"], postcode="75011", department="75"),
        tags=["bénévole", "tractage"],
        custom_fields={"cotisation": 30, "quartier": "Roquette"},
        origin=DataOrigin(kind=OriginKind.petition, detail="gare", collected_on=date(2026, 1, 2)),
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        updated_at=datetime(2026, 1, 3, tzinfo=UTC),
        created_by="u",
    )
    names = ["cotisation", "absent", "quartier"]
    text = BOM + encode_rows([header(names), row(contact, names)], ";")
    assert text.startswith("\ufeffid;federation_id;given_name")
    parsed = list(csv.DictReader(io.StringIO(text.removeprefix(BOM)), delimiter=";"))
    assert len(parsed) == 1
    got = parsed[0]
    assert got["given_name"] == "'=cmd|' /C calc'!A0"
    assert got["family_name"] == 'Dupont; "Jr"\nII'  # quoted, round-trips
    assert (got["email"], got["other_emails"]) == ("b@x.fr", "a@x.fr")
    assert (got["phone"], got["other_phones"]) == ("'+33612345678", "")
    assert got["address_lines"] == "1 rue A | Bât. B"
    assert (got["postcode"], got["department"], got["commune"]) == ("75011", "75", "")
    assert got["tags"] == "bénévole | tractage"
    assert (got["custom.cotisation"], got["custom.absent"], got["custom.quartier"]) == (
        "30",
        "",
        "Roquette",
    )
    assert (got["origin_kind"], got["origin_collected_on"]) == ("petition", "2026-01-02")
    assert text.count("\r\n") == 2 + 0  # CRLF line ends (the one inside the name is \n)
