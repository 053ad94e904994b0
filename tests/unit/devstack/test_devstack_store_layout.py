"""The local stack's store layout (TRIBUNE_STORES): by default each service that owns data
gets a store process of its own, and the gateway and the key vault keep the main one."""

from __future__ import annotations

from pathlib import Path

import pytest
from consent.settings import ConsentSettings
from contacts.settings import ContactsSettings
from gateway.settings import GatewaySettings
from tribune_devstack.infra import infra_names
from tribune_devstack.platform import stack_env
from tribune_devstack.stack import LAYOUT_FILE, OWN_STORE_SERVICES, StackConfig


def _cfg(tmp_path: Path, **env: str) -> StackConfig:
    return StackConfig.from_env({"TRIBUNE_STATE_DIR": str(tmp_path / "stack"), **env})


def test_by_default_each_service_that_owns_data_has_a_store_of_its_own(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg.store_layout == "per-service"
    assert cfg.stores == {
        "store": 27017,
        "store-contacts": 27018,
        "store-consent": 27019,
        "store-memberships": 27020,
        "store-messaging": 27021,
    }
    assert cfg.store_url("contacts") == (
        "mongodb://127.0.0.1:27018/?directConnection=true&retryWrites=false"
    )
    assert cfg.store_url("gateway") == cfg.mongo_url == cfg.store_urls["store"]
    # infra starts Kafka first, then every store, then the sink and the fake providers
    assert infra_names(cfg) == (
        "kafka",
        "store",
        *(f"store-{svc}" for svc in OWN_STORE_SERVICES),
        "smtp",
        "sms",
        "payments",
    )


def test_ports_follow_the_main_store_unless_one_is_set(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, TRIBUNE_STORE_PORT="30000", TRIBUNE_CONSENT_STORE_PORT="31000")
    assert cfg.stores["store-contacts"] == 30001
    assert cfg.stores["store-consent"] == 31000
    assert cfg.stores["store-messaging"] == 30004


def test_one_store_holds_everything_when_asked(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, TRIBUNE_STORES="one")
    assert cfg.stores == {"store": 27017}
    assert {cfg.store_url(svc) for svc in OWN_STORE_SERVICES} == {cfg.mongo_url}
    assert "store-contacts" not in infra_names(cfg)
    env = stack_env(cfg)
    urls = {k: v for k, v in env.items() if k.endswith("_MONGO_URL")}
    assert urls == {"TRIBUNE_MONGO_URL": cfg.mongo_url, "TRIBUNE_VAULT_MONGO_URL": cfg.mongo_url}


def test_an_unknown_layout_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TRIBUNE_STORES must be one of one, per-service"):
        _cfg(tmp_path, TRIBUNE_STORES="sharded")


def test_services_are_pointed_at_their_store_and_share_the_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    env = stack_env(cfg)
    for key in [k for k in env if k.endswith("MONGO_URL")]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    contacts, consent, gateway = ContactsSettings(), ConsentSettings(), GatewaySettings()
    assert contacts.mongo_url == cfg.store_url("contacts") != cfg.mongo_url
    assert consent.mongo_url == cfg.store_url("consent")
    assert gateway.mongo_url == cfg.mongo_url
    # one vault for every service: the keys a producer seals with are those its consumers
    # open with (tribune_shared.vault)
    assert contacts.vault_mongo_url == consent.vault_mongo_url == cfg.mongo_url


def test_a_test_stack_keeps_the_layout_it_is_given(tmp_path: Path) -> None:
    env = {"TRIBUNE_STATE_DIR": str(tmp_path / "stack")}
    own = StackConfig.for_tests(env=env, state_root=tmp_path)
    one = StackConfig.for_tests(env=env, state_root=tmp_path, stores="one")
    assert own.store_layout == "per-service" and one.store_layout == "one"
    # free ports of its own for every store, none the dev stack's
    assert len(set(own.stores.values())) == 5
    assert not set(own.stores.values()) & set(_cfg(tmp_path).stores.values())


def test_a_stack_keeps_the_layout_its_data_was_made_with(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    # a stack made before stores per service: every database is in its main store
    (state / "store").mkdir(parents=True)
    assert _cfg(tmp_path).store_layout == "one"
    # the layout recorded when its stores last started wins; the environment over both
    (state / LAYOUT_FILE).write_text("per-service\n")
    assert _cfg(tmp_path).store_layout == "per-service"
    assert _cfg(tmp_path, TRIBUNE_STORES="one").store_layout == "one"
    # a test stack is new: the dev stack's data does not choose its layout
    assert StackConfig.for_tests(env={"TRIBUNE_STATE_DIR": str(state)}).store_layout == (
        "per-service"
    )
    (state / LAYOUT_FILE).write_text("sharded\n")
    with pytest.raises(ValueError, match=f"{LAYOUT_FILE} must be one of one, per-service"):
        _cfg(tmp_path)
