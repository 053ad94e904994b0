"""Campaigns end to end, through the gateway, on the real processes: a template, a segment
and a campaign to it; contacts resolves the audience, messaging sends each mail once with
its one-click unsubscribe, refuses by rule those without consent, and a revocation made
while the campaign is paused wins over it."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from support import eventually, mail_header, mails_to

pytestmark = pytest.mark.e2e

PURPOSE = "campaigns"
HTML = (
    "<p>Bonjour {{ contact.given_name | default('à vous') }},</p>"
    '<p>Grand meeting samedi à 15h : <a href="https://example.org/meeting">le programme</a>.</p>'
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

    # a click on the programme's link goes through the gateway's redirect and counts in the
    # campaign's aggregate (these people did not agree to per-person tracking)
    [mail] = mails_to(stack.smtp_http_url, world["yes"][0]["email"])
    [tracked] = re.findall(r"https?://\S+/api/v1/public/t/c/[\w.-]+", mail["text"])
    assert "example.org/meeting" not in mail["text"]
    click = httpx.get(tracked, follow_redirects=False, timeout=30)
    assert click.status_code == 302 and click.headers["location"] == "https://example.org/meeting"
    clicked = eventually(
        lambda: manager("GET", f"/api/v1/campaigns/{made['id']}").json()["stats"],
        lambda s: s.get("clicked") == 1,
    )
    assert clicked.get("unique_clicked", 1) == 1
    forged = httpx.get(tracked[:-3] + "AAA", follow_redirects=False, timeout=30)
    assert forged.status_code == 404 and "location" not in forged.headers

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


def test_a_test_send_reaches_only_the_chosen_addresses_marked_as_a_test(
    stack, manager, federations
):
    tag = uuid.uuid4().hex[:6]
    world = prepare(manager, federations["Paris"].user, tag, consenting=1, silent=0)
    made = campaign(manager, world, f"Essai {tag}")
    colleague = f"collegue.{tag}@example.fr"
    r = manager(
        "POST",
        f"/api/v1/campaigns/{made['id']}/test",
        json={"emails": [colleague], "contact_id": world["yes"][0]["id"]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"sent": [colleague], "failed": []}
    [mail] = eventually(lambda: mails_to(stack.smtp_http_url, colleague))
    assert mail["subject"] == f"[TEST] Meeting Essai {tag}"
    assert "Camille0" in mail["text"]  # personalised as the chosen contact
    # the campaign itself is untouched: still a draft, nobody else got anything
    assert manager("GET", f"/api/v1/campaigns/{made['id']}").json()["status"] == "draft"
    assert mails_to(stack.smtp_http_url, world["yes"][0]["email"]) == []
    too_many = [f"x{i}@example.fr" for i in range(11)]
    r = manager("POST", f"/api/v1/campaigns/{made['id']}/test", json={"emails": too_many})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "emails"


def test_an_ab_subject_test_sends_the_winner_to_the_held_rest(stack, manager, federations):
    tag = uuid.uuid4().hex[:6]
    world = prepare(manager, federations["Paris"].user, tag, consenting=8, silent=0)
    template = world["template"]
    r = manager(
        "POST",
        f"/api/v1/templates/{template}/versions",
        json={"subject": "Ce samedi : {{ campaign.name }}", "html": HTML},
    )
    assert r.status_code == 201, r.text
    body = {
        "name": f"AB {tag}",
        "channel": "email",
        "purpose": PURPOSE,
        "template_id": template,
        "template_version": 1,
        "segment_id": world["segment"],
    }
    # version B must differ from A in its subject only
    r = manager(
        "POST",
        f"/api/v1/templates/{template}/versions",
        json={
            "subject": "X",
            "html": "<p>{{ origin }} {{ sender }} <a href='{{ unsubscribe_url }}'>x</a></p>",
        },
    )
    assert r.status_code == 201, r.text
    bad = manager("POST", "/api/v1/campaigns", json={**body, "ab_test": {"template_version_b": 3}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["field"] == "ab_test.template_version_b"

    ab = {"template_version_b": 2, "share": 0.5, "decide_after_minutes": 1}
    made = manager("POST", "/api/v1/campaigns", json={**body, "ab_test": ab})
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    assert manager("POST", f"/api/v1/campaigns/{cid}/launch").status_code == 200
    done = eventually(
        lambda: manager("GET", f"/api/v1/campaigns/{cid}").json(),
        lambda c: c["status"] == "completed",
        timeout=150,
    )
    assert done["ab_test"]["winner"] == "a"  # nobody clicked: A on a tie
    assert "A 0.0%, B 0.0%" in done["ab_test"]["reason"]
    stats = done["stats"]
    assert stats["sent"] == 8 and stats.get("held", 0) == 0, stats
    subjects = []
    for c in world["yes"]:
        [mail] = mails_to(stack.smtp_http_url, c["email"])
        subjects.append(mail["subject"])
    b_count = subjects.count(f"Ce samedi : AB {tag}")
    assert b_count == stats.get("ab.b.sent", 0)
    assert subjects.count(f"Meeting AB {tag}") == 8 - b_count


def pay_dues(http, stack, contact_id: str) -> None:
    """The payment provider's signed webhook: the contact's membership becomes active."""
    import json
    from datetime import UTC, datetime

    from tribune_shared.webhooks import signature_headers

    payment = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{uuid.uuid4().hex}",
        "contact_id": contact_id,
        "amount_cents": 3000,
        "currency": "EUR",
        "method": "card",
        "purpose": "dues",
        "paid_at": datetime.now(UTC).isoformat(),
    }
    body = json.dumps(payment).encode()
    secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
    eventually(
        lambda: http.post("/api/v1/webhooks/payments", content=body, headers=headers),
        lambda r: r.status_code == 201,
    )


def test_a_campaign_for_members_up_to_date_reaches_only_them(stack, http, manager, federations):
    tag = uuid.uuid4().hex[:6]
    world = prepare(manager, federations["Paris"].user, tag, consenting=2, silent=0)
    member, other = world["yes"]
    pay_dues(http, stack, member["id"])
    # messaging's own view learns the standing from membership-activated
    eventually(
        lambda: manager(
            "GET",
            f"/api/v1/messages/reachability/{member['id']}",
            params={"purpose": PURPOSE},
        ).json(),
        lambda v: v.get("standing") == "up_to_date",
    )
    body = {
        "name": f"Adhérents {tag}",
        "channel": "email",
        "purpose": PURPOSE,
        "template_id": world["template"],
        "segment_id": world["segment"],
        "standings": ["up_to_date"],
    }
    made = manager("POST", "/api/v1/campaigns", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["standings"] == ["up_to_date"]
    assert manager("POST", f"/api/v1/campaigns/{made.json()['id']}/launch").status_code == 200
    done = finished(manager, made.json()["id"])
    assert done["stats"]["sent"] == 1 and done["stats"]["refused_by.standing"] == 1, done
    assert len(mails_to(stack.smtp_http_url, member["email"])) == 1
    assert mails_to(stack.smtp_http_url, other["email"]) == []


def test_an_sms_campaign_reaches_the_provider_and_a_stop_reply_revokes(stack, manager, federations):
    import random

    import httpx

    tag = uuid.uuid4().hex[:6]
    secretary = federations["Paris"].user
    version = f"sms-{tag}"
    text = {"version": version, "title": "SMS", "body": "J'accepte vos SMS."}
    assert secretary("POST", "/api/v1/consents/texts", json=text).status_code == 201
    people = []
    for i in range(3):
        phone = "+33612" + "".join(random.choices("0123456789", k=6))
        body = {
            "given_name": f"Sam{i}",
            "family_name": f"Sms-{tag}",
            "phone": phone,
            "origin": {"kind": "event", "detail": "réunion publique"},
            "tags": [f"sms-{tag}"],
        }
        r = secretary("POST", "/api/v1/contacts", json=body)
        assert r.status_code == 201, r.text
        people.append(r.json())
    grant = {"channel": "sms", "purpose": PURPOSE, "source": "event", "text_version": version}
    for c in people:
        eventually(
            lambda c=c: secretary("POST", f"/api/v1/consents/{c['id']}/grant", json=grant),
            lambda resp: resp.status_code == 200,
        )
    for c in people:
        eventually(
            lambda c=c: (
                manager(
                    "GET",
                    f"/api/v1/messages/reachability/{c['id']}",
                    params={"purpose": PURPOSE, "channel": "sms"},
                )
                .json()
                .get("reachable")
            ),
            timeout=60,
        )
    segment = manager(
        "POST",
        "/api/v1/segments",
        json={
            "name": f"SMS {tag}",
            "filter": {"op": "tags", "match": "any", "tags": [f"sms-{tag}"]},
        },
    ).json()["id"]
    template = manager(
        "POST",
        "/api/v1/templates",
        json={
            "name": f"SMS {tag}",
            "channel": "sms",
            "text": "Réunion samedi. {{ origin }} {{ sender }} STOP",
        },
    )
    assert template.status_code == 201, template.text
    made = manager(
        "POST",
        "/api/v1/campaigns",
        json={
            "name": f"SMS {tag}",
            "channel": "sms",
            "purpose": PURPOSE,
            "template_id": template.json()["template"]["template_id"],
            "segment_id": segment,
        },
    ).json()
    assert manager("POST", f"/api/v1/campaigns/{made['id']}/launch").status_code == 200
    done = finished(manager, made["id"])
    assert done["status"] == "completed" and done["stats"]["sent"] == 3, done

    def received(phone: str) -> list[dict]:
        r = httpx.get(f"{stack.cfg.sms_url}/messages", params={"to": phone}, timeout=10)
        r.raise_for_status()
        return r.json()

    for c in people:
        [sms] = received(c["phone"])
        assert "STOP" in sms["text"] and "réunion publique" in sms["text"]

    # the person answers STOP: the provider relays it, consent revokes, messaging stops
    stopper = people[0]
    r = httpx.post(
        f"{stack.cfg.sms_url}/inbound", json={"from": stopper["phone"], "text": "STOP"}, timeout=30
    )
    assert r.status_code == 200, r.text
    eventually(
        lambda: manager(
            "GET",
            f"/api/v1/messages/reachability/{stopper['id']}",
            params={"purpose": PURPOSE, "channel": "sms"},
        ).json(),
        lambda v: v.get("reachable") is False and "revoked" in (v.get("reason") or ""),
    )


def test_a_scheduled_campaign_waits_for_its_time(manager, federations):
    from datetime import UTC, datetime, timedelta

    tag = uuid.uuid4().hex[:6]
    world = prepare(manager, federations["Paris"].user, tag, consenting=1, silent=0)
    made = campaign(manager, world, f"Plus tard {tag}")
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    r = manager("POST", f"/api/v1/campaigns/{made['id']}/schedule", json={"at": at.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "scheduled"
    assert datetime.fromisoformat(r.json()["scheduled_at"].replace("Z", "+00:00")) == at
    import time

    time.sleep(3)  # a few dispatcher rounds: nothing launches it before its time
    still = manager("GET", f"/api/v1/campaigns/{made['id']}").json()
    assert still["status"] == "scheduled" and still["stats"].get("sent", 0) == 0
    past = manager(
        "POST", f"/api/v1/campaigns/{made['id']}/schedule", json={"at": "2020-01-01T09:00:00+01:00"}
    )
    assert past.status_code == 422 and past.json()["detail"][0]["field"] == "at"
