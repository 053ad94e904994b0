"""python -m tribune_devstack <command>: see COMMANDS below (or --help)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tribune_devstack.infra import ensure_infra, fetch_kafka, kafka_version, stop_infra
from tribune_devstack.kafka import MVN_HINT, jars_ready, kafka_jars_dir, require_tool
from tribune_devstack.platform import (
    format_status,
    process_specs,
    stack_env,
    stack_secrets,
    start_platform,
    status,
    stop_platform,
)
from tribune_devstack.procs import DevstackError, log_tail
from tribune_devstack.stack import StackConfig


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_fetch(cfg: StackConfig) -> None:
    cached = jars_ready(kafka_jars_dir(cfg))
    t0 = time.monotonic()
    if not cached:
        require_tool(cfg.mvn, MVN_HINT)  # fail in one line before announcing the fetch
        _say(f"fetching Kafka {kafka_version()} jars with mvn (first time takes ~1 min)...")
    libs = fetch_kafka(cfg)
    how = "cached" if cached else f"fetched in {time.monotonic() - t0:.1f}s"
    _say(f"Kafka {kafka_version()} jars in {libs} ({how})")


def cmd_infra_up(cfg: StackConfig) -> None:
    t0 = time.monotonic()
    handle = ensure_infra(cfg)
    for name in handle.reused:
        _say(f"{name}: already running, reused")
    for name in handle.started:
        _say(f"{name}: started")
    _say(f"infra ready in {time.monotonic() - t0:.1f}s (data and logs in {cfg.infra_dir})")


def cmd_up(cfg: StackConfig) -> None:
    t0 = time.monotonic()
    cmd_fetch(cfg)
    cmd_infra_up(cfg)
    try:
        started = start_platform(cfg, "development")
    except DevstackError as exc:
        raise DevstackError(
            f"{exc}\n(infra is left running for the next try; `make down` stops everything)"
        ) from exc
    admin_password = stack_secrets(cfg)["admin_password"]
    total = len(process_specs(cfg))
    _say(f"services: {len(started)} started, {total - len(started)} already running")
    _say("")
    _say(f"Tribune stack '{cfg.name}' is up in {time.monotonic() - t0:.1f}s")
    _say(f"  gateway         {cfg.gateway_url}")
    _say(f"  API docs        {cfg.gateway_url}/docs")
    _say(f"  SMTP sink       {cfg.smtp_http_url}/messages  (SMTP on {cfg.host}:{cfg.smtp_port})")
    _say(f"  admin           {cfg.admin_email} / {admin_password}")
    _say(f"  state and logs  {cfg.state_dir}")
    _say("  make logs       follow every log")
    _say("  make down       stop everything")


def cmd_down(cfg: StackConfig) -> None:
    out = stop_platform(cfg)
    for name, outcome in out.items():
        _say(f"{name}: {outcome}")
    if not out:
        _say("nothing was running")


def cmd_infra_down(cfg: StackConfig) -> None:
    out = stop_infra(cfg)
    for name, outcome in out.items():
        _say(f"{name}: {outcome}")
    if not out:
        _say("no infra was running")


def cmd_status(cfg: StackConfig) -> None:
    _say(f"stack '{cfg.name}' ({cfg.state_dir})")
    _say(format_status(status(cfg)))


def cmd_env(cfg: StackConfig) -> None:
    # For running one service by hand: eval "$(python -m tribune_devstack env)"
    for key, value in sorted(stack_env(cfg).items()):
        _say(f"export {key}={shlex.quote(value)}")


def follow_logs(dirs: Sequence[Path], lines: int = 20, follow: bool = True) -> None:
    """Like `tail -F` over every *.log in `dirs`, each line prefixed with the process name."""
    offsets: dict[Path, int] = {}
    width = len("memberships-worker")  # the longest process name

    def emit(path: Path, text: str) -> None:
        for line in text.splitlines():
            print(f"{path.stem:<{width}} | {line}")

    for d in dirs:
        for path in sorted(d.glob("*.log")):
            if path not in offsets:
                emit(path, log_tail(path, lines))
                offsets[path] = path.stat().st_size
    sys.stdout.flush()
    while follow:
        for d in dirs:
            for path in sorted(d.glob("*.log")):
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                pos = offsets.get(path, 0)
                if size < pos:  # truncated or replaced
                    pos = 0
                if size > pos:
                    with path.open("rb") as f:
                        f.seek(pos)
                        chunk = f.read(size - pos)
                    # Hold back a partial last line until it is complete.
                    cut = chunk.rfind(b"\n") + 1
                    if cut:
                        emit(path, chunk[:cut].decode("utf-8", "replace"))
                    offsets[path] = pos + cut
        sys.stdout.flush()
        time.sleep(0.3)


def cmd_logs(cfg: StackConfig, lines: int, follow: bool) -> None:
    dirs = list(dict.fromkeys([cfg.infra_logs_dir, cfg.logs_dir]))
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    try:
        follow_logs(dirs, lines, follow)
    except KeyboardInterrupt:
        pass


COMMANDS = {
    "fetch": "fetch Kafka jars with mvn (idempotent; quick when cached)",
    "infra-up": "start (or reuse) Kafka, the store and the SMTP sink",
    "up": "fetch + infra-up + start every service API and worker",
    "down": "stop services, then infra",
    "status": "table of processes, pids, ports, readiness",
    "logs": "follow all logs, prefixed by process name",
    "infra-down": "stop Kafka, the store and the SMTP sink",
    "env": "print the services' environment as export lines",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tribune_devstack",
        description="Local (no-docker) Tribune stack. Configured by TRIBUNE_* env vars.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(f"  {k:<11} {v}" for k, v in COMMANDS.items()),
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command")
    parser.add_argument("-n", "--lines", type=int, default=20, help="logs: initial lines")
    parser.add_argument("--no-follow", action="store_true", help="logs: print and exit")
    args = parser.parse_args(argv)
    try:
        cfg = StackConfig.from_env()
        match args.command:
            case "fetch":
                cmd_fetch(cfg)
            case "infra-up":
                cmd_infra_up(cfg)
            case "up":
                cmd_up(cfg)
            case "down":
                cmd_down(cfg)
            case "status":
                cmd_status(cfg)
            case "logs":
                cmd_logs(cfg, args.lines, not args.no_follow)
            case "infra-down":
                cmd_infra_down(cfg)
            case "env":
                cmd_env(cfg)
    except (DevstackError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: quiet exit, and no second error at interpreter exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
