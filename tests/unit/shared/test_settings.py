import pytest
from pydantic import ValidationError
from support import DemoSettings
from tribune_shared.settings import DEV_SECRET, Environment


def test_service_prefix_wins_over_platform_fallback(monkeypatch):
    monkeypatch.setenv("TRIBUNE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("TRIBUNE_HTTP_PORT", "9000")
    monkeypatch.setenv("DEMO_HTTP_PORT", "9100")
    s = DemoSettings()
    assert s.kafka_bootstrap_servers == "kafka:9092"
    assert s.http_port == 9100


def test_database_and_topic_names_carry_prefixes(monkeypatch):
    monkeypatch.setenv("TRIBUNE_DATABASE_PREFIX", "t1_")
    monkeypatch.setenv("TRIBUNE_TOPIC_PREFIX", "t1.")
    s = DemoSettings()
    assert s.database_name == "t1_demo"
    assert s.topic("contact-created") == "t1.contact-created"


def test_production_refuses_default_secret(monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "production")
    monkeypatch.setenv("TRIBUNE_VAULT_KEK", "a-strong-key-encryption-key-0123456789")
    with pytest.raises(ValidationError, match="DEMO_IDENTITY_SECRET"):
        DemoSettings()
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", "a-strong-secret-of-32-characters!")
    assert DemoSettings().identity_secret != DEV_SECRET


def test_limits_are_validated(monkeypatch):
    monkeypatch.setenv("DEMO_CONSUMER_MAX_RETRIES", "-1")
    with pytest.raises(ValidationError, match="consumer_max_retries"):
        DemoSettings()


@pytest.fixture
def unset_environment(monkeypatch):
    """No TRIBUNE_/DEMO_ setting at all (the suite's conftest says development)."""
    import os

    for key in list(os.environ):
        if key.startswith(("TRIBUNE_", "DEMO_")):
            monkeypatch.delenv(key)


def test_an_unset_environment_is_production_and_refuses_the_published_dev_secret(
    unset_environment,
):
    # The finding: with TRIBUNE_ENVIRONMENT unset, anyone could sign an admin's identity
    # with the secret published in the repository. Now the process does not start.
    with pytest.raises(ValidationError) as refused:
        DemoSettings()
    message = str(refused.value)
    assert "DEMO_IDENTITY_SECRET (or TRIBUNE_IDENTITY_SECRET)" in message
    assert "TRIBUNE_ENVIRONMENT=development" in message
    assert "unset means production" in message


def test_explicit_development_accepts_the_dev_defaults(unset_environment, monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    settings = DemoSettings()
    assert settings.environment is Environment.development
    assert settings.identity_secret == DEV_SECRET


class ExtraSecretSettings(DemoSettings):
    #: a secret a service forgot to list in secret_fields
    callback_secret: str = DEV_SECRET


def test_any_setting_left_at_the_dev_default_is_refused_outside_development(
    unset_environment, monkeypatch
):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "test")
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", "a-strong-secret-of-32-characters!")
    with pytest.raises(ValidationError, match="DEMO_CALLBACK_SECRET"):
        ExtraSecretSettings()
    monkeypatch.setenv("DEMO_CALLBACK_SECRET", "another-strong-secret-0123456789ab")
    assert ExtraSecretSettings().callback_secret.startswith("another")


STRONG_A = "a" * 40
STRONG_B = "b" * 40


def test_event_signing_keys_come_per_producer_and_rotate(unset_environment, monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "test")
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", "a-strong-secret-of-32-characters!")
    monkeypatch.setenv("TRIBUNE_EVENT_SIGNING_KEYS__CONTACTS", f"{STRONG_A},{STRONG_B}")
    monkeypatch.setenv("DEMO_EVENT_SIGNING_KEYS__CONSENT", STRONG_B)
    settings = DemoSettings()
    # the first key signs, both verify (a rotation in progress)
    assert settings.event_keys("contacts") == (STRONG_A.encode(), STRONG_B.encode())
    assert settings.event_keys("consent") == (STRONG_B.encode(),)
    assert STRONG_A not in repr(settings)  # secrets stay out of logs


def test_event_signing_keys_are_derived_outside_production_only(unset_environment, monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    dev = DemoSettings()
    assert dev.event_keys("contacts") == DemoSettings().event_keys("contacts")  # processes agree
    assert dev.event_keys("contacts") != dev.event_keys("consent")
    # production derives nothing: a missing key is missing (the worker does not start)
    production = dev.model_copy(update={"environment": Environment.production})
    assert production.event_keys("contacts") == ()


def test_a_short_event_signing_key_is_refused(unset_environment, monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "test")
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", "a-strong-secret-of-32-characters!")
    monkeypatch.setenv("TRIBUNE_EVENT_SIGNING_KEYS__CONTACTS", "short")
    with pytest.raises(ValidationError, match="EVENT_SIGNING_KEYS__CONTACTS"):
        DemoSettings()


def test_kafka_sasl_needs_its_credentials_and_tls_files_need_tls(unset_environment, monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    monkeypatch.setenv("TRIBUNE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="DEMO_KAFKA_SASL_USERNAME"):
        DemoSettings()
    monkeypatch.setenv("DEMO_KAFKA_SASL_USERNAME", "contacts")
    monkeypatch.setenv("DEMO_KAFKA_SASL_PASSWORD", "pw")
    assert DemoSettings().kafka_sasl_mechanism == "SCRAM-SHA-512"
    monkeypatch.setenv("TRIBUNE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TRIBUNE_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    with pytest.raises(ValidationError, match="SASL_SSL"):
        DemoSettings()
    monkeypatch.setenv("TRIBUNE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("TRIBUNE_KAFKA_SSL_CERTFILE", "/etc/client.pem")
    with pytest.raises(ValidationError, match="KAFKA_SSL_KEYFILE"):
        DemoSettings()
    monkeypatch.setenv("TRIBUNE_KAFKA_SECURITY_PROTOCOL", "SASL_SCRAM")
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        DemoSettings()
