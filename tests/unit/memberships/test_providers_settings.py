"""Provider settings: a provider without a secret is off; a secret that is set must be
strong outside development; limits are bounded."""

from __future__ import annotations

import ipaddress
import os

import pytest
from memberships.settings import MembershipsSettings
from pydantic import ValidationError

STRONG = "a-strong-secret-of-32-characters!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("MEMBERSHIPS_", "TRIBUNE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")


def production(monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "production")
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", STRONG)
    monkeypatch.setenv("TRIBUNE_VAULT_KEK", STRONG + "kek")
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", STRONG + "x")


def test_defaults_turn_both_providers_off():
    s = MembershipsSettings()
    assert s.stripe_webhook_secret is None and s.helloasso_signature_key is None
    assert (s.stripe_tolerance_seconds, s.stripe_dispute_reversal) == (300, "lost")
    assert s.helloasso_allowed_ips == []
    assert s.stripe_max_body_bytes == s.helloasso_max_body_bytes == 65_536


def test_production_starts_with_the_providers_off(monkeypatch):
    production(monkeypatch)
    assert MembershipsSettings().stripe_webhook_secret is None


@pytest.mark.parametrize(
    "variable", ["MEMBERSHIPS_STRIPE_WEBHOOK_SECRET", "MEMBERSHIPS_HELLOASSO_SIGNATURE_KEY"]
)
def test_production_refuses_a_short_provider_secret(monkeypatch, variable):
    production(monkeypatch)
    monkeypatch.setenv(variable, "whsec_short")
    with pytest.raises(ValidationError, match=variable):
        MembershipsSettings()


def test_production_accepts_strong_provider_secrets(monkeypatch):
    production(monkeypatch)
    monkeypatch.setenv("MEMBERSHIPS_STRIPE_WEBHOOK_SECRET", "whsec_" + STRONG)
    monkeypatch.setenv("MEMBERSHIPS_HELLOASSO_SIGNATURE_KEY", STRONG * 2)
    s = MembershipsSettings()
    assert s.stripe_webhook_secret == "whsec_" + STRONG


def test_development_accepts_a_short_secret():
    assert MembershipsSettings(stripe_webhook_secret="dev").stripe_webhook_secret == "dev"


def test_the_allow_list_reads_networks(monkeypatch):
    monkeypatch.setenv("MEMBERSHIPS_HELLOASSO_ALLOWED_IPS", '["51.138.206.200", "4.233.135.0/24"]')
    nets = MembershipsSettings().helloasso_allowed_ips
    assert ipaddress.ip_address("4.233.135.234") in nets[1]
    assert ipaddress.ip_address("51.138.206.200") in nets[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("stripe_tolerance_seconds", 0),
        ("stripe_tolerance_seconds", 3601),
        ("stripe_max_body_bytes", 100),
        ("helloasso_max_body_bytes", 2_000_000),
        ("stripe_dispute_reversal", "won"),
        ("helloasso_allowed_ips", ["not-a-network"]),
    ],
)
def test_out_of_bounds_values_are_refused(name, value):
    with pytest.raises(ValidationError, match=name):
        MembershipsSettings(**{name: value})
