"""Campaigns end to end, through the gateway, on the real processes: a template, a segment
and a campaign to it; contacts resolves the audience, messaging sends each mail once with
its one-click unsubscribe, refuses by rule those without consent, and a revocation made
while the campaign is paused wins over it."""

from __future__ import annotations

import uuid

import pytest
from support import eventually, mail_header, mails_to

pytestmark = pytest.mark.e2e

PURPOSE = "campaigns"
HTML = (
    "<p>Bonjour {{ contact.given_name | default('à vous') }},</p>"
    "<p>Grand meeting samedi à 15h.</p>"
    "<p>{{ origin }} {{ sender }}</p>"
    '<p><a href="{{ unsubscribe_url }}">Se désinscrire</a></p>'
)


@pytest.fixture(scope="module")
def manager(new_user, federations):
    """A campaign manager of Paris."""
    return new_user("campaign_manager", federations["Paris"])


def people(secretary, tag: str, label: str, n: int, *, tagged: bool = True) -> list[dict]:
    made = []
    for i in range(n):
        body = {
            "given_name": f"Camille{i}",
            "family_name": f"Campagne-{tag}",
            "email": f"camille{i}.{label}.{tag}@example.fr",
            "origin": {"kind": "petition", "detail": "Sauvons la gare"},
            "tags": [f"meeting-{tag}"] if tagged else [],
        }
        r = secretary("POST", "/api/v1/contacts", json=body)
        assert r.status_code == 201, r.text
        made.append(r.json())
    return made


def grant(secretary, contact_id: str, version: str) -> None:
    body = {"channel": "email", "purpose": PURPOSE, "source": "petition", "text_version": version}
    eventually(
        lambda: secretary("POST", f"/api/v1/consents/{contact_id}/grant", json=body),
        lambda r: r.status_code == 200,
    )


def reachable(manager, contact_id: str) -> bool:
    r = manager("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": PURPOSE})
    return r.status_code == 200 and r.json()["reachable"]


def prepare(manager, secretary, tag: str, consenting: int, silent: int) -> dict:
    """Contacts tagged for the meeting (``consenting`` of them agreed to the purpose,
    ``silent`` did not), one consenting contact without the tag, a segment of the tag
    and an email template; messaging knows every consent before the launch."""
    version = f"camp-{tag}"
    text = {"version": version, "title": "Campagnes", "body": "J'accepte vos campagnes."}
    assert secretary("POST", "/api/v1/consents/texts", json=text).status_code == 201
    yes = people(secretary, tag, "yes", consenting)
    no = people(secretary, tag, "no", silent)  # tagged too, but never agreed
    [outside] = people(secretary, tag, "out", 1, tagged=False)
    for c in [*yes, outside]:
        grant(secretary, c["id"], version)
    for c in [*yes, outside]:
        eventually(lambda c=c: reachable(manager, c["id"]), timeout=60)
    segment = manager(
        "POST",
        "/api/v1/segments",
        json={
            "name": f"Meeting {tag}",
            "filter": {"op": "tags", "match": "any", "tags": [f"meeting-{tag}"]},
        },
    )
    assert segment.status_code == 201, segment.text
    template = manager(
        "POST",
        "/api/v1/templates",
        json={
            "name": f"Meeting {tag}",
            "channel": "email",
            "subject": "Meeting {{ campaign.name }}",
            "html": HTML,
        },
    )
    assert template.status_code == 201, template.text
    return {
        "yes": yes,
        "no": no,
        "outside": outside,
        "segment": segment.json()["id"],
        "template": template.json()["template"]["template_id"],
    }


def campaign(manager, world: dict, name: str) -> dict:
    r = manager(
        "POST",
        "/api/v1/campaigns",
        json={
            "name": name,
            "channel": "email",
            "purpose": PURPOSE,
            "template_id": world["template"],
            "segment_id": world["segment"],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "draft"
    return r.json()


def finished(manager, campaign_id: str) -> dict:
    return eventually(
        lambda: manager("GET", f"/api/v1/campaigns/{campaign_id}").json(),
        lambda c: c["status"] in ("completed", "failed", "cancelled"),
        timeout=90,
    )


def test_a_campaign_reaches_each_consenting_contact_of_its_segment_once(
    stack, manager, federations
):
    tag = uuid.uuid4().hex[:6]
    world = prepare(manager, federations["Paris"].user, tag, consenting=4, silent=2)
    made = campaign(manager, world, f"Meeting {tag}")
    launched = manager("POST", f"/api/v1/campaigns/{made['id']}/launch")
    assert launched.status_code == 200, launched.text
    assert launched.json()["status"] == "sending"
    again = manager("POST", f"/api/v1/campaigns/{made['id']}/launch")
    assert again.status_code == 409 and "sending" in again.text

    done = finished(manager, made["id"])
    assert done["status"] == "completed", done
    assert done["audience"] == {"resolved": True, "recipients": 6, "error": None}
    stats = done["stats"]
    assert stats["sent"] == 4 and stats["refused_by.no_consent"] == 2, stats
    assert stats.get("queued", 0) == 0 and stats.get("failed", 0) == 0, stats

    for c in world["yes"]:
        [mail] = mails_to(stack.smtp_http_url, c["email"])  # exactly once
        assert mail["subject"] == f"Meeting Meeting {tag}"
        assert mail_header(mail, "List-Unsubscribe").startswith("<http")
        assert mail_header(mail, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        assert (
            "Camille" in mail["text"] and "signé notre pétition (Sauvons la gare)" in mail["text"]
        )
    for c in [*world["no"], world["outside"]]:
        assert mails_to(stack.smtp_http_url, c["email"]) == []

    # the template version it used is frozen: it can no longer be changed in place
    version = manager("GET", f"/api/v1/templates/{world['template']}").json()["versions"][0]
    assert version["frozen"] is True


def test_a_revocation_made_while_the_campaign_is_paused_wins(stack, manager, federations):
    tag = uuid.uuid4().hex[:6]
    secretary = federations["Paris"].user
    world = prepare(manager, secretary, tag, consenting=3, silent=0)
    made = campaign(manager, world, f"Pause {tag}")
    assert manager("POST", f"/api/v1/campaigns/{made['id']}/launch").status_code == 200
    paused = manager("POST", f"/api/v1/campaigns/{made['id']}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    assert paused.json()["stats"].get("sent", 0) == 0  # the audience was not even in yet

    gone = world["yes"][0]
    body = {"channel": "email", "purpose": PURPOSE, "source": "web_form"}
    r = secretary("POST", f"/api/v1/consents/{gone['id']}/revoke", json=body)
    assert r.status_code == 200, r.text
    eventually(lambda: not reachable(manager, gone["id"]))
    resumed = manager("POST", f"/api/v1/campaigns/{made['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "sending"

    done = finished(manager, made["id"])
    assert done["stats"]["sent"] == 2 and done["stats"]["refused_by.consent_revoked"] == 1
    assert mails_to(stack.smtp_http_url, gone["email"]) == []
    for c in world["yes"][1:]:
        assert len(mails_to(stack.smtp_http_url, c["email"])) == 1


def test_campaigns_of_another_federation_are_not_found(manager, federations):
    lyon = federations["Lyon"].user  # a secretary of Lyon may read campaigns of Lyon only
    tag = uuid.uuid4().hex[:6]
    r = manager(
        "POST",
        "/api/v1/templates",
        json={"name": f"T {tag}", "channel": "email", "subject": "S", "html": HTML},
    )
    template = r.json()["template"]["template_id"]
    made = manager(
        "POST",
        "/api/v1/campaigns",
        json={
            "name": f"Secret {tag}",
            "channel": "email",
            "purpose": PURPOSE,
            "template_id": template,
        },
    ).json()
    assert lyon("GET", f"/api/v1/campaigns/{made['id']}").status_code == 404
    assert made["id"] not in [c["id"] for c in lyon("GET", "/api/v1/campaigns").json()["items"]]
