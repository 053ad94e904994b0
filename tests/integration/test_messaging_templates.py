"""Message templates through the messaging API on the real store: checked when saved,
inherited down the federation tree, versioned, frozen by a launch, previewed for a contact."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from messaging.handlers import contact_handlers
from messaging.main import create_app
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from messaging.templates.service import TemplateService
from support import deliver, run_with_store, seed_federations, signed_headers
from tribune_shared.auth import Role
from tribune_shared.errors import InvalidField, NotFound
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import Channel, ContactCreatedV1, ContactState
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions

pytestmark = pytest.mark.integration

ROOT, PARIS, P11, LYON = "/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/"
UNSUBSCRIBE_BASE = "https://tribune.example.org/api/v1/public/consents/unsubscribe"
LINK = '<a href="{{ unsubscribe_url }}">Se désinscrire</a>'
HTML = (
    '<p>Bonjour {{ contact.given_name | default("ami") }},</p>'
    "<p>Réunion publique jeudi à 19h &amp; apéritif.</p>"
    f"<p>{{{{ origin }}}}</p><p>{{{{ sender }}}}</p><p>{LINK}</p>"
)
SUBJECT = "{{ campaign.name }} : bonjour {{ contact.given_name | default('ami') }}"
SMS = "Réunion jeudi 19h. {{ origin }} {{ sender }} STOP au 36180"


@pytest.fixture
def api(isolated_env, monkeypatch):
    monkeypatch.setenv("MESSAGING_MAIL_FROM", "Parti Exemple <news@parti.example.org>")
    monkeypatch.setenv("MESSAGING_UNSUBSCRIBE_BASE_URL", UNSUBSCRIBE_BASE)
    monkeypatch.setenv("MESSAGING_UNSUBSCRIBE_SECRET", "integration-unsubscribe-secret-42")
    monkeypatch.setenv("MESSAGING_TEMPLATE_SMS_STOP_TEXT", "STOP au 36180")
    settings = MessagingSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, ROOT, PARIS, P11, LYON)
        yield client, settings


def headers(settings, path=PARIS, role=Role.campaign_manager):
    return signed_headers(settings, path, role)


def seed_contact(settings, contact_id: str, path: str, given_name: str | None = "Ana") -> None:
    """contact-created through messaging's own handler (its projection of the person)."""
    federation_id = path.strip("/").rsplit("/", 1)[-1]
    event = ContactCreatedV1(
        contact_id=contact_id,
        contact_version=1,
        contact=ContactState(
            given_name=given_name, family_name="Martin", email=f"{contact_id}@example.org"
        ),
    )
    envelope = new_envelope(
        event, producer="contacts", federation_id=federation_id, federation_path=path
    )

    async def work(store: Store) -> None:
        handlers = Subscriptions("messaging").add(contact_handlers(MessagingStore(store)))
        await deliver(store, handlers, envelope)

    run_with_store(settings, work)


def create(client, settings, path=PARIS, **body):
    payload = {"name": "Réunion publique", "channel": "email", "subject": SUBJECT, "html": HTML}
    return client.post(
        "/api/v1/templates", json={**payload, **body}, headers=headers(settings, path)
    )


def created(client, settings, path=PARIS, **body) -> str:
    r = create(client, settings, path, **body)
    assert r.status_code == 201, r.text
    return r.json()["template"]["template_id"]


def templates_service(client) -> TemplateService:
    return client.app.state.template_service


# ---------------------------------------------------------------- writing


def test_an_email_template_is_saved_as_version_1_with_its_text_derived(api):
    client, settings = api
    r = create(client, settings)
    assert r.status_code == 201, r.text
    body = r.json()
    template, version = body["template"], body["version"]
    assert template["federation_id"] == "paris"
    assert template["channel"] == "email"
    assert template["latest_version"] == 1
    assert version["version"] == 1 and not version["frozen"]
    assert version["text_derived"] is True
    assert "{{ unsubscribe_url }}" in version["text"]
    assert "&amp;" not in version["text"] and "<p>" not in version["text"]

    got = client.get(
        f"/api/v1/templates/{template['template_id']}/versions/1", headers=headers(settings)
    )
    assert got.status_code == 200
    assert got.json()["html"] == HTML and got.json()["subject"] == SUBJECT


def test_a_template_breaking_the_rules_is_refused_with_each_field_and_nothing_is_saved(api):
    client, settings = api
    r = create(
        client,
        settings,
        subject="Bonjour {{ contact.given_name }}",
        html="<p>{{ ''.__class__ }}</p><p>{{ sender }}</p>",
    )
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"
    problems = {(d["field"], d["reason"]) for d in r.json()["detail"]}
    fields = {f for f, _ in problems}
    assert fields == {"subject", "html"}
    reasons = " ".join(reason for _, reason in problems)
    assert "contact.given_name is missing for some contacts" in reasons
    assert "only read from contact and campaign" in reasons
    assert "unsubscribe link" in reasons and "{{ origin }}" in reasons

    r = create(client, settings, channel="sms", subject=None, html=None, text="Réunion STOP")
    assert r.status_code == 422
    reasons = " ".join(d["reason"] for d in r.json()["detail"])
    assert "'STOP au 36180'" in reasons  # the wording is the setting's

    listed = client.get("/api/v1/templates", headers=headers(settings))
    assert listed.status_code == 200 and listed.json()["items"] == []


def test_an_sms_template_has_only_a_text(api):
    client, settings = api
    r = create(client, settings, channel="sms", subject=None, html=None, text=SMS)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    assert version["subject"] is None and version["html"] is None and version["text"] == SMS
    r = create(client, settings, channel="sms", html=None, text=SMS)
    assert r.status_code == 422
    assert r.json()["detail"] == [{"field": "subject", "reason": "an SMS has only a text"}]


def test_a_long_template_is_taken_beyond_the_json_body_limit(api):
    client, settings = api
    paragraph = "<p>" + "Programme détaillé de la réunion. " * 40 + "</p>"
    html = paragraph * (settings.max_body_bytes // len(paragraph) + 2) + HTML
    assert len(html.encode()) > settings.max_body_bytes
    r = create(client, settings, html=html)
    assert r.status_code == 201, r.text[:300]


# ---------------------------------------------------------------- the federation tree


def test_templates_are_inherited_down_the_tree_and_written_only_in_ones_subtree(api):
    client, settings = api
    national = created(client, settings, ROOT, name="National")
    paris = created(client, settings, PARIS, name="Paris")
    lyon = created(client, settings, LYON, name="Lyon")

    def names(path):
        r = client.get("/api/v1/templates", headers=headers(settings, path))
        assert r.status_code == 200, r.text
        return sorted(t["name"] for t in r.json()["items"])

    assert names(P11) == ["National", "Paris"]  # its ancestors'
    assert names(PARIS) == ["National", "Paris"]
    assert names(LYON) == ["Lyon", "National"]
    assert names(ROOT) == ["Lyon", "National", "Paris"]  # its subtree's

    def status(path, template_id, method="GET", suffix="", **kwargs):
        url = f"/api/v1/templates/{template_id}{suffix}"
        return client.request(method, url, headers=headers(settings, path), **kwargs).status_code

    assert status(P11, national) == 200
    assert status(P11, national, suffix="/versions/1") == 200
    assert status(PARIS, lyon) == 404  # a sibling's: not found, whatever the reason
    assert status(PARIS, lyon, suffix="/versions/1") == 404
    parts = {"subject": "Nouveau", "html": HTML}
    # an ancestor's template is used as it is, not edited
    assert status(PARIS, national, "POST", "/versions", json=parts) == 404
    assert status(PARIS, national, "PUT", "/versions/1", json=parts) == 404
    assert status(ROOT, paris, "POST", "/versions", json=parts) == 201

    svc = templates_service(client)
    usable = client.portal.call(svc.version_for_campaign, P11, national, 1, Channel.email)
    assert usable["template_id"] == national
    for path, foreign in ((PARIS, lyon), (ROOT, paris)):  # a sibling's, a descendant's
        with pytest.raises(NotFound):
            client.portal.call(svc.version_for_campaign, path, foreign, 1, Channel.email)
    with pytest.raises(InvalidField) as wrong:
        client.portal.call(svc.version_for_campaign, PARIS, paris, 1, Channel.sms)
    assert wrong.value.field == "channel"


# ---------------------------------------------------------------- versions


def test_editing_makes_a_new_version_and_every_version_is_kept(api):
    client, settings = api
    template_id = created(client, settings)
    new_html = HTML.replace("jeudi", "vendredi")
    r = client.post(
        f"/api/v1/templates/{template_id}/versions",
        json={"subject": SUBJECT, "html": new_html},
        headers=headers(settings),
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2

    detail = client.get(f"/api/v1/templates/{template_id}", headers=headers(settings)).json()
    assert detail["latest_version"] == 2
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    v1 = client.get(f"/api/v1/templates/{template_id}/versions/1", headers=headers(settings))
    v2 = client.get(f"/api/v1/templates/{template_id}/versions/2", headers=headers(settings))
    assert "jeudi" in v1.json()["html"] and "vendredi" in v2.json()["html"]
    missing = client.get(f"/api/v1/templates/{template_id}/versions/3", headers=headers(settings))
    assert missing.status_code == 404


def test_a_frozen_version_never_changes_but_the_template_gets_new_ones(api):
    client, settings = api
    template_id = created(client, settings)
    url = f"/api/v1/templates/{template_id}/versions"
    fix = {"subject": SUBJECT, "html": HTML.replace("19h", "19h30")}

    # not used yet: corrected in place
    r = client.put(f"{url}/1", json=fix, headers=headers(settings))
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 2 and "19h30" in r.json()["html"]
    # a correction is checked like a new template, and a refused one changes nothing
    r = client.put(
        f"{url}/1", json={"subject": SUBJECT, "html": "<p>x</p>"}, headers=headers(settings)
    )
    assert r.status_code == 422

    svc = templates_service(client)
    frozen = client.portal.call(svc.freeze, template_id, 1)
    assert frozen["frozen"] is True and "19h30" in frozen["parts"]["html"]
    again = client.portal.call(svc.freeze, template_id, 1)
    assert again["frozen_at"] == frozen["frozen_at"]  # idempotent

    r = client.put(f"{url}/1", json={"subject": SUBJECT, "html": HTML}, headers=headers(settings))
    assert r.status_code == 409
    assert r.json()["error"] == "version_frozen"
    assert "frozen" in r.json()["detail"]
    assert "19h30" in client.get(f"{url}/1", headers=headers(settings)).json()["html"]

    r = client.post(url, json={"subject": SUBJECT, "html": HTML}, headers=headers(settings))
    assert r.status_code == 201 and r.json()["version"] == 2 and not r.json()["frozen"]

    with pytest.raises(NotFound):
        client.portal.call(svc.freeze, template_id, 9)


def test_the_dispatcher_renders_a_frozen_version_from_its_compiled_cache(api):
    client, settings = api
    template_id = created(client, settings)
    svc = templates_service(client)
    client.portal.call(svc.freeze, template_id, 1)
    first = client.portal.call(svc.compiled, template_id, 1)
    assert client.portal.call(svc.compiled, template_id, 1) is first
    from messaging.templates.domain import render

    out = render(
        first,
        {"given_name": "Zoé", "email": "zoe@example.org"},
        unsubscribe_url="https://x.example/u?token=t",
        origin="Vous avez signé la pétition.",
        sender="Parti Exemple",
        campaign_name="Rentrée",
    )
    assert out.subject == "Rentrée : bonjour Zoé"
    assert 'href="https://x.example/u?token=t"' in out.html


# ---------------------------------------------------------------- preview


def preview(client, settings, template_id, body, version=1, path=PARIS, role=Role.campaign_manager):
    return client.post(
        f"/api/v1/templates/{template_id}/versions/{version}/preview",
        json=body,
        headers=headers(settings, path, role),
    )


def test_preview_for_given_fields(api):
    client, settings = api
    template_id = created(client, settings)
    r = preview(
        client,
        settings,
        template_id,
        {"contact": {"given_name": "<Zoé>"}, "campaign_name": "Rentrée"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["subject"] == "Rentrée : bonjour <Zoé>"
    assert "Bonjour &lt;Zoé&gt;," in out["html"]
    assert "Bonjour <Zoé>," in out["text"]
    assert "Parti Exemple" in out["text"]  # the sender of MESSAGING_MAIL_FROM
    assert f"{UNSUBSCRIBE_BASE}?token=preview" in out["text"]
    assert out["sms"] is None

    r = preview(client, settings, template_id, {"contact": {}})
    assert r.status_code == 200 and "Bonjour ami," in r.json()["text"]


def test_preview_for_a_contact_of_ones_subtree(api):
    client, settings = api
    template_id = created(
        client,
        settings,
        ROOT,
        html=HTML.replace(
            "<p>Réunion", "<p>{{ contact.federation_name | default('?') }} : réunion"
        ),
    )
    seed_contact(settings, "ana", P11, given_name="Ana")
    seed_contact(settings, "leo", LYON, given_name="Léo")

    r = preview(client, settings, template_id, {"contact_id": "ana"})
    assert r.status_code == 200, r.text
    assert "Bonjour Ana," in r.json()["text"]
    assert "p11 : réunion" in r.json()["text"]  # the contact's federation, by name
    r = preview(client, settings, template_id, {"contact_id": "leo"})
    assert r.status_code == 404
    r = preview(client, settings, template_id, {"contact_id": "nobody"})
    assert r.status_code == 404


def test_preview_refuses_bad_requests_and_unrenderable_output(api):
    client, settings = api
    template_id = created(client, settings, html=HTML + "<p>{{ origin }}</p>" * 200)
    r = preview(client, settings, template_id, {})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "contact"
    r = preview(client, settings, template_id, {"contact": {}, "contact_id": "ana"})
    assert r.status_code == 422
    r = preview(client, settings, template_id, {"contact": {"salary": "1"}})
    assert r.status_code == 422
    # 201 times an origin of 1,000 characters: beyond MESSAGING_TEMPLATE_RENDER_MAX_CHARS
    r = preview(client, settings, template_id, {"contact": {}, "origin": "x" * 1000})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "html"
    assert (
        f"more than {settings.template_render_max_chars} characters"
        in r.json()["detail"][0]["reason"]
    )


# ---------------------------------------------------------------- roles


def test_who_may_write_read_and_preview(api):
    client, settings = api
    template_id = created(client, settings)
    parts = {"subject": SUBJECT, "html": HTML}
    for role, write, read, look in [
        (Role.admin, 201, 200, 200),
        (Role.campaign_manager, 201, 200, 200),
        (Role.secretary, 403, 200, 200),
        (Role.viewer, 403, 200, 403),
        (Role.treasurer, 403, 403, 403),
        (Role.dpo, 403, 403, 403),
    ]:
        h = headers(settings, PARIS, role)
        r = client.post(f"/api/v1/templates/{template_id}/versions", json=parts, headers=h)
        assert r.status_code == write, role
        assert client.get(f"/api/v1/templates/{template_id}", headers=h).status_code == read
        r = preview(client, settings, template_id, {"contact": {}}, role=role)
        assert r.status_code == look, role
    assert client.get("/api/v1/templates").status_code == 401
