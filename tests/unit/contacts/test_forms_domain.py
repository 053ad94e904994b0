"""Public forms' pure rules: definitions, reading a person's answers, the abuse rules
(rate limits, honeypot, fill time, page tokens, proof of work), CSP, CORS and language."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
from contacts.domain import ContactRules
from contacts.forms.domain import (
    AcceptedPages,
    Availability,
    FormLimits,
    PageTokens,
    RateLimiter,
    RawSubmission,
    Refusal,
    availability,
    check_definition,
    check_page,
    content_security_policy,
    cors_headers,
    leading_zero_bits,
    normalise_origin,
    pick_language,
    pick_text,
    preflight_headers,
    proof_of_work_ok,
    read_answers,
    solve_proof_of_work,
    texts_digest,
    ticked_consents,
)
from tribune_shared.errors import InvalidFields
from tribune_shared.tokens import ExpiredToken, TamperedToken

RULES = ContactRules()
LIMITS = FormLimits()
TODAY = date(2026, 5, 1)
PETITION = {
    "kind": "petition",
    "title": "Sauvons la ligne 7",
    "fields": [
        {"name": "given_name", "required": True},
        {"name": "email", "required": False},
        {"name": "phone", "required": False},
        {"name": "postcode"},
    ],
    "consents": [{"channel": "email", "purpose": "news", "text_version": "v1"}],
    "tags": ["Ligne 7 ", "ligne 7"],
    "allowed_origins": ["https://Www.Parti.example/", "http://localhost:8080"],
}


def problems(exc: pytest.ExceptionInfo[InvalidFields]) -> dict[str, str]:
    return dict(exc.value.problems)


# ---------------------------------------------------------------- definitions


def test_a_definition_is_normalised():
    form = check_definition(PETITION, rules=RULES, limits=LIMITS)
    assert form["tags"] == ["ligne 7"]
    assert form["allowed_origins"] == ["https://www.parti.example", "http://localhost:8080"]
    assert form["fields"][0] == {"name": "given_name", "required": True, "label": ""}
    assert form["consents"] == [{"channel": "email", "purpose": "news", "text_version": "v1"}]


def test_a_form_asks_for_an_email_or_a_phone():
    raw = {**PETITION, "fields": [{"name": "given_name"}, {"name": "family_name"}]}
    with pytest.raises(InvalidFields) as exc:
        check_definition(raw, rules=RULES, limits=LIMITS)
    assert "fields" in problems(exc)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "poll"}, "kind"),
        ({"fields": [{"name": "email"}, {"name": "email"}]}, "fields.1.name"),
        ({"fields": [{"name": "email"}, {"name": "ssn"}]}, "fields.1.name"),
        (
            {"custom_fields": [{"key": "Size", "label": "Taille", "type": "text"}]},
            "custom_fields.0.key",
        ),
        (
            {"custom_fields": [{"key": "size", "label": "Taille", "type": "choice"}]},
            "custom_fields.0.choices",
        ),
        (
            {"custom_fields": [{"key": "age", "label": "Âge", "type": "number", "choices": ["1"]}]},
            "custom_fields.0.choices",
        ),
        ({"custom_fields": [{"key": "email", "label": "x", "type": "text"}]}, "custom_fields"),
        (
            {"consents": [{"channel": "fax", "purpose": "news", "text_version": "v1"}]},
            "consents.0.channel",
        ),
        (
            {"consents": [{"channel": "email", "purpose": "news", "text_version": "v1"}] * 2},
            "consents.1",
        ),
        ({"allowed_origins": ["https://a.example/page"]}, "allowed_origins.0"),
        ({"allowed_origins": ["*"]}, "allowed_origins.0"),
        ({"kind": "signup", "goal": 100}, "goal"),
        ({"kind": "event_rsvp"}, "meeting_id"),
        ({"meeting_id": "m1"}, "meeting_id"),
        ({"proof_of_work_bits": 40}, "proof_of_work_bits"),
        ({"title": "  "}, "title"),
    ],
)
def test_a_bad_definition_names_its_field(change, field):
    with pytest.raises(InvalidFields) as exc:
        check_definition({**PETITION, **change}, rules=RULES, limits=LIMITS)
    assert field in problems(exc)


def test_dates_must_be_in_order():
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(InvalidFields) as exc:
        check_definition(
            {**PETITION, "starts_at": start, "ends_at": start}, rules=RULES, limits=LIMITS
        )
    assert "ends_at" in problems(exc)


def test_a_patch_checks_only_what_it_sends():
    assert check_definition({"title": "Nouveau"}, rules=RULES, limits=LIMITS, partial=True) == {
        "title": "Nouveau"
    }


def test_origins_are_compared_exactly():
    assert normalise_origin("HTTPS://Site.Example:8443") == "https://site.example:8443"
    with pytest.raises(ValueError):
        normalise_origin("javascript:alert(1)")


def test_the_nearest_text_of_a_version_is_used_and_a_withdrawn_one_never():
    texts = [
        {"version": "v1", "federation_path": "/root/", "withdrawn": False, "sha256": "a"},
        {"version": "v1", "federation_path": "/root/paris/", "withdrawn": False, "sha256": "b"},
        {"version": "v2", "federation_path": "/root/paris/", "withdrawn": True, "sha256": "c"},
    ]
    assert pick_text("v1", texts)["sha256"] == "b"
    assert pick_text("v2", texts) is None


def test_availability_follows_status_and_dates():
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    form = {"status": "open", "starts_at": now + timedelta(hours=1), "ends_at": None}
    assert availability(form, now) is Availability.not_yet_open
    form = {"status": "open", "starts_at": None, "ends_at": now}
    assert availability(form, now) is Availability.ended
    assert availability({"status": "closed"}, now) is Availability.closed
    assert availability({"status": "open"}, now) is Availability.open


# ---------------------------------------------------------------- answers

FORM = check_definition(
    {
        **PETITION,
        "fields": [
            {"name": "given_name", "required": True},
            {"name": "email"},
            {"name": "phone"},
            {"name": "postcode"},
            {"name": "commune"},
            {"name": "birth_year"},
        ],
        "custom_fields": [
            {"key": "size", "label": "Taille", "type": "choice", "choices": ["S", "M"]},
            {"key": "adult", "label": "J'ai 18 ans", "type": "boolean", "required": True},
            {"key": "hours", "label": "Heures", "type": "number"},
        ],
    },
    rules=RULES,
    limits=LIMITS,
)


def read(answers, custom=None):
    raw = RawSubmission(answers=answers, custom=custom or {"adult": "on"})
    return read_answers(FORM, raw, RULES, max_answer_chars=50, today=TODAY)


def test_answers_are_normalised_as_contacts_does():
    answers = read(
        {
            "given_name": "  Ana  ",
            "email": "Ana@Example.ORG",
            "phone": "06 12 34 56 78",
            "postcode": "75011",
            "commune": "Paris",
            "birth_year": "1984",
        },
        {"size": "M", "adult": "on", "hours": "2,5"},
    )
    assert answers == {
        "given_name": "Ana",
        "email": "Ana@example.org",
        "phone": "+33612345678",
        "postcode": "75011",
        "commune": "Paris",
        "birth_year": 1984,
        "custom": {"size": "M", "adult": True, "hours": 2.5},
    }


def test_only_what_the_person_gave_is_kept():
    assert read({"given_name": "Ana", "email": "ana@example.org", "phone": ""}) == {
        "given_name": "Ana",
        "email": "ana@example.org",
        "custom": {"adult": True},
    }


def test_every_problem_is_named_on_the_form_field():
    with pytest.raises(InvalidFields) as exc:
        read(
            {"email": "not-an-email", "postcode": "7501", "birth_year": "84"},
            {"size": "XL"},
        )
    found = problems(exc)
    assert found["given_name"] == "required"
    assert found["email"].startswith("not a valid email")
    assert found["birth_year"]
    assert found["custom.size"].startswith("must be one of")
    assert found["custom.adult"] == "required"


def test_a_person_gives_an_email_or_a_phone():
    with pytest.raises(InvalidFields) as exc:
        read({"given_name": "Ana"})
    assert "email" in problems(exc)


def test_a_bad_postcode_lands_on_the_postcode_field():
    with pytest.raises(InvalidFields) as exc:
        read({"given_name": "Ana", "email": "ana@example.org", "postcode": "ABC"})
    assert "postcode" in problems(exc)


def test_only_ticked_offered_boxes_are_recorded_with_their_text_hash():
    boxes = [
        {"channel": "email", "purpose": "news", "text_version": "v1", "text_sha256": "h1"},
        {"channel": "sms", "purpose": "news", "text_version": "v2", "text_sha256": "h2"},
    ]
    assert ticked_consents(boxes, frozenset({("sms", "news")})) == [
        {"channel": "sms", "purpose": "news", "text_version": "v2", "text_sha256": "h2"}
    ]
    assert ticked_consents(boxes, frozenset()) == []
    with pytest.raises(InvalidFields):
        ticked_consents(boxes, frozenset({("email", "fundraising")}))


# ---------------------------------------------------------------- abuse rules


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_bucket_throttles_one_key_and_not_the_others():
    clock = Clock()
    limiter = RateLimiter(1.0, 3, max_keys=100, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0  # another client passes
    clock.now += 1.0
    assert limiter.take("a") == 0  # refilled at the rate


def test_a_client_at_a_hundred_per_second_mostly_waits():
    clock = Clock()
    limiter = RateLimiter(0.2, 10, max_keys=100, clock=clock)
    passed = 0
    for _ in range(100 * 30):  # 30 s at 100 per second
        clock.now += 0.01
        passed += limiter.take("bot") == 0
    assert passed <= 10 + 0.2 * 30 + 1
    assert limiter.take("person") == 0


def test_buckets_are_bounded():
    limiter = RateLimiter(1.0, 1, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        limiter.take(key)
    assert len(limiter._buckets) == 2


def test_a_page_accepted_once_answers_its_first_submission_until_it_expires():
    pages = AcceptedPages(max_entries=2)
    pages.remember("t1", "s1", expires_at=100)
    assert pages.get("t1", now=50) == "s1"
    assert pages.get("t1", now=101) is None
    pages.remember("t2", "s2", 100)
    pages.remember("t3", "s3", 100)
    assert pages.get("t1", 50) is None  # bounded: the oldest left


def test_page_tokens_carry_the_form_time_difficulty_and_texts():
    clock = Clock()
    tokens = PageTokens("x" * 32, ttl_seconds=60, clock=clock)
    token = tokens.issue("f1", 12, "abc")
    page = tokens.read(token)
    assert (page.form_id, page.issued_at, page.bits, page.texts) == ("f1", 1_000.0, 12, "abc")
    assert tokens.issue("f1", 12, "abc") != token  # each page its own
    with pytest.raises(TamperedToken):
        tokens.read(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])
    clock.now += 61
    with pytest.raises(ExpiredToken):
        tokens.read(token)


def check(raw: RawSubmission, page, *, now: float = 1_010.0, texts: str = "abc"):
    return check_page(page, raw, form_id="f1", texts=texts, now=now, min_fill_seconds=3)


def test_the_abuse_rules_of_a_page():
    clock = Clock()
    tokens = PageTokens("x" * 32, ttl_seconds=600, clock=clock)
    page = tokens.read(tokens.issue("f1", 0, "abc"))
    raw = RawSubmission(token=page.token)
    assert check(raw, page) is None
    assert check(RawSubmission(token=page.token, honeypot="http://spam"), page) is Refusal.honeypot
    assert check(raw, None) is Refusal.token_missing
    assert check(raw, page, now=1_001.0) is Refusal.too_fast
    assert check(raw, page, texts="changed") is Refusal.texts_changed
    other = tokens.read(tokens.issue("f2", 0, "abc"))
    assert check(raw, other) is Refusal.token_invalid


def test_a_proof_of_work_is_checked_with_one_hash():
    clock = Clock()
    tokens = PageTokens("x" * 32, ttl_seconds=600, clock=clock)
    page = tokens.read(tokens.issue("f1", 10, "abc"))
    assert check(RawSubmission(token=page.token), page) is Refusal.proof_of_work
    nonce = solve_proof_of_work(page.token, 10)
    digest = hashlib.sha256(f"{page.token}:{nonce}".encode()).digest()
    assert leading_zero_bits(digest) >= 10
    assert check(RawSubmission(token=page.token, pow_nonce=nonce), page) is None
    assert not proof_of_work_ok(page.token, "12a", 10)
    assert not proof_of_work_ok(page.token, "9" * 30, 10)


def test_leading_zero_bits():
    assert leading_zero_bits(b"\x00\x00\x01") == 23
    assert leading_zero_bits(b"\x80") == 0
    assert leading_zero_bits(b"\x0f\xff") == 4
    assert leading_zero_bits(b"\x00") == 8


def test_texts_digest_changes_with_a_text():
    box = {"channel": "email", "purpose": "news", "text_sha256": "a"}
    assert texts_digest([box]) != texts_digest([{**box, "text_sha256": "b"}])


# ---------------------------------------------------------------- headers, language


def test_the_csp_forbids_inline_code_and_frames_only_for_allowed_sites():
    csp = content_security_policy(["https://www.parti.example"])
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "form-action 'self'" in csp
    assert csp.endswith("frame-ancestors 'self' https://www.parti.example")


def test_cors_echoes_only_allowed_origins():
    allowed = ["https://www.parti.example"]
    assert (
        cors_headers("https://www.parti.example", allowed)["Access-Control-Allow-Origin"]
        == "https://www.parti.example"
    )
    assert "Access-Control-Allow-Origin" not in cors_headers("https://evil.example", allowed)
    assert "Access-Control-Allow-Origin" not in cors_headers(None, allowed)
    assert (
        preflight_headers("https://www.parti.example", allowed)["Access-Control-Allow-Methods"]
        == "GET, POST"
    )
    assert "Access-Control-Allow-Methods" not in preflight_headers("https://x.example", allowed)


@pytest.mark.parametrize(
    ("asked", "accept", "expected"),
    [
        (None, None, "fr"),
        ("en", "fr-FR", "en"),
        (None, "en-GB,en;q=0.9,fr;q=0.8", "en"),
        (None, "de-DE,fr;q=0.5,en;q=0.9", "en"),
        (None, "de-DE", "fr"),
        ("xx", "fr", "fr"),
    ],
)
def test_french_first_english_when_asked(asked, accept, expected):
    assert pick_language(asked, accept) == expected


def test_a_short_page_token_secret_is_refused_and_an_unset_one_is_derived():
    from contacts.forms.service import token_secret
    from contacts.settings import ContactsSettings
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="FORMS_TOKEN_SECRET"):
        ContactsSettings(forms_token_secret="short")
    derived = token_secret(ContactsSettings())
    assert len(derived) == 64 and derived != ContactsSettings().identity_secret
    assert token_secret(ContactsSettings(forms_token_secret="s" * 32)) == "s" * 32
