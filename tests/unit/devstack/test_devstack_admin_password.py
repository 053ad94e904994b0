"""`make up` tells where to log in and how to get the admin password; the password itself
is shown once, on stderr, by the `up` that generated it (never in the summary on stdout,
which scripts and CI logs keep)."""

from __future__ import annotations

import stat

import pytest
from tribune_devstack import cli
from tribune_devstack.platform import stack_secrets
from tribune_devstack.stack import StackConfig


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> StackConfig:
    # everything `up` starts is out of this test: the summary is what it checks
    monkeypatch.setattr(cli, "cmd_fetch", lambda cfg: None)
    monkeypatch.setattr(cli, "cmd_infra_up", lambda cfg: None)
    monkeypatch.setattr(cli, "start_platform", lambda cfg, env: stack_secrets(cfg) and [])
    return StackConfig.from_env({"TRIBUNE_STATE_DIR": str(tmp_path / "stack")})


def test_the_password_is_shown_once_on_stderr_then_how_to_get_it(cfg, capsys):
    cli.cmd_up(cfg)
    first = capsys.readouterr()
    password = stack_secrets(cfg)["admin_password"]
    assert password not in first.out
    assert "admin@tribune.local" in first.out and cli.ADMIN_PASSWORD_HINT in first.out
    assert first.err.count(password) == 1
    assert stat.S_IMODE((cfg.state_dir / "secrets.json").stat().st_mode) == 0o600

    cli.cmd_up(cfg)  # the same stack again: not shown again
    again = capsys.readouterr()
    assert password not in again.out + again.err
    assert cli.ADMIN_PASSWORD_HINT in again.out

    cli.cmd_admin_password(cfg)
    assert capsys.readouterr().out.strip() == password
