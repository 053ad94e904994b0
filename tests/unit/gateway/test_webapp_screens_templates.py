"""The work screens' templates rendered with answers shaped as the APIs give them, in both
languages: every field a template reads exists (undefined is an error), each page says
what a user must see, and nothing inline slips in (the CSP would block it)."""

from __future__ import annotations

from typing import Any

import pytest
from gateway.webapp.i18n import format_int
from gateway.webapp.screens import (
    CAMPAIGN_FIGURES,
    DUPLICATE_MODES,
    ORIGIN_KINDS,
    PRIVACY_KINDS,
    PRIVACY_STATUSES,
    SEGMENT_EDITORS,
    IssueRow,
    IssueRows,
    federation_tree,
)
from gateway.webapp.screens_api import ROLES
from webapp_support import render_page, segment_page

NOW = "2026-03-14T10:00:00Z"
FEDERATIONS = [
    {"id": "root", "name": "National", "parent_id": None, "path": "/root/"},
    {"id": "paris", "name": "Paris", "parent_id": "root", "path": "/root/paris/"},
]
ME = {"id": "u1", "email": "admin@tribune.test", "role": "admin", "federation_id": "root"}
JOB = {
    "id": "a" * 32,
    "status": "running",
    "federation_id": "paris",
    "created_at": NOW,
    "file": {"name": "fete.csv", "bytes": 100, "encoding": "utf-8", "delimiter": ","},
    "progress": {"rows_done": 40, "total": 100, "percent": 40.0},
    "counts": dict.fromkeys(
        ("created", "updated", "merged", "unchanged", "skipped", "rejected", "flagged"), 1
    ),
    "error": None,
}
CAMPAIGN = {
    "id": "c1",
    "name": "Tract <b>",
    "channel": "email",
    "purpose": "news",
    "status": "sending",
    "status_reason": None,
    "segment_id": "s1",
    "launched_at": NOW,
    "completed_at": None,
    "stats": {"sent": 1234, "delivered": 1200, "bounced": 3, "opened": 400, "audience": 2000},
}
ERASURE = {
    "request_id": "r1",
    "kind": "erasure",
    "contact_id": "p1",
    "status": "completed",
    "received_at": NOW,
    "deadline": "2026-04-14T10:00:00Z",
    "overdue": False,
    "origin": "dpo",
    "action": "erase",
    "note": None,
    "completed_at": NOW,
    "expected_services": ["contacts", "consent"],
    "services": {"contacts": {}, "consent": {}},
    "receipt": {
        "services": [
            {"service": "contacts", "completed_at": NOW, "kept_for_legal_reasons": []},
            {"service": "memberships", "completed_at": NOW, "kept_for_legal_reasons": ["x"]},
        ],
        "kept_for_legal_reasons": [],
        "key_destroyed_at": NOW,
        "completed_at": NOW,
    },
    "exports": [],
}
USER = {
    "id": "u2",
    "email": "lea@tribune.test",
    "role": "viewer",
    "federation_id": "paris",
    "active": True,
    "created_at": NOW,
}


def render(template: str, lang: str = "fr", /, **context: Any) -> str:
    return render_page(
        template,
        lang,
        me=ME,
        menu=("imports", "privacy", "users", "federations", "segments", "campaigns"),
        **context,
    )


TREE = federation_tree(FEDERATIONS)
SEGMENT_FILTER = {"op": "tags", "match": "any", "tags": ["tract"]}
PAGES: dict[str, dict[str, Any]] = {
    "imports.html": {
        "active": "imports",
        "jobs": [JOB],
        "next_query": "cursor=" + "b" * 32,
        "tree": TREE,
        "form": {
            "origin_kind": "import",
            "origin_detail": "",
            "duplicates": "merge",
            "federation_id": "root",
            "tag": "",
        },
        "errors": [("file", "missing"), ("", "the file is empty")],
        "origin_kinds": ORIGIN_KINDS,
        "duplicate_modes": DUPLICATE_MODES,
        "active_statuses": ("queued", "running"),
    },
    "import.html": {
        "active": "imports",
        "job": JOB,
        "rejected": IssueRows([IssueRow(3, "email: not valid", None, ("Bruno", "x@"))], True),
        "flagged": IssueRows([IssueRow(4, "same email", "p" * 32, ("Léa",))], False),
        "running": True,
        "poll_seconds": 3,
        "errors": [],
        "notice": "notice.cancelled",
    },
    "privacy.html": {
        "active": "privacy",
        "items": [ERASURE, {**ERASURE, "kind": "access", "status": "open", "overdue": True}],
        "filters": {"status": None, "kind": "erasure", "overdue": None},
        "kinds": PRIVACY_KINDS,
        "statuses": PRIVACY_STATUSES,
        "page_size": 2,
    },
    "privacy_request.html": {"active": "privacy", "req": ERASURE},
    "users.html": {
        "active": "users",
        "items": [USER],
        "next_query": None,
        "filters": {"q": None, "role": "viewer", "active": None},
        "roles": ROLES,
        "names": {"paris": "Paris"},
    },
    "user.html": {
        "active": "users",
        "user": USER,
        "tree": TREE,
        "roles": ROLES,
        "errors": [("confirm_password", "granting the DPO role takes your password")],
        "notice": "notice.saved",
        "itself": False,
    },
    "federations.html": {
        "active": "federations",
        "tree": TREE,
        "errors": [],
        "name": "",
        "notice": "notice.created",
    },
    "federation.html": {
        "active": "federations",
        "federation": {**FEDERATIONS[1], "version": 2, "created_at": NOW},
        "targets": TREE[:1],
        "errors": [],
        "notice": None,
    },
    "segments.html": {
        "active": "segments",
        "items": [{"id": "s1", "name": "Tract", "description": "", "updated_at": NOW}],
        "sizes": {"s1": 1500},
        "next_query": None,
        "notice": "notice.deleted",
        "editors": SEGMENT_EDITORS,
    },
    "segment.html": segment_page(
        {
            "id": "s1",
            "name": "Tract",
            "description": "d",
            "updated_at": NOW,
            "version": 1,
            "filter": SEGMENT_FILTER,
        },
        preview={"count": 2, "sample": [{"id": "p1", "given_name": "Léa", "family_name": "M"}]},
    ),
    "campaigns.html": {
        "active": "campaigns",
        "items": [CAMPAIGN, {**CAMPAIGN, "id": "c2", "status": "paused"}],
        "next_query": None,
        "figures": CAMPAIGN_FIGURES,
        "live": True,
        "poll_seconds": 3,
        "notice": "notice.resumed",
    },
    "campaign.html": {
        "active": "campaigns",
        "campaign": CAMPAIGN,
        "figures": CAMPAIGN_FIGURES,
        "live": True,
        "poll_seconds": 3,
        "errors": [("", "campaign is completed")],
        "notice": None,
    },
}


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_screen_renders_in_both_languages_without_inline_code(name, lang):
    html = render(name, lang, **PAGES[name])
    assert "<script>" not in html and " style=" not in html and " on" + "click=" not in html
    assert 'aria-current="page"' in html  # the menu says where the user is


def test_the_import_page_shows_lines_reasons_duplicates_and_follows_the_job():
    html = render("import.html", **PAGES["import.html"])
    assert 'data-refresh="3"' in html  # running: the page follows it
    assert "email: not valid" in html and "Bruno · x@" in html
    assert f'href="/app/people/{"p" * 32}"' in html
    assert "/app/imports/" + "a" * 32 in html  # the refresh link without script
    done = render("import.html", **{**PAGES["import.html"], "running": False})
    assert "data-refresh" not in done and "Annuler l" not in done


def test_the_campaign_list_offers_pause_for_a_sending_one_and_resume_for_a_paused_one():
    html = render("campaigns.html", **PAGES["campaigns.html"])
    assert 'action="/app/campaigns/c1/pause"' in html
    assert 'action="/app/campaigns/c2/resume"' in html
    assert "1\u202f234" in html  # sent, written the French way
    assert "Tract &lt;b&gt;" in html  # escaped


def test_reactivating_a_dpo_asks_for_the_password_and_anyone_else_does_not():
    page = PAGES["user.html"]
    dpo = render("user.html", **{**page, "user": {**USER, "role": "dpo", "active": False}})
    viewer = render("user.html", **{**page, "user": {**USER, "active": False}})
    assert 'id="confirm_reactivate"' in dpo
    assert 'id="confirm_reactivate"' not in viewer and 'value="reactivate"' in viewer


def test_the_erasure_receipt_lists_each_service():
    html = render("privacy_request.html", **PAGES["privacy_request.html"])
    assert "Attestation d&#39;effacement" in html
    for service in ("contacts", "memberships"):
        assert f"<td>{service}</td>" in html


# ---------------------------------------------------------------- the dashboard's figures


def _board(**parts: Any) -> Any:
    from gateway.webapp.service import Dashboard

    base: dict[str, Any] = {
        "me": ME,
        "federations": FEDERATIONS,
        "federation_id": "paris",
        "figures": None,
        "contacts_count": None,
        "imports": None,
        "campaigns": None,
    }
    return Dashboard(**(base | parts))


CONSENTS = {
    "federation_id": "paris",
    "people": 1200,
    "rates": [
        {
            "channel": "email",
            "purpose": "news",
            "granted": 510,
            "pending": 12,
            "revoked": 40,
            "rate": 0.425,
        },
    ],
}
MESSAGES = {
    "federation_id": "paris",
    "since": NOW,
    "channels": [
        {
            "channel": "sms",
            "by_status": {"sent": 90},
            "sent": 90,
            "delivered": 88,
            "bounced": 2,
            "complained": 0,
        },
    ],
}


@pytest.mark.parametrize(("lang", "rate"), [("fr", "42,5\u202f%"), ("en", "42.5%")])
def test_the_dashboard_shows_consent_rates_and_message_totals(lang, rate):
    html = render(
        "dashboard.html",
        lang,
        board=_board(consents=CONSENTS, messages=MESSAGES),
        messages_days=30,
        active="dashboard",
    )
    assert 'data-consent="email:news"' in html and rate in html
    assert format_int(1200, lang) in html
    assert 'data-messages="sms"' in html and "88" in html
    assert ("30 derniers jours" if lang == "fr" else "last 30 days") in html


def test_the_dashboard_leaves_out_figures_the_role_may_not_read():
    html = render("dashboard.html", board=_board(), messages_days=30, active="dashboard")
    assert "data-consent" not in html and "data-messages" not in html
    empty = render(
        "dashboard.html",
        board=_board(consents={**CONSENTS, "rates": []}, messages={**MESSAGES, "channels": []}),
        messages_days=30,
        active="dashboard",
    )
    assert "Aucun consentement" in empty and "Aucun message" in empty


def test_a_draft_is_launched_from_its_own_page_with_a_required_confirmation():
    draft = {**CAMPAIGN, "status": "draft"}
    page = render("campaign.html", **{**PAGES["campaign.html"], "campaign": draft, "live": False})
    assert 'action="/app/campaigns/c1/launch"' in page
    assert 'name="confirm" value="yes" required' in page
    assert "Lancer la campagne" in page
    listing = render("campaigns.html", **{**PAGES["campaigns.html"], "items": [draft]})
    assert "/launch" not in listing  # never one click away in a list
