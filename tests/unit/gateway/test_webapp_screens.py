"""The work screens' pure rules (gateway.webapp.screens): an import's rejected and flagged
rows read from the start of their CSV, the federation tree in reading order, the user
form's one change, the API's reasons, and every value a template turns into a text."""

from __future__ import annotations

import codecs

import pytest
from gateway.webapp.i18n import EN, FR
from gateway.webapp.screens import (
    CAMPAIGN_FIGURES,
    CAMPAIGN_STATUSES,
    DUPLICATE_MODES,
    IMPORT_STATUSES,
    MENU,
    NOTICES,
    ORIGIN_KINDS,
    PRIVACY_KINDS,
    PRIVACY_STATUSES,
    IssueReader,
    UserChangeForm,
    federation_tree,
    field_errors,
    move_targets,
    notice_of,
)
from gateway.webapp.screens_api import ROLES
from tribune_shared.auth import Role

BOM = codecs.BOM_UTF8


def _csv(lines: list[str]) -> bytes:
    return BOM + "".join(line + "\r\n" for line in lines).encode()


def _read(data: bytes, *, limit: int, flagged: bool = False, chunk: int = 7):
    reader = IssueReader(";", flagged=flagged, limit=limit)
    for start in range(0, len(data), chunk):
        if reader.feed(data[start : start + chunk]):
            return reader.result(ended=False)
    return reader.result(ended=True)


def test_rejected_rows_give_the_line_the_reason_and_the_row():
    data = _csv(
        [
            "row;reason;nom;email",
            "3;email: not an address;Dupont;dupont@",
            '7;phone: not a number;"Martin; Léa";\'=1+2',
        ]
    )
    rows = _read(data, limit=10)
    assert not rows.more
    assert [(r.row, r.reason) for r in rows.rows] == [
        (3, "email: not an address"),
        (7, "phone: not a number"),
    ]
    # a cell with the delimiter stays one cell; the spreadsheet guard is not shown
    assert rows.rows[1].cells == ("Martin; Léa", "=1+2")
    assert rows.rows[1].summary() == "Martin; Léa · =1+2"


def test_only_the_first_rows_are_read_and_the_page_says_there_are_more():
    data = _csv(["row;reason;nom"] + [f"{n};bad;X{n}" for n in range(2, 500)])
    rows = _read(data, limit=5, chunk=64)
    assert [r.row for r in rows.rows] == [2, 3, 4, 5, 6]
    assert rows.more


def test_a_cell_with_a_line_break_and_a_multibyte_letter_cut_between_chunks():
    data = _csv(["row;reason;adresse", '4;commune: unknown;"1 rue de l\'Église\nBâtiment B"'])
    rows = _read(data, limit=3, chunk=1)
    assert rows.rows[0].cells == ("1 rue de l'Église\nBâtiment B",)


def test_flagged_rows_name_the_existing_contact():
    data = _csv(["row;reason;existing_contact_id;nom", "9;same email;" + "a" * 32 + ";Durand"])
    rows = _read(data, limit=3, flagged=True)
    assert rows.rows[0].existing_contact_id == "a" * 32
    assert rows.rows[0].cells == ("Durand",)


def test_a_long_row_is_summarised():
    data = _csv(["row;reason;note", "2;too long;" + "x" * 400])
    summary = _read(data, limit=3).rows[0].summary(max_chars=20)
    assert len(summary) == 20 and summary.endswith("…")


FEDERATIONS = [
    {"id": "root", "name": "National", "parent_id": None, "path": "/root/"},
    {"id": "lyon", "name": "Lyon", "parent_id": "root", "path": "/root/lyon/"},
    {"id": "paris", "name": "Paris", "parent_id": "root", "path": "/root/paris/"},
    {"id": "p11", "name": "Paris 11e", "parent_id": "paris", "path": "/root/paris/p11/"},
    {"id": "annecy", "name": "annecy", "parent_id": "lyon", "path": "/root/lyon/annecy/"},
]


def test_the_tree_lists_each_federation_before_its_children_by_name():
    tree = federation_tree(reversed(FEDERATIONS))
    assert [(n.federation["id"], n.depth) for n in tree] == [
        ("root", 0),
        ("lyon", 1),
        ("annecy", 2),
        ("paris", 1),
        ("p11", 2),
    ]


def test_a_subtree_without_its_parent_starts_at_the_callers_federation():
    tree = federation_tree(f for f in FEDERATIONS if f["id"] in ("paris", "p11"))
    assert [(n.federation["id"], n.depth) for n in tree] == [("paris", 0), ("p11", 1)]


def test_a_federation_is_never_offered_a_move_under_itself_or_its_children():
    tree = federation_tree(FEDERATIONS)
    paris = FEDERATIONS[2]
    assert [n.federation["id"] for n in move_targets(tree, paris)] == ["root", "lyon", "annecy"]


@pytest.mark.parametrize(
    ("form", "body"),
    [
        (UserChangeForm("role", role="treasurer"), {"role": "treasurer"}),
        (
            UserChangeForm("role", role="dpo", confirm_password="mine"),
            {"role": "dpo", "confirm_password": "mine"},
        ),
        (UserChangeForm("federation", federation_id="lyon"), {"federation_id": "lyon"}),
        (UserChangeForm("deactivate", role="admin"), {"active": False}),  # the button decides
        (UserChangeForm("reactivate"), {"active": True}),
        (UserChangeForm("role"), None),
        (UserChangeForm("delete"), None),
    ],
)
def test_the_user_form_makes_one_change_the_button_names(form, body):
    assert form.body() == body


def test_the_apis_reasons_are_shown_with_their_field():
    assert field_errors(
        {"error": "validation_error", "detail": [{"field": "name", "reason": "blank"}]}
    ) == [("name", "blank")]
    assert field_errors({"error": "conflict", "detail": "already paused"}) == [
        ("", "already paused")
    ]
    assert field_errors(None) == []


def test_only_known_notices_are_shown():
    assert notice_of("saved") == "notice.saved"
    assert notice_of("<script>") is None and notice_of(None) is None


def test_every_role_has_a_menu_and_every_menu_entry_a_text():
    assert set(MENU) == set(Role)
    assert set(ROLES) == {r.value for r in Role}
    for entries in MENU.values():
        for entry in entries:
            assert f"nav.{entry}" in FR


@pytest.mark.parametrize(
    ("prefix", "values"),
    [
        ("origin.", ORIGIN_KINDS),
        ("duplicates.", DUPLICATE_MODES),
        ("import.status.", IMPORT_STATUSES),
        ("privacy.kind.", PRIVACY_KINDS),
        ("privacy.status.", PRIVACY_STATUSES),
        ("privacy.request.", PRIVACY_KINDS),
        ("campaign.status.", CAMPAIGN_STATUSES),
        ("campaign.", CAMPAIGN_FIGURES),
        ("role.", tuple(r.value for r in Role)),
        ("", tuple(NOTICES.values())),
    ],
)
def test_every_value_a_template_writes_has_a_text_in_both_languages(prefix, values):
    for value in values:
        assert prefix + value in FR and prefix + value in EN


def test_the_lists_match_what_the_services_answer_and_take():
    """The screens' select lists and status texts follow the services' own enums."""
    from typing import get_args

    from consent.privacy import RequestKind, RequestStatus
    from contacts.import_api import ImportJob
    from messaging.campaigns.domain import CampaignStatus
    from tribune_shared.events.contracts import OriginKind

    assert set(PRIVACY_KINDS) == {k.value for k in RequestKind}
    assert set(PRIVACY_STATUSES) == {s.value for s in RequestStatus}
    assert set(CAMPAIGN_STATUSES) == {s.value for s in CampaignStatus}
    assert set(ORIGIN_KINDS) == {k.value for k in OriginKind}
    assert set(IMPORT_STATUSES) == set(get_args(ImportJob.model_fields["status"].annotation))
    assert set(DUPLICATE_MODES) == set(get_args(ImportJob.model_fields["duplicates"].annotation))
