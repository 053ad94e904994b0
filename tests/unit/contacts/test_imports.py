"""CSV import rules (pure): encodings, delimiters, French/English headers and overrides,
quoted line breaks, empty lines, per-row errors, folding duplicates, the rejected-rows
CSV and the messy-CSV generator."""

from __future__ import annotations

import csv
import io

import pytest
from contacts.custom_fields import CustomFieldDefinition, CustomFieldType
from contacts.domain import ContactRules, InvalidFields
from contacts.imports import (
    DuplicateRule,
    EncodingDetector,
    ImportRules,
    ParsedRow,
    RawRow,
    ReadLimits,
    RejectedRow,
    check_import_origin,
    check_mapping_usable,
    data_signature,
    decode_sample,
    detect_delimiter,
    detect_encoding,
    encode_csv,
    fold_into,
    guess_target,
    header_key,
    issues_csv_header,
    issues_csv_row,
    parse_mapping_items,
    parse_row,
    read_header,
    read_records,
    resolve_mapping,
)
from contacts.messy_csv import HEADER, messy_csv_bytes, phone_formats

RULES = ImportRules(contact=ContactRules())
LIMITS = ReadLimits(max_columns=200, max_cell_chars=4_096, max_row_chars=65_536)


def rows_of(text: str, delimiter: str = ";") -> list[RawRow]:
    return list(read_records(io.StringIO(text, newline=""), delimiter, LIMITS))


def parse(text: str, delimiter: str = ";", overrides=None, definitions=None, rules=RULES):
    header = read_header(text, delimiter)
    mapping = resolve_mapping(header, overrides or {}, definitions or {})
    return [parse_row(r, len(header), mapping, rules) for r in rows_of(text, delimiter)]


# ---------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Prénom;Nom\nÉloïse;Lefèvre\n".encode("utf-8-sig"), "utf-8-sig"),
        ("Prénom;Nom\nÉloïse;Lefèvre\n".encode(), "utf-8"),
        ("Prénom;Nom\nÉloïse;Lefèvre; Œillet €\n".encode("cp1252"), "cp1252"),
        ("Prénom\tNom\n".encode("utf-16"), "utf-16"),
        (b"nom\nDupont\n", "utf-8"),
        (b"nom\nCaf\xe9\x81\n", "latin-1"),  # 0x81 is undefined in cp1252
    ],
)
def test_encoding_is_detected(data, expected):
    assert detect_encoding(data) == expected


def test_encoding_is_detected_across_any_chunking():
    data = ("x" * 10 + "é" * 3).encode() * 5
    detector = EncodingDetector()
    for i in range(0, len(data), 7):  # cuts multibyte characters in two
        detector.feed(data[i : i + 7])
    assert detector.result() == "utf-8"
    assert detector.size == len(data)
    truncated = EncodingDetector()
    truncated.feed("é".encode()[:1])  # a file ending in the middle of a character
    assert truncated.result() == "cp1252"


def test_a_sample_is_decoded_without_a_cut_character():
    sample = "Prénom;Nom\néé".encode()[:-1]
    assert decode_sample(sample, "utf-8") == "Prénom;Nom\né"


# ---------------------------------------------------------------- delimiters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nom;prénom;email\nDupont;Jean;j@x.fr\nDurand;Marie;m@x.fr\n", ";"),
        ("nom,prénom,email\nDupont,Jean,j@x.fr\n", ","),
        ("nom\tprénom\temail\nDupont\tJean\tj@x.fr\n", "\t"),
        # commas inside values do not fool it into commas
        ('nom;adresse\nDupont;"1, rue de la Paix, Paris"\nDurand;"2, rue X"\n', ";"),
        ('nom,adresse\nDupont,"1; rue; Paris"\nDurand,"2; rue"\n', ","),
        # a quoted line break and a truncated last line
        ('nom;adresse;cp\nDupont;"1 rue\nBât. A";75011\nDurand;"2 r', ";"),
        ("email\na@x.fr\nb@y.fr\n", ","),  # one column
    ],
)
def test_delimiter_is_detected(text, expected):
    assert detect_delimiter(text) == expected


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ("Prénom", "given_name"),
        ("PRENOM", "given_name"),
        ("First name", "given_name"),
        ("Nom", "family_name"),
        ("Nom de famille", "family_name"),
        ("Last Name", "family_name"),
        ("Courriel", "email"),
        ("E-mail", "email"),
        ("e_mail", "email"),
        ("Adresse e-mail", "email"),
        ("Mail", "email"),
        ("Email 2", "email"),
        ("Téléphone", "phone"),
        ("Tél.", "phone"),
        ("Portable", "phone"),
        ("Mobile", "phone"),
        ("Téléphone portable", "phone"),
        ("Code postal", "postcode"),
        ("CP", "postcode"),
        ("Ville", "commune"),
        ("Commune", "commune"),
        ("Code INSEE", "commune_insee"),
        ("Adresse", "address_line"),
        ("Adresse 2", "address_line"),
        ("Complément d'adresse", "address_line"),
        ("Département", "department"),
        ("Circonscription", "constituency"),
        ("Bureau de vote", "polling_station"),
        ("Année de naissance", "birth_year"),
        ("Étiquettes", "tags"),
        ("Tags", "tags"),
    ],
)
def test_french_and_english_headers_are_recognised(header, target):
    assert guess_target(header) == target


def test_unknown_headers_and_numbered_single_fields_are_left_aside():
    assert guess_target("Remarques") is None
    assert guess_target("Nom 2") is None  # a second family name is not a thing
    assert header_key("  Téléphone  PORTABLE ") == "telephone portable"


def definition(name, type_=CustomFieldType.text, label="", choices=()):
    from datetime import UTC, datetime

    return CustomFieldDefinition(
        id="d" * 32,
        federation_id="paris",
        federation_path="/root/paris/",
        name=name,
        label=label or name,
        type=type_,
        choices=list(choices),
        required=False,
        created_at=datetime.now(UTC),
        created_by="u",
    )


def test_mapping_is_automatic_and_overrides_win():
    header = ["Prénom", "Nom", "Last name", "Courriel", "Portable", "Notes", "Mandat électif"]
    mandate = definition("mandat", CustomFieldType.choice, "Mandat électif", ["maire"])
    auto = resolve_mapping(header, {}, {"mandat": mandate})
    assert [(c.header, c.target) for c in auto.columns] == [
        ("Prénom", "given_name"),
        ("Nom", "family_name"),
        ("Courriel", "email"),
        ("Portable", "phone"),
        ("Mandat électif", "custom.mandat"),
    ]
    assert auto.unmapped == ("Last name", "Notes")  # a second family name, an unknown
    overridden = resolve_mapping(
        header, {"last name": "family_name", "Nom": "ignore", "notes": "tags"}, {}
    )
    targets = {c.header: c.target for c in overridden.columns}
    assert targets["Last name"] == "family_name" and "Nom" not in targets
    assert targets["Notes"] == "tags"
    round_trip = type(overridden).from_list(overridden.as_list(), overridden.unmapped)
    assert round_trip == overridden


def test_a_mapping_to_an_unknown_field_or_column_is_refused_with_every_problem():
    with pytest.raises(InvalidFields) as exc:
        resolve_mapping(
            ["Nom", "Courriel"],
            {"Nom": "surname", "Portable": "phone", "Courriel": "custom.x", "nom": "ignore"},
            {},
        )
    problems = dict(exc.value.problems)
    assert "unknown field 'surname'" in problems["mapping.Nom"]
    assert "no column 'Portable'" in problems["mapping.Portable"]
    assert "unknown custom field 'x'" in problems["mapping.Courriel"]
    with pytest.raises(InvalidFields) as exc:
        resolve_mapping(["a", "b"], {"a": "family_name", "b": "family_name"}, {})
    assert "already fed" in exc.value.problems[0][1]


def test_a_mapping_must_feed_an_email_a_phone_or_a_family_name():
    with pytest.raises(InvalidFields):
        check_mapping_usable(resolve_mapping(["Prénom", "Ville"], {}, {}))
    check_mapping_usable(resolve_mapping(["Portable"], {}, {}))


def test_mapping_items_are_read_from_column_equals_field():
    assert parse_mapping_items(["Code = postal=postcode", "Tél=phone"]) == (
        {"Code = postal": "postcode", "Tél": "phone"},
        [],
    )
    assert parse_mapping_items(["nope", "=x", "a="])[1] == [
        ("mapping", "'nope': expected column=field"),
        ("mapping", "'=x': expected column=field"),
        ("mapping", "'a=': expected column=field"),
    ]


# ---------------------------------------------------------------- reading rows


def test_quoted_line_breaks_stay_in_their_field_and_rows_keep_spreadsheet_numbers():
    text = (
        "\n"  # a blank line before the header
        'nom;adresse\r\nDupont;"12 rue de la Paix\r\nBâtiment B"\r\n'
        "\r\n;;\r\n"
        'Durand;"3 ""bis"" rue"\r\n'
    )
    rows = rows_of(text)
    assert [(r.row, r.cells) for r in rows] == [
        (3, ("Dupont", "12 rue de la Paix\r\nBâtiment B")),
        (6, ("Durand", '3 "bis" rue')),
    ]
    (dupont, durand) = parse(text)
    assert dupont.fields.address.lines == ["12 rue de la Paix", "Bâtiment B"]
    assert durand.fields.address.lines == ['3 "bis" rue']


def test_a_row_is_normalised_like_the_create_endpoint():
    text = (
        "Prénom;Nom;Courriel;Téléphone;Portable;Code postal;Ville;Étiquettes;Année de naissance\n"
        " Éloïse ;LEFÈVRE;Eloise@EXAMPLE.fr;01 40 00 00 01;06 12 34 56 78 / 0612345678;75011;"
        "Paris;Bénévole, tractage|bénévole;1980\n"
    )
    (row,) = parse(text, rules=ImportRules(contact=ContactRules(), extra_tags=("import",)))
    assert isinstance(row, ParsedRow)
    f = row.fields
    assert (f.given_name, f.family_name) == ("Éloïse", "LEFÈVRE")
    assert [(e.address, e.primary) for e in f.emails] == [("Eloise@example.fr", True)]
    assert [(p.number, p.kind) for p in f.phones] == [
        ("+33140000001", "landline"),
        ("+33612345678", "mobile"),
    ]
    assert f.email == "Eloise@example.fr" and f.phone == "+33140000001"
    assert (f.address.postcode, f.address.commune, f.address.department) == ("75011", "Paris", "75")
    assert f.tags == ("bénévole", "tractage", "import")
    assert f.birth_year == 1980
    assert row.keys == ["Eloise@example.fr", "+33140000001", "+33612345678"]


def test_every_problem_of_a_row_is_reported_on_its_column():
    text = (
        "Nom;Courriel;Portable;Code postal;Année de naissance\nDupont;pas-un-email;12;7501;19x0\n"
    )
    (row,) = parse(text)
    assert isinstance(row, RejectedRow) and row.row == 2
    reasons = dict(part.split(": ", 1) for part in row.reason.split("; "))
    assert set(reasons) == {"Courriel", "Portable", "Code postal", "Année de naissance"}
    assert reasons["Courriel"].startswith("not a valid email address")
    assert reasons["Code postal"] == "a French postcode is 5 digits"
    assert row.cells == ("Dupont", "pas-un-email", "12", "7501", "19x0")


def test_rows_without_identity_too_many_fields_or_bad_custom_values_are_rejected():
    mandate = definition("mandat", CustomFieldType.choice, "mandat", ["maire"])
    text = (
        "Prénom;Nom;Mandat\nJean;;\nJean;Dupont;maire;extra\nJean;Dupont;roi\nJean;Dupont;Maire\n"
    )
    rows = parse(
        text,
        definitions={"mandat": mandate},
        rules=ImportRules(contact=ContactRules(), definitions={"mandat": mandate}),
    )
    assert isinstance(rows[0], RejectedRow) and "at least one of email" in rows[0].reason
    assert isinstance(rows[1], RejectedRow) and "header has 3" in rows[1].reason
    assert isinstance(rows[2], RejectedRow) and rows[2].reason == "Mandat: must be one of maire"
    assert isinstance(rows[3], ParsedRow) and rows[3].custom == {"mandat": "maire"}


def test_repeated_values_of_a_row_count_once():
    text = "nom;email;email 2;tel;portable\nDupont;a@x.fr;A@X.FR;06 12 34 56 78;+33612345678\n"
    (row,) = parse(text)
    assert isinstance(row, ParsedRow)
    assert [e.address for e in row.fields.emails] == ["a@x.fr"]
    assert [p.number for p in row.fields.phones] == ["+33612345678"]


def test_an_unreadable_row_is_a_rejected_row_not_a_failed_import():
    huge = "x" * (csv.field_size_limit() + 1)
    rows = rows_of(f"nom\n{huge}\nDupont\n", ",")
    assert [r.row for r in rows] == [2, 3] and rows[1].cells == ("Dupont",)
    bad = parse_row(rows[0], 1, resolve_mapping(["nom"], {}, {}), RULES)
    assert isinstance(bad, RejectedRow) and bad.reason == "nom: more than 4096 characters"


# ---------------------------------------------------------------- duplicates in a file


def test_folding_a_duplicate_fills_empty_fields_and_adds_emails_phones_tags():
    text = (
        "Prénom;Nom;Courriel;Portable;Code postal;Étiquettes\n"
        ";DUPONT;jean@x.fr;;;bénévole\n"
        "Jean;Dupont;jean@X.FR;06 12 34 56 78;75011;tractage, bénévole\n"
    )
    first, second = parse(text)
    assert set(first.keys) & set(second.keys) == {"jean@x.fr"}
    folded, custom = fold_into(
        first.fields, first.custom, second.fields, second.custom, ContactRules()
    )
    assert (folded.given_name, folded.family_name) == ("Jean", "DUPONT")  # filled, kept
    assert [p.number for p in folded.phones] == ["+33612345678"]
    assert folded.address.postcode == "75011" and folded.postcode == "75011"
    assert folded.tags == ("bénévole", "tractage")
    assert data_signature(folded, custom) != data_signature(first.fields, first.custom)
    again, again_custom = fold_into(folded, custom, second.fields, second.custom, ContactRules())
    assert data_signature(again, again_custom) == data_signature(folded, custom)


def test_folding_respects_the_configured_maxima():
    text = "nom;email;email 2;tags\nA;a@x.fr;;t1\nA;b@x.fr;c@x.fr;t2,t3\n"
    first, second = parse(text)
    rules = ContactRules(max_emails=2, max_tags=2)
    folded, _ = fold_into(first.fields, {}, second.fields, {}, rules)
    assert [e.address for e in folded.emails] == ["a@x.fr", "b@x.fr"]
    assert [e.primary for e in folded.emails] == [True, False]
    assert folded.tags == ("t1", "t2")


def test_duplicate_rules():
    assert [r.value for r in DuplicateRule] == ["merge", "skip", "flag"]


# ---------------------------------------------------------------- origin, CSV out


def test_the_import_origin_is_required_and_checked():
    from datetime import date

    origin, problems = check_import_origin(
        "rented_file", " fichier loué ", "2025-01-31", date(2026, 1, 1)
    )
    assert problems == [] and origin.detail == "fichier loué"
    assert origin.collected_on == date(2025, 1, 31)
    _, problems = check_import_origin(None, "", "2027-01-01", date(2026, 1, 1))
    assert [f for f, _ in problems] == ["origin_kind", "origin_detail", "origin_collected_on"]
    _, problems = check_import_origin("gossip", "x", "31/01/2025", date(2026, 1, 1))
    assert [f for f, _ in problems] == ["origin_kind", "origin_collected_on"]


def test_rejected_rows_csv_cells_are_safe_and_padded():
    header = issues_csv_header(["nom", "email"], flagged=False)
    row = issues_csv_row(7, "-oops", ['=HYPERLINK("x")'], 2)
    text = encode_csv([header, row], ";")
    assert list(csv.reader(io.StringIO(text), delimiter=";")) == [
        ["row", "reason", "nom", "email"],
        ["7", "'-oops", '\'=HYPERLINK("x")', ""],
    ]
    flagged = issues_csv_row(3, "dup", ["a"], 1, "c" * 32, flagged=True)
    assert flagged == ["3", "dup", "c" * 32, "a"]


@pytest.mark.parametrize("flagged", [False, True])
def test_rejected_and_flagged_csv_headers_are_safe_too(flagged):
    # the column names come from the uploaded file, like the cells
    columns = ['=HYPERLINK("x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx", "nom"]
    header = issues_csv_header(columns, flagged=flagged)
    extra = ["existing_contact_id"] if flagged else []
    assert header == [
        "row",
        "reason",
        *extra,
        '\'=HYPERLINK("x")',
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "nom",
    ]


# ---------------------------------------------------------------- the generator


def test_messy_csv_generator_makes_what_it_announces():
    data, expected = messy_csv_bytes(500, encoding="cp1252", delimiter=";", seed=1)
    assert detect_encoding(data) == "cp1252"
    text = data.decode("cp1252")
    assert detect_delimiter(text[:10_000]) == ";"
    assert read_header(text, ";") == list(HEADER)
    rows = rows_of(text)
    assert len(rows) == expected.rows == 500
    assert expected.empty_lines > 0 and expected.quoted_newlines > 0
    parsed = parse(text)
    assert sum(isinstance(p, RejectedRow) for p in parsed) == expected.rejected
    valid = [p for p in parsed if isinstance(p, ParsedRow)]
    seen: set[str] = set()
    duplicates = 0
    for p in valid:
        if seen & set(p.keys):
            duplicates += 1
        seen |= set(p.keys)
    assert duplicates == expected.merged
    assert len(valid) - duplicates == expected.created
    bom, _ = messy_csv_bytes(5, encoding="utf-8-sig", delimiter=",")
    assert bom.startswith(b"\xef\xbb\xbf") and detect_delimiter(bom.decode("utf-8-sig")) == ","


def test_phone_formats_are_the_french_ones_and_all_read_alike():
    from contacts.domain import normalise_phone

    formats = phone_formats("0612345678")
    assert "06 12 34 56 78" in formats and "+33 6 12 34 56 78" in formats
    assert {normalise_phone(f, "FR") for f in formats} == {"+33612345678"}
