"""Measure: each process's memory (RSS) and CPU during a contacts import and a payment
burst on the whole local platform, to size the Kubernetes requests and limits
(deploy/kubernetes; README, Operations > Resource sizing).

    uv run python bench/resource_sizing.py [--rows 5000] [--payments 200] [--json out.json]

On a platform of its own (free ports, a folder under .local/tests, store on disk, stopped
and deleted at the end): every API and worker, Kafka and the store, as `make up` runs
them. Once all are ready it samples /proc every 0.5 s (idle for 10 s first), then runs,
through the gateway, an import of ``--rows`` contacts while ``--payments`` signed donation
notifications arrive (8 at a time, each retried until accepted), until the import is done,
every payment accepted and its receipt issued, and 10 s more for the workers to drain.

Per process it prints: RSS when idle and at its peak, CPU (in cores) on average over the
flow, at the 95th percentile of 1 s windows and at its peak. A process's figure includes
its children (its process group). psutil is not in the lock: /proc is read directly
(Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from tribune_devstack.infra import INFRA
from tribune_devstack.platform import RunningStack, process_specs
from tribune_devstack.procs import live_pid
from tribune_devstack.stack import StackConfig
from tribune_shared.webhooks import signature_headers

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL = 0.5


def _group_pids(leader: int) -> list[int]:
    """The leader and every process of its group (a JVM's or a service's children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == leader:  # field 5: process group id
            pids.append(int(entry.name))
    return pids or [leader]


def _sample(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) summed over ``pids``."""
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            statm = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        cpu += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        rss += int(statm[1]) * PAGE
    return cpu, rss


@dataclass
class Series:
    """One process's samples: (time, cpu seconds, rss bytes)."""

    name: str
    leader: int
    points: list[tuple[float, float, int]] = field(default_factory=list)

    def window(self, start: float, end: float) -> list[tuple[float, float, int]]:
        return [p for p in self.points if start <= p[0] <= end]

    def figures(self, idle: tuple[float, float], flow: tuple[float, float]) -> dict[str, float]:
        idle_pts, flow_pts = self.window(*idle), self.window(*flow)
        mib = 1024 * 1024
        out = {
            "rss_idle_mib": round(max((p[2] for p in idle_pts), default=0) / mib, 1),
            "rss_peak_mib": round(max((p[2] for p in flow_pts), default=0) / mib, 1),
        }
        if len(flow_pts) >= 2:
            span = flow_pts[-1][0] - flow_pts[0][0]
            out["cpu_mean_cores"] = round((flow_pts[-1][1] - flow_pts[0][1]) / span, 3)
            per_second = []  # 1 s windows: two samples apart
            for a, b in zip(flow_pts, flow_pts[2:], strict=False):
                per_second.append((b[1] - a[1]) / (b[0] - a[0]))
            per_second.sort()
            out["cpu_p95_cores"] = round(per_second[int(0.95 * (len(per_second) - 1))], 3)
            out["cpu_peak_cores"] = round(per_second[-1], 3)
        return out


class Sampler(threading.Thread):
    def __init__(self, stack: RunningStack) -> None:
        super().__init__(name="sampler", daemon=True)
        cfg = stack.cfg
        self.series: list[Series] = []
        for name in [*INFRA, *(s.name for s in process_specs(cfg))]:
            pids = cfg.infra_pids_dir if name in INFRA else cfg.pids_dir
            rec = live_pid(pids, name)
            if rec is not None:
                self.series.append(Series(name, rec.pid))
        self.stop = threading.Event()

    def run(self) -> None:
        groups = {s.name: _group_pids(s.leader) for s in self.series}
        refreshed = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now - refreshed > 10:  # a JVM or a service may start helpers later
                groups = {s.name: _group_pids(s.leader) for s in self.series}
                refreshed = now
            for s in self.series:
                cpu, rss = _sample(groups[s.name])
                s.points.append((now, cpu, rss))
            self.stop.wait(INTERVAL)


def _login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def flow(stack: RunningStack, rows: int, payments: int) -> dict[str, object]:
    """Import + payment burst through the gateway; returns its own figures."""
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
        email, password = stack.admin_credentials
        admin = _login(http, email, password)
        fed = http.post("/api/v1/federations", json={"name": "Sizing"}, headers=admin).json()
        user = f"secretary.{uuid.uuid4().hex[:6]}@tribune.test"
        user_pw = f"pw-{uuid.uuid4().hex}"
        http.post(
            "/api/v1/users",
            json={
                "email": user,
                "password": user_pw,
                "role": "secretary",
                "federation_id": fed["id"],
            },
            headers=admin,
        ).raise_for_status()
        secretary = _login(http, user, user_pw)
        tag = f"sizing{uuid.uuid4().hex[:6]}"
        donors = []
        for i in range(payments):
            r = http.post(
                "/api/v1/contacts",
                headers=secretary,
                json={
                    "given_name": "Louise",
                    "family_name": f"Donor{i}",
                    "email": f"donor{i}.{tag}@example.org",
                    "origin": {"kind": "event", "detail": "sizing"},
                    "address": {"lines": ["8 rue des Cerisiers"], "postcode": "75011"},
                },
            )
            r.raise_for_status()
            donors.append(r.json()["id"])
        lines = ["Prénom;Nom;Courriel;Code postal;Ville"]
        lines += [f"Aline;Sizing{i};{tag}.{i}@example.org;75011;Paris" for i in range(rows)]
        started = time.monotonic()
        r = http.post(
            "/api/v1/contacts/imports",
            headers=secretary,
            files=[
                ("origin_kind", (None, "petition")),
                ("origin_detail", (None, "sizing")),
                ("tag", (None, tag)),
                ("file", ("sizing.csv", ("\n".join(lines) + "\n").encode(), "text/csv")),
            ],
        )
        r.raise_for_status()
        job_id = r.json()["id"]
        secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]

        def pay(i: int) -> None:
            body = json.dumps(
                {
                    "provider": "helloasso",
                    "provider_payment_id": f"sizing-{tag}-{i}",
                    "contact_id": donors[i],
                    "amount_cents": 5_000,
                    "currency": "EUR",
                    "method": "card",
                    "purpose": "donation",
                    "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                    "donor": {
                        "natural_person": True,
                        "nationality": "FR",
                        "resides_in_france": True,
                    },
                }
            ).encode()
            for _ in range(600):
                headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
                r = http.post("/api/v1/webhooks/payments", content=body, headers=headers)
                if r.status_code in (200, 201):
                    return
                time.sleep(0.2)  # 404 until memberships knows the donor
            raise RuntimeError(f"payment {i} never accepted: {r.status_code} {r.text[:200]}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(pay, range(payments)))
        paid = time.monotonic()
        while True:
            job = http.get(f"/api/v1/contacts/imports/{job_id}", headers=secretary).json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(1)
        imported = time.monotonic()
        return {
            "rows": rows,
            "payments": payments,
            "import_status": job["status"],
            "payments_seconds": round(paid - started, 1),
            "import_seconds": round(imported - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    cfg = StackConfig.for_tests(name=f"sizing-{uuid.uuid4().hex[:6]}", store_in_memory=False)
    with RunningStack(cfg, environment="test") as stack:
        sampler = Sampler(stack)
        sampler.start()
        idle_start = time.monotonic()
        time.sleep(10)
        idle_end = flow_start = time.monotonic()
        about = flow(stack, args.rows, args.payments)
        time.sleep(10)  # the workers drain what the flow left (receipts, projections)
        flow_end = time.monotonic()
        sampler.stop.set()
        sampler.join()
    about["flow_seconds"] = round(flow_end - flow_start, 1)
    table = {
        s.name: s.figures((idle_start, idle_end), (flow_start, flow_end)) for s in sampler.series
    }
    print(f"flow: {about}")
    print(
        f"{'process':<20} {'RSS idle':>9} {'RSS peak':>9} "
        f"{'CPU mean':>9} {'CPU p95':>8} {'CPU peak':>9}"
    )
    for name, f in table.items():
        print(
            f"{name:<20} {f['rss_idle_mib']:>7.0f}Mi {f['rss_peak_mib']:>7.0f}Mi "
            f"{f.get('cpu_mean_cores', 0):>9.2f} {f.get('cpu_p95_cores', 0):>8.2f} "
            f"{f.get('cpu_peak_cores', 0):>9.2f}"
        )
    print(f"({os.cpu_count()} CPUs; CPU in cores: 1.00 = one CPU busy all the time)")
    if args.json:
        args.json.write_text(json.dumps({"flow": about, "processes": table}, indent=2))


if __name__ == "__main__":
    main()
