"""Detached processes with pid files: start, probe, stop. Linux-first (/proc), POSIX signals."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class DevstackError(RuntimeError):
    """A clear, user-facing failure (the CLI prints it without a traceback)."""


# Popen objects of processes started by this Python process, so killed ones get reaped
# instead of lingering as zombies that still look alive to os.kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    name: str
    pid: int
    start_ticks: int | None  # /proc/<pid>/stat field 22: guards against pid reuse
    cmd: tuple[str, ...]
    log: str
    log_offset: int = 0  # size of the (appended) log when this process started


def _proc_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X")


def record_alive(rec: PidRecord) -> bool:
    if not pid_alive(rec.pid):
        return False
    ticks = _proc_start_ticks(rec.pid)
    return rec.start_ticks is None or ticks is None or ticks == rec.start_ticks


def pid_file(pids_dir: Path, name: str) -> Path:
    return pids_dir / f"{name}.pid"


def read_pid(pids_dir: Path, name: str) -> PidRecord | None:
    path = pid_file(pids_dir, name)
    try:
        raw = json.loads(path.read_text())
        return PidRecord(
            name=name,
            pid=int(raw["pid"]),
            start_ticks=raw.get("start_ticks"),
            cmd=tuple(raw.get("cmd", ())),
            log=str(raw.get("log", "")),
            log_offset=int(raw.get("log_offset", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_pid(pids_dir: Path, name: str) -> PidRecord | None:
    """The pid record if it names a live process (the same one that wrote it)."""
    rec = read_pid(pids_dir, name)
    return rec if rec is not None and record_alive(rec) else None


def spawn(
    name: str,
    cmd: Sequence[str],
    *,
    logs_dir: Path,
    pids_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> PidRecord:
    """Start `cmd` in its own session (survives the caller), output appended to the log."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    pids_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs_dir / f"{name}.log"
    with log_path.open("ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    rec = PidRecord(name, proc.pid, _proc_start_ticks(proc.pid), tuple(cmd), str(log_path), offset)
    tmp = pid_file(pids_dir, name).with_suffix(".tmp")
    raw = {
        "pid": rec.pid,
        "start_ticks": rec.start_ticks,
        "cmd": list(cmd),
        "log": rec.log,
        "log_offset": offset,
    }
    tmp.write_text(json.dumps(raw))
    tmp.replace(pid_file(pids_dir, name))
    return rec


def exit_code(pid: int) -> int | None:
    """Exit code of a child we started, if it has exited (None if unknown or running)."""
    child = _CHILDREN.get(pid)
    return child.poll() if child is not None else None


def _signal(rec: PidRecord, sig: signal.Signals) -> None:
    # The process leads its own session/group: signal the group so its children go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(rec.pid) == rec.pid:
            os.killpg(rec.pid, sig)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec.pid, sig)


def stop_records(
    records: Iterable[PidRecord],
    *,
    timeout: float,
    pids_dir: Path | None = None,
    sig: signal.Signals = signal.SIGTERM,
) -> dict[str, str]:
    """Signal all, wait up to `timeout` s, SIGKILL leftovers. Returns name -> outcome."""
    live = [r for r in records if record_alive(r)]
    outcome: dict[str, str] = {}
    for rec in live:
        _signal(rec, sig)
    deadline = time.monotonic() + timeout
    pending = list(live)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if record_alive(r)]
        if pending:
            time.sleep(0.1)
    for rec in live:
        outcome[rec.name] = "killed" if rec in pending else "stopped"
    for rec in pending:
        _signal(rec, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5
    while any(record_alive(r) for r in pending) and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    for rec in live:
        _CHILDREN.pop(rec.pid, None)
    if pids_dir is not None:
        for rec in records:
            if not record_alive(rec):
                pid_file(pids_dir, rec.name).unlink(missing_ok=True)
    return outcome


def kill_now(rec: PidRecord, sig: signal.Signals = signal.SIGKILL, wait: float = 10.0) -> None:
    """Send `sig` (default SIGKILL, for crash tests) and wait until the process is gone."""
    _signal(rec, sig)
    deadline = time.monotonic() + wait
    while record_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)
    if record_alive(rec):
        raise DevstackError(f"{rec.name} (pid {rec.pid}) still alive {wait:.0f}s after {sig.name}")
    _CHILDREN.pop(rec.pid, None)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (blocks): one process at a time decides and starts infra."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_end(path: Path | str, size: int = 64 * 1024, start: int = 0) -> str | None:
    try:
        with Path(path).open("rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - size, start if start <= end else 0))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def log_tail(path: Path | str, lines: int = 40, start: int = 0) -> str:
    data = _read_end(path, start=start)
    if data is None:
        return f"(no log at {path})"
    tail = data.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(empty log {path})"


_ERROR_MARKS = (" ERROR ", " FATAL ", '"level": "error"', '"level":"error"', "Caused by:", "Error:")


def log_excerpt(path: Path | str, lines: int = 30, start: int = 0) -> str:
    """The log's tail from byte `start` on, preceded by its first error lines when a stack
    trace buries them."""
    data = _read_end(path, start=start) or ""
    errors = list(
        dict.fromkeys(ln for ln in data.splitlines() if any(m in ln for m in _ERROR_MARKS))
    )
    tail = log_tail(path, lines, start)
    shown = [e for e in errors[:6] if e not in tail]
    if not shown:
        return tail
    return "first errors:\n" + "\n".join(shown) + f"\nlast lines:\n{tail}"


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.25,
    abort: Callable[[], str | None] | None = None,
) -> bool:
    """Poll `check` until true or timeout; `abort` returning a message raises DevstackError."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if abort is not None:
            why = abort()
            if why:
                raise DevstackError(why)
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
