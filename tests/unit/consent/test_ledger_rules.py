"""Ledger rules beyond grant/revoke: double opt-in, tracking, texts, STOP, proof."""

from __future__ import annotations

import hashlib

import pytest
from consent.domain import (
    ConsentStatus,
    check_double_opt_in,
    check_tracking_channel,
    every_consent,
    is_stop_message,
    needs_entry,
    proof_of,
    text_sha256,
    unchanged_status,
)
from consent.settings import ConsentSettings
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import Channel

G, R, P = ConsentStatus.granted, ConsentStatus.revoked, ConsentStatus.pending


@pytest.mark.parametrize(
    ("current", "wanted", "needed", "reported"),
    [
        (None, P, True, P),
        (R, P, True, P),
        (P, P, False, P),  # asking again while a request is pending sends nothing new
        (G, P, False, G),  # who already consented is not asked to confirm
        (P, G, True, G),  # a user may record a direct grant while a request is pending
        (P, R, True, R),  # revoking cancels a pending request
        (None, R, True, R),
        (R, R, False, R),
        (G, G, False, G),
    ],
)
def test_pending_requests_follow_the_ledger_rules(current, wanted, needed, reported):
    assert needs_entry(current, wanted) is needed
    if not needed:
        assert unchanged_status(current, wanted) is reported


def test_tracking_consent_exists_only_for_email():
    check_tracking_channel(Channel.email, "tracking", "tracking")
    check_tracking_channel(Channel.sms, "news", "tracking")
    with pytest.raises(InvalidField) as refused:
        check_tracking_channel(Channel.sms, "tracking", "tracking")
    assert refused.value.field == "channel"


def test_double_opt_in_goes_by_email_only():
    check_double_opt_in(Channel.email)
    for channel in (Channel.sms, Channel.phone, Channel.post):
        with pytest.raises(InvalidField):
            check_double_opt_in(channel)


def test_everything_is_every_channel_and_purpose_plus_tracking():
    pairs = every_consent(["news", "fundraising"], "tracking")
    assert len(pairs) == 4 * 2 + 1
    assert (Channel.post, "fundraising") in pairs and (Channel.email, "tracking") in pairs
    assert (Channel.sms, "tracking") not in pairs


def test_a_text_hash_is_the_sha256_of_its_exact_bytes():
    body = "J'accepte de recevoir les actualités."
    assert text_sha256(body) == hashlib.sha256(body.encode("utf-8")).hexdigest()
    assert text_sha256(body) != text_sha256(body + " ")


def test_proof_keeps_text_version_and_hash_reference_and_minimised_origin():
    text = {"version": "2026-01", "sha256": "ab" * 32}
    proof = proof_of(
        text=text,
        reference="form-petition-42",
        client={"ip": "203.0.113.0/24", "user_agent": "Firefox/128.0"},
        extra={"request_id": "r1"},
    )
    assert proof == {
        "text_version": "2026-01",
        "text_hash": "ab" * 32,
        "reference": "form-petition-42",
        "ip": "203.0.113.0/24",
        "user_agent": "Firefox/128.0",
        "request_id": "r1",
    }
    assert proof_of(text=None, reference=None, client={}) == {}


KEYWORDS = ConsentSettings().stop_keywords


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop. ", "STOP 36180", "arrêt", "Stop SMS"])
def test_stop_messages_are_recognised(text):
    assert is_stop_message(text, KEYWORDS)


@pytest.mark.parametrize("text", ["", "Bonjour", "non stop", "stopper", "Merci, à jeudi"])
def test_other_messages_are_not_a_stop(text):
    assert not is_stop_message(text, KEYWORDS)


def test_settings_refuse_a_tracking_purpose_among_the_purposes(monkeypatch):
    monkeypatch.setenv("CONSENT_PURPOSES", '["news", "tracking"]')
    with pytest.raises(ValueError, match="tracking_purpose"):
        ConsentSettings()


def test_settings_refuse_default_secrets_outside_development(monkeypatch):
    monkeypatch.setenv("CONSENT_ENVIRONMENT", "production")
    for name in ("IDENTITY_SECRET", "UNSUBSCRIBE_SECRET", "WEBHOOK_SECRET", "VAULT_KEK"):
        monkeypatch.setenv(f"CONSENT_{name}", f"strong-{name.lower()}-0123456789abcdef012345")
    monkeypatch.delenv("TRIBUNE_SUPPRESSION_SALT", raising=False)
    monkeypatch.delenv("CONSENT_SUPPRESSION_SALT", raising=False)
    with pytest.raises(ValueError, match="CONSENT_SUPPRESSION_SALT"):
        ConsentSettings()
    monkeypatch.setenv("TRIBUNE_SUPPRESSION_SALT", "a-strong-platform-salt-0123456789abcdef")
    assert ConsentSettings().suppression_salt.startswith("a-strong")
