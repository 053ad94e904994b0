"""What the resilience tests share: the supervisor, the clients, the faults and the
recovery timers (importable as ``chaos.kit``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tribune_devstack.platform import RunningStack, process_specs
from tribune_devstack.procs import live_pid, record_alive

#: how long a fault's recovery may take before the test gives up (not a goal: the figures
#: measured are printed, and recorded in the README)
RECOVERY_TIMEOUT = 240.0

#: one line per fault: its recovery figures, printed at the end of the session
RESULTS: list[str] = []


class Supervisor:
    """Starts again every API and worker process that died, like a Deployment's
    controller: the tests only kill, never restart by hand. Counts the restarts."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.names = [s.name for s in process_specs(stack.cfg)]
        self.restarts: dict[str, int] = {}
        self.paused = threading.Event()  # set: leave the processes alone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self.lock = threading.Lock()  # held while a restart runs (tests wait on it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _dead(self) -> list[str]:
        pids = self.stack.cfg.pids_dir
        return [n for n in self.names if live_pid(pids, n) is None]

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.paused.is_set():
                continue
            for name in self._dead():
                with self.lock:
                    try:
                        self.stack.restart(name, timeout=RECOVERY_TIMEOUT)
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                    except Exception as exc:  # try again at the next round
                        print(f"supervisor: {name} did not come back yet: {exc!r}"[:500])

    def settled(self) -> bool:
        return not self._dead() and not self.lock.locked()


@dataclass
class Client:
    """A user through the gateway; logs in again when the access token expired (the
    suite outlasts the token's 15 minutes)."""

    http: httpx.Client
    email: str
    password: str
    token: str = ""

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        extra = kw.pop("headers", {})
        for _ in range(2):
            if not self.token:
                self.token = _token(self.http, self.email, self.password)
            headers = {"Authorization": f"Bearer {self.token}", **extra}
            r = self.http.request(method, path, headers=headers, **kw)
            if r.status_code != 401:
                return r
            self.token = ""
        return r


def _token(http: httpx.Client, email: str, password: str) -> str:
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def login(http: httpx.Client, email: str, password: str) -> Client:
    return Client(http, email, password, _token(http, email, password))


@dataclass
class Federation:
    id: str
    path: str
    secretary: Client
    treasurer: Client


# --- faults ------------------------------------------------------------------------------


def signal_group(stack: RunningStack, name: str, sig: signal.Signals) -> int:
    """Send ``sig`` to an infra process's group (secantusd-py or the broker's JVM)."""
    pid = stack.pid(name)
    assert pid is not None, f"{name} is not running"
    os.killpg(pid, sig)
    return pid


def stop_broker(stack: RunningStack, sig: signal.Signals) -> None:
    """SIGTERM (a controlled shutdown) or SIGKILL the broker; wait until it is gone."""
    rec = live_pid(stack.cfg.infra_pids_dir, "kafka")
    assert rec is not None, "the broker is not running"
    os.killpg(rec.pid, sig)
    deadline = time.monotonic() + 120
    while record_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not record_alive(rec), f"the broker survived {sig.name} for 120 s"


def start_broker(stack: RunningStack) -> None:
    """Start the broker again on its data (topics, offsets and transactions kept)."""
    stack.restart("kafka")


@dataclass
class Timer:
    """Recovery figures of one fault, printed at the end of its test."""

    name: str
    fault_ended: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def end_fault(self) -> None:
        self.fault_ended = time.monotonic()

    def mark(self, what: str) -> float:
        took = time.monotonic() - self.fault_ended
        self.figures.setdefault(what, round(took, 1))
        return took

    def report(self) -> str:
        parts = ", ".join([*(f"{k} {v:.1f} s" for k, v in self.figures.items()), *self.notes])
        return f"recovery [{self.name}]: {parts}"
