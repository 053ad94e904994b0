"""tribune_shared.runtime: the collector's tuning every API and worker process gets at start."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import tribune_shared.app as app_module
import tribune_shared.worker as worker_module
from pydantic import ValidationError
from support import DemoSettings

PROBE = """
import gc
from tribune_shared.runtime import tune_gc
from tribune_shared.settings import ServiceSettings
held = [[i] for i in range(1000)]  # what a process holds once its imports are done
tune_gc(ServiceSettings())
print(gc.get_threshold(), gc.get_freeze_count() > 1000)
"""


def probe(env: dict[str, str]) -> str:
    # a process of its own: a frozen object is never freed, not in the test process
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_process_freezes_what_it_holds_and_collects_less_often():
    assert probe({"TRIBUNE_ENVIRONMENT": "development"}) == "(20000, 20, 100) True"


def test_each_threshold_and_the_freeze_are_settings():
    env = {
        "TRIBUNE_ENVIRONMENT": "development",
        "TRIBUNE_GC_FREEZE_AT_START": "false",
        "TRIBUNE_GC_GEN0_THRESHOLD": "700",
        "TRIBUNE_GC_GEN1_THRESHOLD": "10",
        "TRIBUNE_GC_GEN2_THRESHOLD": "10",
    }
    assert probe(env) == "(700, 10, 10) False"  # Python's own behaviour, as before


@pytest.mark.parametrize(
    ("field", "value"),
    [("GC_GEN0_THRESHOLD", "99"), ("GC_GEN1_THRESHOLD", "0"), ("GC_GEN2_THRESHOLD", "10001")],
)
def test_a_threshold_out_of_bounds_is_refused_by_name(monkeypatch, field, value):
    monkeypatch.setenv(f"DEMO_{field}", value)
    with pytest.raises(ValidationError, match=field.lower()):
        DemoSettings()


def test_an_api_process_is_tuned_before_it_serves(monkeypatch):
    calls: list[str] = []
    settings = DemoSettings()
    monkeypatch.setattr(app_module, "tune_gc", lambda s: calls.append(f"tune {s.service_name}"))
    monkeypatch.setattr(app_module.uvicorn, "run", lambda *a, **k: calls.append("serve"))
    app_module.serve(object(), settings)  # type: ignore[arg-type]
    assert calls == ["tune demo", "serve"]


def test_a_worker_process_is_tuned_before_it_runs(monkeypatch):
    calls: list[str] = []
    settings = DemoSettings()
    monkeypatch.setattr(worker_module, "tune_gc", lambda s: calls.append(f"tune {s.service_name}"))

    async def run() -> None:
        calls.append("run")

    def factory() -> Any:
        return SimpleNamespace(settings=settings, run=run, request_stop=lambda: None)

    worker_module.run_worker(factory)
    assert calls == ["tune demo", "run"]
