import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, ServiceSettings


class DemoSettings(ServiceSettings):
    service_name = "demo"
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")


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
    with pytest.raises(ValidationError, match="DEMO_IDENTITY_SECRET"):
        DemoSettings()
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", "a-strong-secret-of-32-characters!")
    assert DemoSettings().identity_secret != DEV_SECRET


def test_limits_are_validated(monkeypatch):
    monkeypatch.setenv("DEMO_CONSUMER_MAX_RETRIES", "-1")
    with pytest.raises(ValidationError, match="consumer_max_retries"):
        DemoSettings()
