"""Public forms over the real store: a form defined through the API with a consent text
that reached contacts as consent-text-published, its page, a submission queued as one
document with its form-submitted event, the abuse rules (honeypot, fill time, rate limit,
body size), tenancy (another federation's form is 404) and CORS."""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from contacts.forms.handlers import text_handlers
from contacts.forms.store import SUBMISSIONS, TEXTS
from contacts.main import create_app
from contacts.settings import ContactsSettings
from fastapi.testclient import TestClient
from support import deliver, run_with_store, seed_federations, signed_headers
from tribune_shared.auth import Role
from tribune_shared.client_info import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import ConsentTextPublishedV1
from tribune_shared.outbox import OUTBOX, unpack_batch

pytestmark = pytest.mark.integration

TREE = ("/root/", "/root/paris/", "/root/paris/p11/", "/root/lyon/")
PARIS = "/root/paris/"
LYON = "/root/lyon/"
FORMS = "/api/v1/forms"
PUBLIC = "/api/v1/public/forms"
BODY = "J'accepte que la fédération m'écrive par email au sujet de cette pétition."
SITE = "https://www.parti.example"
PERSON = {CLIENT_IP_HEADER: "203.0.113.7", CLIENT_USER_AGENT_HEADER: "Firefox/140 (Android)"}
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


def text_published(
    version: str = "petition-v1",
    body: str = BODY,
    path: str = "/root/",
    revision: int = 1,
    withdrawn: bool = False,
    text_id: str = "t1",
) -> Envelope:
    return new_envelope(
        ConsentTextPublishedV1(
            text_id=text_id,
            version=version,
            title="Nouvelles de la pétition",
            body=body,
            sha256=hashlib.sha256(body.encode()).hexdigest(),
            withdrawn=withdrawn,
            revision=revision,
        ),
        producer="consent",
        federation_id=path.strip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )


def project(settings, *envelopes: Envelope) -> None:
    async def work(store):
        await deliver(store, text_handlers(store), *envelopes)

    run_with_store(settings, work)


def read(settings, collection: str, query: dict | None = None) -> list[dict]:
    async def work(store):
        return await store[collection].find(query or {}).to_list()

    return run_with_store(settings, work)


def submitted_events(settings) -> list[Envelope]:
    events = []
    for row in read(settings, OUTBOX):
        envelopes = (
            unpack_batch(row) if "batch" in row else [Envelope.model_validate(row["envelope"])]
        )
        events += [e for e in envelopes if e.type == "form-submitted"]
    return events


@contextmanager
def forms_app(monkeypatch, **env: Any) -> Iterator[tuple[TestClient, ContactsSettings]]:
    # no cache of forms and counters: each request sees the last change
    defaults = {"FORMS_MIN_FILL_SECONDS": 0, "FORMS_CACHE_SECONDS": 0}
    for name, value in {**defaults, "FORMS_COUNTER_CACHE_SECONDS": 0, **env}.items():
        monkeypatch.setenv(f"CONTACTS_{name}", str(value))
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, *TREE)
        project(settings, text_published())
        yield client, settings


@pytest.fixture
def api(isolated_env, monkeypatch):
    with forms_app(monkeypatch) as pair:
        yield pair


def staff(settings, path=PARIS, role=Role.secretary):
    return signed_headers(settings, path, role)


PETITION = {
    "kind": "petition",
    "title": "Sauvons la ligne 7",
    "intro": "Signez pour la ligne 7.",
    "thank_you": "Merci d'avoir signé !",
    "fields": [
        {"name": "given_name", "required": True},
        {"name": "family_name"},
        {"name": "email", "required": True},
        {"name": "postcode"},
    ],
    "custom_fields": [{"key": "usager", "label": "J'utilise la ligne", "type": "boolean"}],
    "consents": [{"channel": "email", "purpose": "news", "text_version": "petition-v1"}],
    "goal": 1000,
    "tags": ["ligne 7"],
    "reference": "PET-L7",
    "allowed_origins": [SITE],
}


def new_form(client, settings, path=PARIS, **changes) -> dict:
    r = client.post(FORMS, json={**PETITION, **changes}, headers=staff(settings, path))
    assert r.status_code == 201, r.text
    return r.json()


def page_token(page_html: str) -> str:
    match = re.search(r'name="_token" value="([^"]+)"', page_html)
    assert match, page_html
    return html.unescape(match.group(1))


def sign(client, form_id, token, headers=PERSON, **answers) -> Any:
    data = {
        "_token": token,
        "given_name": "Ana",
        "email": "Ana.Martin@Example.org",
        "postcode": "75011",
        "c_usager": "on",
        "consent": "email:news",
        "website": "",
        **answers,
    }
    return client.post(f"{PUBLIC}/{form_id}", data=data, headers={**URLENCODED, **headers})


# ---------------------------------------------------------------- the consent texts' copy


def test_the_newest_state_of_a_text_is_kept_whatever_the_order(api):
    _, settings = api
    newer = text_published(body="Texte modifié.", revision=2)
    project(settings, newer, text_published(revision=1), newer)
    [copy] = read(settings, TEXTS)
    assert copy["body"] == "Texte modifié." and copy["revision"] == 2
    assert copy["sha256"] == hashlib.sha256("Texte modifié.".encode()).hexdigest()


def test_a_box_needs_a_text_of_the_federation_or_its_ancestors(api):
    client, settings = api
    project(settings, text_published(version="lyon-only", path=LYON, text_id="t2"))
    r = client.post(
        FORMS,
        json={
            **PETITION,
            "consents": [{"channel": "email", "purpose": "news", "text_version": "lyon-only"}],
        },
        headers=staff(settings),
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "consents.0.text_version"
    project(settings, text_published(revision=2, withdrawn=True))  # consent deleted it
    r = client.post(FORMS, json=PETITION, headers=staff(settings))
    assert r.status_code == 422, r.text
    assert read(settings, "forms") == []


# ---------------------------------------------------------------- definitions


def test_define_list_change_and_close_a_form(api):
    client, settings = api
    form = new_form(client, settings)
    assert form["status"] == "open" and form["federation_path"] == PARIS
    assert form["public_path"] == f"{PUBLIC}/{form['id']}"
    listed = client.get(FORMS, headers=staff(settings, "/root/", Role.viewer)).json()
    assert [f["id"] for f in listed["items"]] == [form["id"]]
    r = client.patch(
        f"{FORMS}/{form['id']}",
        json={"title": "Ligne 7 : signez", "version": 1},
        headers=staff(settings, role=Role.campaign_manager),
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    stale = client.patch(
        f"{FORMS}/{form['id']}", json={"title": "x", "version": 1}, headers=staff(settings)
    )
    assert stale.status_code == 409
    viewer = client.patch(
        f"{FORMS}/{form['id']}", json={"title": "x"}, headers=staff(settings, role=Role.viewer)
    )
    assert viewer.status_code == 403
    closed = client.post(f"{FORMS}/{form['id']}/close", headers=staff(settings))
    assert closed.json()["status"] == "closed"
    page = client.get(f"{PUBLIC}/{form['id']}")
    assert page.status_code == 200 and "Ce formulaire est clos." in page.text
    assert "<form" not in page.text
    client.post(f"{FORMS}/{form['id']}/archive", headers=staff(settings))
    assert client.get(f"{PUBLIC}/{form['id']}.json").status_code == 404


def test_another_federations_form_is_404(api):
    client, settings = api
    form = new_form(client, settings)
    for call in (
        lambda h: client.get(f"{FORMS}/{form['id']}", headers=h),
        lambda h: client.patch(f"{FORMS}/{form['id']}", json={"title": "x"}, headers=h),
        lambda h: client.post(f"{FORMS}/{form['id']}/close", headers=h),
    ):
        assert call(staff(settings, LYON)).status_code == 404
    assert client.get(FORMS, headers=staff(settings, LYON)).json()["items"] == []
    r = client.post(FORMS, json={**PETITION, "federation_id": "lyon"}, headers=staff(settings))
    assert r.status_code == 404


def test_a_bad_definition_is_refused_with_its_field(api):
    client, settings = api
    r = client.post(
        FORMS, json={**PETITION, "fields": [{"name": "given_name"}]}, headers=staff(settings)
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "fields"
    assert read(settings, "forms") == []


# ---------------------------------------------------------------- the page and a submission


def test_the_page_shows_the_exact_text_beside_an_unticked_box(api):
    client, settings = api
    form = new_form(client, settings)
    page = client.get(f"{PUBLIC}/{form['id']}")
    assert page.status_code == 200
    assert '<html lang="fr">' in page.text
    assert html.escape(BODY) in page.text
    box = re.search(r'<input type="checkbox" id="tf-consent-0"[^>]*>', page.text).group(0)
    assert "checked" not in box and 'aria-describedby="tf-consent-0-text"' in box
    assert '<label for="tf-email">' in page.text
    assert "<script>" not in page.text and "style=" not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and f"frame-ancestors 'self' {SITE}" in csp
    english = client.get(f"{PUBLIC}/{form['id']}", headers={"Accept-Language": "en-GB,en"})
    assert '<html lang="en">' in english.text and "Sign the petition" in english.text
    css = client.get(re.search(r'href="([^"]+form\.css[^"]*)"', page.text).group(1))
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_a_valid_submission_is_one_queued_document_and_one_event(api):
    client, settings = api
    form = new_form(client, settings)
    token = page_token(client.get(f"{PUBLIC}/{form['id']}").text)
    r = sign(client, form["id"], token)
    assert r.status_code == 200, r.text
    assert html.escape("Merci d'avoir signé !") in r.text
    [doc] = read(settings, SUBMISSIONS)
    assert doc["status"] == "queued" and doc["form_id"] == form["id"]
    assert doc["federation_path"] == PARIS
    assert doc["answers"] == {
        "given_name": "Ana",
        "email": "Ana.Martin@example.org",
        "postcode": "75011",
        "custom": {"usager": True},
    }
    assert doc["consents"] == [
        {
            "channel": "email",
            "purpose": "news",
            "text_version": "petition-v1",
            "text_sha256": hashlib.sha256(BODY.encode()).hexdigest(),
        }
    ]
    assert doc["proof"]["ip"] == "203.0.113.0/24"
    assert doc["proof"]["user_agent"] == "Firefox/140 (Android)"
    assert doc["proof"]["page"] == f"{PUBLIC}/{form['id']}"
    assert doc["form"] == {
        "kind": "petition",
        "title": "Sauvons la ligne 7",
        "tags": ["ligne 7"],
        "reference": "PET-L7",
        "meeting_id": None,
    }
    [event] = submitted_events(settings)
    assert event.data["submission_id"] == doc["_id"] and event.federation_path == PARIS
    # the same page sent again (a double click) answers the first submission: nothing new
    again = sign(client, form["id"], token)
    assert again.status_code == 200 and len(read(settings, SUBMISSIONS)) == 1


def test_a_field_error_shows_the_form_again_with_the_values_and_stores_nothing(api):
    client, settings = api
    form = new_form(client, settings)
    token = page_token(client.get(f"{PUBLIC}/{form['id']}").text)
    r = sign(client, form["id"], token, email="ana@", given_name="Ana<b>")
    assert r.status_code == 422
    assert 'aria-describedby="tf-email-error" aria-invalid="true"' in r.text
    assert "Saisissez une adresse email valide" in r.text
    assert 'value="Ana&lt;b&gt;"' in r.text  # the person's value, escaped
    assert re.search(r'name="consent" value="email:news"[^>]*checked', r.text)
    assert read(settings, SUBMISSIONS) == [] and submitted_events(settings) == []


def test_a_site_posts_json_with_cors(api):
    client, settings = api
    form = new_form(client, settings)
    definition = client.get(f"{PUBLIC}/{form['id']}.json", headers={"Origin": SITE})
    assert definition.headers["access-control-allow-origin"] == SITE
    body = definition.json()
    assert body["consents"][0]["body"] == BODY and body["signatures"] == 0
    preflight = client.options(
        f"{PUBLIC}/{form['id']}",
        headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SITE
    refused = client.options(f"{PUBLIC}/{form['id']}", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    payload = {
        "token": body["token"],
        "answers": {"given_name": "Léa", "email": "lea@example.org"},
        "consents": [{"channel": "email", "purpose": "news"}],
    }
    r = client.post(f"{PUBLIC}/{form['id']}", json=payload, headers={"Origin": SITE, **PERSON})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    assert r.headers["access-control-allow-origin"] == SITE
    fresh = client.get(f"{PUBLIC}/{form['id']}.json").json()["token"]
    bad = client.post(
        f"{PUBLIC}/{form['id']}",
        json={**payload, "token": fresh, "answers": {"given_name": "Léa", "email": "nope"}},
        headers={"Origin": SITE},
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "email"
    assert bad.headers["access-control-allow-origin"] == SITE
    assert len(read(settings, SUBMISSIONS)) == 1
    counter = client.get(f"{PUBLIC}/{form['id']}/counter").json()
    assert counter == {"signatures": 0, "goal": 1000}  # applied by the worker, not yet


# ---------------------------------------------------------------- abuse rules


def test_the_honeypot_is_refused_with_a_message(api):
    client, settings = api
    form = new_form(client, settings)
    token = page_token(client.get(f"{PUBLIC}/{form['id']}").text)
    r = sign(client, form["id"], token, website="http://spam.example")
    assert r.status_code == 422 and "un champ caché" in r.text
    j = client.post(
        f"{PUBLIC}/{form['id']}",
        json={"token": token, "answers": {"email": "a@example.org"}, "website": "x"},
    )
    assert j.status_code == 422 and j.json()["detail"][0]["field"] == "website"
    assert read(settings, SUBMISSIONS) == []


def test_a_missing_or_forged_token_gets_a_fresh_page(api):
    client, settings = api
    form = new_form(client, settings)
    token = page_token(client.get(f"{PUBLIC}/{form['id']}").text)
    r = sign(client, form["id"], token[:-3] + "AAA")
    assert r.status_code == 422 and "rechargée" in r.text
    assert page_token(r.text) != token[:-3] + "AAA"
    assert sign(client, form["id"], page_token(r.text)).status_code == 200


def test_too_fast_rate_limits_and_size(isolated_env, monkeypatch):
    with forms_app(
        monkeypatch, FORMS_MIN_FILL_SECONDS=600, FORMS_IP_BURST=2, FORMS_IP_RATE_PER_SECOND=0.001
    ) as (client, settings):
        form = new_form(client, settings)
        token = page_token(client.get(f"{PUBLIC}/{form['id']}").text)
        fast = sign(client, form["id"], token)
        assert fast.status_code == 422 and "très vite" in fast.text
        assert page_token(fast.text) == token  # the same page: waiting is enough
        big = sign(client, form["id"], token, family_name="x" * 20_000)
        assert big.status_code == 413 and "trop longues" in big.text
        limited = sign(client, form["id"], token)
        assert limited.status_code == 429 and "réessayez dans" in limited.text
        assert int(limited.headers["retry-after"]) >= 1
        other = {**PERSON, CLIENT_IP_HEADER: "198.51.100.9"}
        assert sign(client, form["id"], token, headers=other).status_code == 422  # not 429
        j = client.post(
            f"{PUBLIC}/{form['id']}",
            json={"token": token},
            headers={CLIENT_IP_HEADER: PERSON[CLIENT_IP_HEADER]},
        )
        assert j.status_code == 429 and j.json()["error"] == "too_many_requests"
        assert read(settings, SUBMISSIONS) == []


def test_a_proof_of_work_form(api):
    from contacts.forms.domain import solve_proof_of_work

    client, settings = api
    form = new_form(client, settings, proof_of_work_bits=8)
    page = client.get(f"{PUBLIC}/{form['id']}").text
    assert 'data-pow-bits="8"' in page
    token = page_token(page)
    r = sign(client, form["id"], token)
    assert r.status_code == 422 and "anti-robot" in r.text
    token = page_token(r.text)
    r = sign(client, form["id"], token, _pow_nonce=solve_proof_of_work(token, 8))
    assert r.status_code == 200, r.text
    assert len(read(settings, SUBMISSIONS)) == 1


def test_json_definition_is_documented_in_openapi(api):
    client, _ = api
    spec = client.get("/openapi.json").json()
    assert f"{PUBLIC}/{{form_id}}.json" in spec["paths"]
    assert json.dumps(spec["paths"][f"{PUBLIC}/{{form_id}}"]["post"]).count("429") >= 1
