"""The Prometheus configuration, alert rules and their unit tests, run by Prometheus's own
`promtool` (built by `make fetch-promtool` from the Go module proxy; offline afterwards).

Without promtool (no Go on the machine) these tests skip and say why, except where
`TRIBUNE_REQUIRE_PROMTOOL=1` (CI: .ci/run builds it), where a missing promtool fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    candidates = [os.environ.get("TRIBUNE_PROMTOOL", ""), shutil.which("promtool") or ""]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    reason = "promtool not found: `make fetch-promtool` builds it when Go is installed"
    if os.environ.get("TRIBUNE_REQUIRE_PROMTOOL") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def run(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_alert_rules_are_valid() -> None:
    result = run("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = run("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    # The config names its rule files where the container mounts them; check a copy that
    # points at the repository's files instead.
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROM_DIR / Path(f).name) for f in config.get("rule_files", [])]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = run("check", "config", "--syntax-only", str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules that never fire."""
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = f"({rule['expr']}) and on() (vector(0) > 1)"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(PROM_DIR / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = run("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, "a rule that never fires still passed its unit tests"
