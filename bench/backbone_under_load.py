"""Benchmark: the event backbone under load, through the gateway, in one run of the platform.

    uv run --frozen python bench/backbone_under_load.py [--rows 100000] [--sequences 1000]
        [--revocations 200] [--clients 4] [--keep-logs]

It starts one isolated platform (every service API and worker as real processes, on a Kafka
and a store of its own: tribune_devstack's RunningStack on StackConfig.for_tests(), free
ports, a folder under .local/tests, stopped and deleted at the end; the dev stack is never
touched) and drives it through the gateway like a real client. It measures these rows of
the backbone's goal table:

1. **Import digested.** The administrator uploads a messy CSV of ``--rows`` rows
   (contacts.messy_csv, like bench/contacts_import.py) to ``POST /api/v1/contacts/imports``
   and follows the job: T_import runs from the upload to the job done. T_digest runs from
   the upload until consent, memberships and messaging have each applied every contact
   event of the import. That is read from Kafka itself: each consumer group's committed
   offsets (a worker commits only after the transaction that applied the batch) reach the
   contact topics' end offsets taken once the job is done and the contacts outbox holds no
   unpublished import batch. Goal: T_digest / T_import <= 1.5.
2. **Revocations during the digest.** Before the upload, ``2 x --revocations`` contacts are
   created through the gateway, granted an email consent, and seen reachable by
   messaging. While the import is digested, ``--revocations`` of them are revoked one by
   one through the gateway (the revoker sends back its consistency token), spread over the
   digest: revocation i goes at 0.8 x i/n of the digest's expected length, re-estimated as
   it goes from the job's and the slowest consumer's pace. Latency: from the start of the
   revoke request until messaging refuses the person (GET
   /api/v1/messages/reachability/{id} on messaging itself, with a signed identity and no
   consistency token, as bench/consent_revocation_latency.py does: the probe reads
   messaging's own view, and must not make messaging wait for the revocation, which a
   token would). The revoke request's own time and the rest (its answer to the refusal)
   are reported too. Goal p99 <= 250 ms.
3. **Revocations on the quiet platform**: the other ``--revocations`` contacts, once the
   digest is over, one at a time. Goal p99 <= 100 ms.
4. **Create-then-use during the digest.** ``--clients`` concurrent clients, each its own
   user (administrator role: it may create federations), run ``--sequences`` sequences of
   each kind, interleaved, as fast as their answers allow but spread over the digest like
   the revocations (those the digest did not hold run after it and are counted apart;
   the first step's time is reported): create a contact then at once grant its consent;
   create a federation then at once create a contact in it.
   Each client sends back the X-Tribune-Consistency token of its previous response. The
   second step's first answer is counted: success, 404 (false), 409/422 (false refusal), or
   503 not_yet_consistent (then retried after Retry-After, like any 404/refusal, until it
   succeeds or 120 s pass). Goal: no false 404 or refusal.

It prints the table (scenario, goal, the figures before the backbone was rebuilt, measured,
verdict), writes the figures to .local/bench/backbone_under_load.json, and on an error in
the platform (a process gone, error lines in its log, a failed run) copies the stack's logs
to .local/bench/backbone_under_load.logs/ before the stack is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from campaign_kit import Store
from contacts.messy_csv import write_messy_csv
from tribune_devstack.platform import RunningStack, process_specs
from tribune_devstack.stack import StackConfig, repo_root
from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity
from tribune_shared.consistency import HEADER as CONSISTENCY

GRANT = {"channel": "email", "purpose": "news", "source": "bench"}
CONTACT_TOPICS = ("contact-created", "contact-updated", "contact-merged")
CONSUMERS = ("consent", "memberships", "messaging")
A_KIND, B_KIND = "contact -> consent", "federation -> contact"
DURING, AFTER = "during_digest", "after_digest"
#: a probe that sees no refusal within this long counts as never refused
PROBE_TIMEOUT = 600.0
#: a second step retried this long without success counts as failed
STEP_TIMEOUT = 120.0
#: the load during the digest is spread over this share of its expected length (the rest
#: is a margin for an estimate that turns out too long: nothing planned falls after it)
SPREAD = 0.8
#: revocations during the digest go one by one, at least this far apart
MIN_GAP = 0.1
#: no consumer moved for this long while the import is not digested: the run is stuck
STALL_TIMEOUT = 300.0
OUT_DIR = repo_root() / ".local" / "bench"
GOALS = {
    "import": ("T_digest / T_import <= 1.5", "~7x"),
    "digest": ("p99 <= 250 ms", "max 109 s"),
    "quiet": ("p99 <= 100 ms", "met"),
    "sequences": ("0 false 404 or refusals", "many"),
}


def now() -> float:
    return time.perf_counter()


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- clients


@dataclass
class Chain:
    """The consistency token a client carries from one response to its next request."""

    token: str | None = None


class Client:
    """One gateway user: logs in with the OAuth2 password flow and renews its bearer token
    before it expires (a 100,000-row run outlives a token)."""

    def __init__(self, http: httpx.AsyncClient, email: str, password: str) -> None:
        self.http, self.email, self.password = http, email, password
        self._bearer = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def login(self) -> None:
        async with self._lock:
            if now() < self._renew_at:
                return
            r = await self.http.post(
                "/api/v1/auth/token", data={"username": self.email, "password": self.password}
            )
            r.raise_for_status()
            body = r.json()
            self._bearer = body["access_token"]
            self._renew_at = now() + max(10.0, float(body.get("expires_in", 900)) - 60)

    async def call(
        self, method: str, path: str, *, chain: Chain | None = None, **kw: Any
    ) -> httpx.Response:
        if now() >= self._renew_at:
            await self.login()
        headers = {"Authorization": f"Bearer {self._bearer}", **kw.pop("headers", {})}
        if chain is not None and chain.token:
            headers[CONSISTENCY] = chain.token
        r = await self.http.request(method, path, headers=headers, **kw)
        if chain is not None and (token := r.headers.get(CONSISTENCY)):
            chain.token = token
        return r


def not_yet_consistent(r: httpx.Response) -> bool:
    if r.status_code != 503:
        return False
    try:
        return r.json().get("error") == "not_yet_consistent"
    except ValueError:
        return False


def retry_after(r: httpx.Response, default: float = 0.25) -> float:
    try:
        return min(10.0, float(r.headers.get("retry-after", default)))
    except ValueError:
        return default


async def call_until(
    client: Client,
    method: str,
    path: str,
    ok: set[int],
    *,
    chain: Chain | None = None,
    timeout: float = STEP_TIMEOUT,
    **kw: Any,
) -> tuple[httpx.Response, int]:
    """Call until the status is in ``ok`` (after Retry-After on a 503, else a short pause),
    or ``timeout`` ran out; returns the last answer and the number of attempts."""
    deadline = now() + timeout
    attempts = 0
    while True:
        attempts += 1
        r = await client.call(method, path, chain=chain, **kw)
        if r.status_code in ok or now() >= deadline:
            return r, attempts
        await asyncio.sleep(retry_after(r) if r.status_code == 503 else 0.2)


def new_contact(i: int | str, **extra: Any) -> dict[str, Any]:
    return {
        "given_name": "Bench",
        "family_name": f"Person{i}",
        "email": f"bench.{uuid.uuid4().hex[:16]}@example.org",
        "origin": {"kind": "web_form", "detail": "bench"},
        **extra,
    }


class Prober:
    """Asks messaging itself whether a person may be reached (its own projection), with a
    signed identity: neither the gateway nor a consistency token sits between the view and
    the measure."""

    def __init__(self, http: httpx.AsyncClient, url: str, secret: str, me: dict) -> None:
        self.http, self.url, self.secret = http, url, secret
        self.identity = Identity(
            user_id=me["id"],
            email=me["email"],
            role=Role(me["role"]),
            federation_id=me["federation_id"],
            federation_path=me["federation_path"],
        )
        self._signed, self._at = "", 0.0

    def _headers(self) -> dict[str, str]:
        if now() - self._at > 60:  # signed identities live two minutes
            self._signed = sign_identity(self.identity, self.secret, 120)
            self._at = now()
        return {IDENTITY_HEADER: self._signed}

    async def reachable(self, cid: str) -> bool | None:
        r = await self.http.get(
            f"{self.url}/api/v1/messages/reachability/{cid}",
            params={"purpose": GRANT["purpose"]},
            headers=self._headers(),
        )
        return r.json()["reachable"] if r.status_code == 200 else None

    async def until_refused(self, cid: str, started: float) -> tuple[float, float] | None:
        """(lower, upper) seconds from ``started`` to messaging's first refusal: the probe
        that refused was sent at the lower bound and answered at the upper one. Polled
        often at first, then less (hundreds of probes may wait at once when the goal is
        badly missed, and they must not become the load they measure)."""
        while True:
            sent = now()
            reachable = await self.reachable(cid)
            answered = now()
            if reachable is False:
                return max(0.0, sent - started), answered - started
            waited = answered - started
            if waited > PROBE_TIMEOUT:
                return None
            await asyncio.sleep(
                0.01 if waited < 0.5 else 0.05 if waited < 5 else 0.5 if waited < 30 else 1.0
            )


# ---------------------------------------------------------------- the consumers' backlog


class Backlog:
    """Where the consumers of contact events stand, from Kafka: each service's (bulk lane)
    group's committed offsets against the contact topics' end offsets. Committed offsets
    are exact (a worker commits after the transaction that applied the batch); the
    workers' tribune_consumer_lag gauge is refreshed at most every CONSUMER_LAG_REPORT_SECONDS."""

    def __init__(self, cfg: StackConfig) -> None:
        self.bootstrap = cfg.kafka_bootstrap
        self.groups = {svc: f"{cfg.topic_prefix}{svc}" for svc in CONSUMERS}
        self.topics = [f"{cfg.topic_prefix}{t}" for t in CONTACT_TOPICS]
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        for topic in self.topics:
            found: set[int] = set()
            for _ in range(50):
                await self.consumer._client.force_metadata_update()
                found = self.consumer.partitions_for_topic(topic) or set()
                if found:
                    break
                await asyncio.sleep(0.2)
            if not found:
                raise RuntimeError(f"topic {topic} has no partitions: did the workers start?")
            self.partitions += [TopicPartition(topic, p) for p in sorted(found)]
        known = {g for g, *_ in await self.admin.list_consumer_groups()}
        missing = [g for g in self.groups.values() if g not in known]
        if missing:
            raise RuntimeError(f"no consumer group {missing} on Kafka (known: {sorted(known)})")

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets(self.partitions))

    async def committed(self) -> dict[str, dict[TopicPartition, int]]:
        out = {}
        for svc, group in self.groups.items():
            offsets = await self.admin.list_consumer_group_offsets(
                group, partitions=self.partitions
            )
            out[svc] = {
                tp: max(0, offsets[tp].offset) if tp in offsets else 0 for tp in self.partitions
            }
        return out

    async def behind(self, target: dict[TopicPartition, int]) -> dict[str, int]:
        """Events of ``target`` each consumer has not applied yet."""
        committed = await self.committed()
        return {
            svc: sum(max(0, target[tp] - c[tp]) for tp in self.partitions)
            for svc, c in committed.items()
        }

    async def wait_idle(self, timeout: float = 300) -> None:
        deadline = now() + timeout
        while True:
            behind = await self.behind(await self.end_offsets())
            if not any(behind.values()):
                return
            if now() > deadline:
                raise RuntimeError(f"consumers still behind after {timeout:.0f}s: {behind}")
            await asyncio.sleep(0.2)


@dataclass
class Digest:
    """The import's progress through every consumer; paces the load run during it."""

    started: float
    started_wall: float  # the same instant on the wall clock (the job's times are on it)
    base: dict[TopicPartition, int]
    #: events the import should publish: the generator's estimate until Kafka has them all
    expected: int
    target: dict[TopicPartition, int] | None = None
    fraction: float = 0.0  # of the import's events, by the slowest consumer
    job_fraction: float = 0.0  # of the file's rows, by the import job
    #: (seconds since the upload, the job's share of rows, each consumer's share of events)
    timeline: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)
    behind: dict[str, int] = field(default_factory=dict)
    imported_at: float | None = None  # the job done
    published_at: float | None = None  # and every one of its events on Kafka
    applied_at: dict[str, float] = field(default_factory=dict)
    done_at: float | None = None
    job: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def over(self) -> bool:
        return self.done.is_set()

    def expected_length(self) -> float | None:
        """The digest's length as it looks now: at least the import's (known once done,
        else extrapolated from its rows), and the slowest consumer's pace extrapolated.
        Consumers commit in batches, so their share lags: this errs long, never short."""
        elapsed = now() - self.started
        guesses = []
        if self.imported_at is not None:
            guesses.append(self.imported_at - self.started)
        elif self.job_fraction > 0.02:
            guesses.append(elapsed / self.job_fraction)
        if self.fraction > 0.02:
            guesses.append(elapsed / self.fraction)
        return max(guesses) if guesses else None

    async def at_share(self, share: float) -> bool:
        """Wait until ``share`` of the digest's expected length has passed (True), or the
        digest is over (False)."""
        while not self.done.is_set():
            length = self.expected_length()
            if share == 0 or (length is not None and now() - self.started >= share * length):
                return True
            await asyncio.sleep(0.05)
        return False


async def follow_job(admin: Client, digest: Digest, job_id: str) -> None:
    while True:
        r = await admin.call("GET", f"/api/v1/contacts/imports/{job_id}")
        if r.status_code == 200:
            job = r.json()
            if job["status"] in ("done", "failed", "cancelled"):
                # The job's own end, not when a poll saw it: a loaded gateway can answer the
                # poll seconds late.
                finished = job.get("finished_at")
                digest.imported_at = (
                    digest.started
                    + utc(datetime.fromisoformat(finished)).timestamp()
                    - digest.started_wall
                    if finished
                    else now()
                )
                digest.job = job
                if job["status"] != "done":
                    raise RuntimeError(f"import {job['status']}: {job.get('error')}")
                return
            p = job["progress"]
            digest.job_fraction = p["rows_done"] / p["total"] if p.get("total") else 0.0
            if sys.stderr.isatty():
                print(
                    f"\r  imported {p['rows_done']}/{p['total']} rows; consumers applied "
                    f"{digest.fraction:4.0%}",
                    end="",
                    file=sys.stderr,
                )
        elif r.status_code >= 500:
            raise RuntimeError(f"import job: {r.status_code} {r.text[:300]}")
        await asyncio.sleep(0.25)


async def follow_digest(backlog: Backlog, dbs: Store, digest: Digest) -> None:
    outbox = dbs.db("contacts")["outbox"]
    last_move, last_sum = now(), -1
    while True:
        if digest.target is None and digest.imported_at is not None:
            # The import's events ride packed batch rows; singles are other clients' writes.
            if not await outbox.count_documents({"published_at": None, "batch": {"$ne": None}}):
                digest.target = await backlog.end_offsets()
                digest.published_at = now()
                digest.expected = max(1, sum(digest.target.values()) - sum(digest.base.values()))
        committed = await backlog.committed()
        applied = {
            svc: sum(c[tp] - digest.base[tp] for tp in backlog.partitions)
            for svc, c in committed.items()
        }
        shares = {svc: min(1.0, n / digest.expected) for svc, n in applied.items()}
        digest.fraction = min(shares.values())
        elapsed = now() - digest.started
        if not digest.timeline or elapsed - digest.timeline[-1][0] >= 1:
            digest.timeline.append((round(elapsed, 1), round(digest.job_fraction, 3), shares))
        if digest.target is not None:
            digest.behind = {
                svc: sum(max(0, digest.target[tp] - c[tp]) for tp in backlog.partitions)
                for svc, c in committed.items()
            }
            for svc, left in digest.behind.items():
                if not left and svc not in digest.applied_at:
                    digest.applied_at[svc] = now()
            if not any(digest.behind.values()):
                digest.done_at = now()
                digest.done.set()
                return
        total = sum(applied.values())
        if total != last_sum:
            last_move, last_sum = now(), total
        elif now() - last_move > STALL_TIMEOUT:
            raise RuntimeError(
                f"no consumer applied a contact event for {STALL_TIMEOUT:.0f}s "
                f"(applied since the upload: {applied}, expected {digest.expected})"
            )
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- revocations


@dataclass
class Revocation:
    contact_id: str
    revoke_status: int
    revoke_attempts: int
    #: the revoke request alone (it may wait for consent to apply this client's previous
    #: writes: read-your-writes)
    revoke_ms: float
    #: (lower, upper) ms to messaging's refusal; None: never refused (or revoke failed)
    refused_ms: tuple[float, float] | None

    @property
    def refusal_missing(self) -> bool:
        return self.revoke_status == 200 and self.refused_ms is None


async def revocation(client: Client, chain: Chain, prober: Prober, cid: str) -> Revocation:
    started = now()
    r, attempts = await call_until(
        client, "POST", f"/api/v1/consents/{cid}/revoke", {200}, chain=chain, json=GRANT
    )
    accepted = now()
    refused = None
    if r.status_code == 200:
        bounds = await prober.until_refused(cid, started)
        refused = None if bounds is None else (bounds[0] * 1000, bounds[1] * 1000)
    return Revocation(cid, r.status_code, attempts, (accepted - started) * 1000, refused)


async def revocations_during(
    client: Client, prober: Prober, ids: list[str], digest: Digest
) -> list[Revocation]:
    """Revocation i goes at SPREAD x i/n of the digest's expected length (re-estimated as it
    goes), at least MIN_GAP after the previous one, without waiting for the previous
    answer: a slow answer must not push the rest out of the digest."""
    chain = Chain()
    pending = []
    for i, cid in enumerate(ids):
        if not await digest.at_share(SPREAD * i / len(ids)):
            break  # the digest ended first: the rest would not be "during" it
        pending.append(asyncio.create_task(revocation(client, chain, prober, cid)))
        await asyncio.sleep(MIN_GAP)
    return list(await asyncio.gather(*pending))


async def revocations_quiet(client: Client, prober: Prober, ids: list[str]) -> list[Revocation]:
    chain = Chain()
    return [await revocation(client, chain, prober, cid) for cid in ids]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def latency_figures(samples: list[Revocation]) -> dict[str, Any]:
    measured = [s for s in samples if s.refused_ms is not None]
    # A revocation never refused counts at the probe's timeout (a lower bound of its latency).
    upper = [s.refused_ms[1] if s.refused_ms else PROBE_TIMEOUT * 1000 for s in samples]
    lower = [s.refused_ms[0] for s in measured]
    out: dict[str, Any] = {
        "count": len(samples),
        "never_refused": sum(1 for s in samples if s.refusal_missing),
        "revoke_failed": sum(1 for s in samples if s.revoke_status != 200),
        "revoke_retried": sum(1 for s in samples if s.revoke_attempts > 1),
    }
    if upper:
        out.update(
            {
                "p50_ms": percentile(upper, 50),
                "p90_ms": percentile(upper, 90),
                "p99_ms": percentile(upper, 99),
                "max_ms": max(upper),
                "mean_ms": statistics.fmean(upper),
                "p99_lower_bound_ms": percentile(lower, 99) if lower else None,
                "revoke_request_p50_ms": percentile([s.revoke_ms for s in samples], 50),
                "revoke_request_p99_ms": percentile([s.revoke_ms for s in samples], 99),
            }
        )
    if measured:
        # the backbone's own part: committed revocation -> outbox -> Kafka -> messaging
        after = [s.refused_ms[1] - s.revoke_ms for s in measured]
        out.update(
            {
                "accepted_to_refused_p50_ms": percentile(after, 50),
                "accepted_to_refused_p99_ms": percentile(after, 99),
            }
        )
    return out


# ---------------------------------------------------------------- create-then-use


@dataclass
class Outcomes:
    """What the second step of one kind of sequence met."""

    first: Counter = field(default_factory=Counter)  # ok, 404, refused, 503, other
    statuses: Counter = field(default_factory=Counter)  # first answers that were not ok
    step1_failed: Counter = field(default_factory=Counter)
    step1_retried: int = 0
    retried: int = 0
    eventually_ok: int = 0
    failed: int = 0
    to_success_ms: list[float] = field(default_factory=list)
    step1_ms: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        runs = sum(self.first.values())
        return {
            "sequences": runs + sum(self.step1_failed.values()),
            "first_answer": dict(self.first),
            "first_answer_statuses": {str(k): v for k, v in self.statuses.items()},
            "false_404": self.first["404"],
            "false_refusals": self.first["refused"],
            "not_yet_consistent_503": self.first["503"],
            "retried": self.retried,
            "eventually_ok": self.eventually_ok,
            "failed": self.failed,
            "step1_failed": {str(k): v for k, v in self.step1_failed.items()},
            "step1_retried": self.step1_retried,
            "step1_p50_ms": percentile(self.step1_ms, 50) if self.step1_ms else None,
            "step1_p99_ms": percentile(self.step1_ms, 99) if self.step1_ms else None,
            "to_success_p50_ms": percentile(self.to_success_ms, 50) if self.to_success_ms else None,
            "to_success_p99_ms": percentile(self.to_success_ms, 99) if self.to_success_ms else None,
        }


def classify(r: httpx.Response) -> str:
    if r.is_success:
        return "ok"
    if r.status_code == 404:
        return "404"
    if r.status_code in (409, 422):
        return "refused"
    if not_yet_consistent(r):
        return "503"
    return "other"


async def sequence(client: Client, chain: Chain, kind: str, n: int, out: Outcomes) -> None:
    if kind == A_KIND:
        first_path, first_body = "/api/v1/contacts", new_contact(f"A{n}")
    else:
        first_path, first_body = "/api/v1/federations", {"name": f"Bench {n} {uuid.uuid4().hex}"}
    began = now()
    r, attempts = await call_until(client, "POST", first_path, {201}, chain=chain, json=first_body)
    out.step1_ms.append((now() - began) * 1000)
    out.step1_retried += attempts > 1
    if r.status_code != 201:
        out.step1_failed[r.status_code] += 1
        return
    created = r.json()["id"]
    if kind == A_KIND:
        path, body, ok = f"/api/v1/consents/{created}/grant", GRANT, 200
    else:
        path, body, ok = "/api/v1/contacts", new_contact(f"B{n}", federation_id=created), 201
    started = now()
    first = await client.call("POST", path, chain=chain, json=body)
    outcome = classify(first)
    out.first[outcome] += 1
    if outcome != "ok":
        out.statuses[first.status_code] += 1
        out.retried += 1
        await asyncio.sleep(retry_after(first) if first.status_code == 503 else 0.2)
        last, _ = await call_until(client, "POST", path, {ok}, chain=chain, json=body)
        if last.status_code != ok:
            out.failed += 1
            return
    out.eventually_ok += 1
    out.to_success_ms.append((now() - started) * 1000)


async def sequences_during(
    clients: list[Client], total: int, digest: Digest
) -> dict[str, dict[str, Outcomes]]:
    """``total`` sequences of each kind, interleaved, by the clients concurrently, each
    client going as fast as its answers allow but never ahead of sequence j's share
    (SPREAD x j/(2 x total)) of the digest's expected length; what the digest did not hold
    runs after it, and is counted apart (phase -> kind -> outcomes)."""
    outcomes = {phase: {A_KIND: Outcomes(), B_KIND: Outcomes()} for phase in (DURING, AFTER)}
    jobs = iter(range(2 * total))

    async def work(client: Client) -> None:
        chain = Chain()
        for j in jobs:
            await digest.at_share(SPREAD * j / (2 * total))
            kind = A_KIND if j % 2 == 0 else B_KIND
            phase = AFTER if digest.over() else DURING
            await sequence(client, chain, kind, j // 2, outcomes[phase][kind])

    await asyncio.gather(*(work(c) for c in clients))
    return outcomes


# ---------------------------------------------------------------- set-up


async def make_user(admin: Client, http: httpx.AsyncClient, role: str, label: str) -> Client:
    email = f"bench.{label}.{uuid.uuid4().hex[:6]}@tribune.test"
    password = f"pw-{uuid.uuid4().hex}"
    r = await admin.call(
        "POST", "/api/v1/users", json={"email": email, "password": password, "role": role}
    )
    if r.status_code != 201:
        raise RuntimeError(f"user {label}: {r.status_code} {r.text[:300]}")
    client = Client(http, email, password)
    await client.login()
    return client


async def prepare(client: Client, prober: Prober, count: int) -> list[str]:
    """``count`` contacts, each granted an email consent and reachable in messaging's own
    view (at a moderate pace: the machine also runs Kafka, the store and ten processes)."""
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        async with sem:
            chain = Chain()
            r, _ = await call_until(
                client, "POST", "/api/v1/contacts", {201}, chain=chain, json=new_contact(i)
            )
            if r.status_code != 201:
                raise RuntimeError(f"contact not created: {r.status_code} {r.text[:300]}")
            cid = r.json()["id"]
            r, _ = await call_until(
                client, "POST", f"/api/v1/consents/{cid}/grant", {200}, chain=chain, json=GRANT
            )
            if r.status_code != 200:
                raise RuntimeError(f"consent not granted: {r.status_code} {r.text[:300]}")
            deadline = now() + STEP_TIMEOUT
            while not await prober.reachable(cid):
                if now() > deadline:
                    raise RuntimeError(f"messaging does not reach {cid} {STEP_TIMEOUT:.0f}s on")
                await asyncio.sleep(0.2)
            return cid

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def projections(dbs: Store) -> dict[str, int]:
    """Contacts held by contacts, and by each consumer's own projection of them."""
    out = {"contacts": await dbs.db("contacts")["contacts"].count_documents({})}
    for svc in CONSUMERS:
        coll = dbs.db(svc)["contacts"]
        out[svc] = await coll.count_documents({"erased": {"$ne": True}})
    return out


# ---------------------------------------------------------------- the run


async def run(stack: RunningStack, args: argparse.Namespace, data: bytes, expected) -> dict:
    cfg = stack.cfg
    figures: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url, timeout=120, trust_env=False, limits=limits
        ) as gw,
        httpx.AsyncClient(timeout=30, trust_env=False, limits=limits) as direct,
    ):
        dbs = Store(stack)
        backlog = Backlog(cfg)
        try:
            email, password = stack.admin_credentials
            admin = Client(gw, email, password)
            await admin.login()
            revoker = await make_user(admin, gw, "secretary", "revoker")
            clients = [
                await make_user(admin, gw, "admin", f"client{k}") for k in range(args.clients)
            ]
            me = (await revoker.call("GET", "/api/v1/me")).json()
            prober = Prober(
                direct, stack.url("messaging"), stack.env["TRIBUNE_IDENTITY_SECRET"], me
            )
            await backlog.start()

            t = now()
            ids = await prepare(revoker, prober, 2 * args.revocations)
            during_ids, quiet_ids = ids[: args.revocations], ids[args.revocations :]
            await backlog.wait_idle()
            print(f"{len(ids)} consenting contacts ready in {now() - t:.0f}s", flush=True)

            base = await backlog.end_offsets()
            started, started_wall = now(), time.time()
            r = await admin.call(
                "POST",
                "/api/v1/contacts/imports",
                content=data,
                params={"origin_kind": "electoral_list", "origin_detail": "benchmark"},
                headers={"Content-Type": "text/csv"},
            )
            if r.status_code != 202:
                raise RuntimeError(f"upload refused: {r.status_code} {r.text[:300]}")
            uploaded = now()
            digest = Digest(started, started_wall, base, expected=max(1, expected.created))
            print(
                f"uploaded {len(data) / 1e6:.1f} MB in {uploaded - started:.1f}s; digesting, "
                f"with {args.revocations} revocations and 2 x {args.sequences} sequences "
                f"({args.clients} clients) during it",
                flush=True,
            )
            watchers = asyncio.gather(
                follow_job(admin, digest, r.json()["id"]),
                follow_digest(backlog, dbs, digest),
            )
            load = asyncio.gather(
                revocations_during(revoker, prober, during_ids, digest),
                sequences_during(clients, args.sequences, digest),
            )
            try:
                await watchers
            except BaseException:
                load.cancel()
                with contextlib.suppress(BaseException):
                    await load
                raise
            print(file=sys.stderr)
            print(
                f"import done at {digest.imported_at - started:.1f}s, its events on Kafka at "
                f"{digest.published_at - started:.1f}s, applied by every consumer at "
                f"{digest.done_at - started:.1f}s "
                f"({', '.join(f'{s} {t - started:.1f}s' for s, t in digest.applied_at.items())})",
                flush=True,
            )
            during, outcomes = await load
            print("load during the digest finished; quiet revocations ...", flush=True)

            await backlog.wait_idle()
            await asyncio.sleep(2)
            quiet = await revocations_quiet(revoker, prober, quiet_ids)

            await backlog.wait_idle()
            counts = await projections(dbs)

            job = digest.job
            t_import = digest.imported_at - started
            t_digest = digest.done_at - started
            figures = {
                "import": {
                    "rows": job["progress"]["rows_done"],
                    "counts": job["counts"],
                    "file_mb": round(len(data) / 1e6, 2),
                    # the import's, and the clients' published before its last one
                    "contact_events_to_apply": digest.expected,
                    "upload_s": uploaded - started,
                    "t_import_s": t_import,
                    "t_published_s": digest.published_at - started,
                    "t_digest_s": t_digest,
                    "applied_by_s": {s: t - started for s, t in digest.applied_at.items()},
                    "ratio": t_digest / t_import,
                    "counts_match_generator": job["counts"]["created"] == expected.created
                    and job["counts"]["rejected"] == expected.rejected,
                },
                "revocations_during_digest": latency_figures(during),
                "revocations_quiet": latency_figures(quiet),
                "sequences": {
                    phase: {kind: o.figures() for kind, o in kinds.items()}
                    for phase, kinds in outcomes.items()
                },
                "projections": counts,
                "digest_timeline": digest.timeline,
            }
        finally:
            await backlog.stop()
            await dbs.close()
    return figures


# ---------------------------------------------------------------- report


def verdicts(f: dict[str, Any], args: argparse.Namespace) -> list[dict[str, str]]:
    imp, dur, qui, seq = (
        f["import"],
        f["revocations_during_digest"],
        f["revocations_quiet"],
        f["sequences"],
    )

    def latency(x: dict) -> str:
        if not x.get("count"):
            return "no sample"
        text = (
            f"n={x['count']} p50 {x['p50_ms']:.0f} p90 {x['p90_ms']:.0f} "
            f"p99 {x['p99_ms']:.0f} max {x['max_ms']:.0f} ms"
        )
        if x["never_refused"] or x["revoke_failed"]:
            text += f"; {x['never_refused']} never refused, {x['revoke_failed']} revoke failed"
        return text

    def met(x: dict, goal_ms: float, wanted: int) -> str:
        if not x.get("count"):
            return "NO SAMPLE"
        ok = x["p99_ms"] <= goal_ms and not x["never_refused"] and not x["revoke_failed"]
        verdict = "met" if ok else "NOT met"
        return verdict + (f" (only {x['count']} < {wanted} samples)" if x["count"] < wanted else "")

    def phase(kinds: dict[str, dict]) -> tuple[str, int, int, int]:
        """(text, sequences, false answers, sequences that never succeeded); each kind's
        figures are in the details printed under the table"""
        runs = sum(o["sequences"] for o in kinds.values())
        n404 = sum(o["false_404"] for o in kinds.values())
        refused = sum(o["false_refusals"] for o in kinds.values())
        failed = sum(o["failed"] + sum(o["step1_failed"].values()) for o in kinds.values())
        retried = sum(o["not_yet_consistent_503"] for o in kinds.values())
        text = (
            f"{runs} sequences, {n404} false 404, {refused} false refusals, "
            f"{retried} x 503 then retried, {runs - failed}/{runs} succeeded"
        )
        return text, runs, n404 + refused, failed

    during_text, during_runs, during_false, during_failed = phase(seq[DURING])
    after_text, after_runs, after_false, after_failed = phase(seq[AFTER])
    seq_text = f"during: {during_text}" + (f"; after it: {after_text}" if after_runs else "")
    seq_ok = not (during_false or during_failed or after_false or after_failed)
    seq_verdict = "met" if seq_ok else "NOT met"
    if during_runs < 2 * args.sequences:
        seq_verdict += f" (only {during_runs} < {2 * args.sequences} during the digest)"
    return [
        {
            "scenario": f"{imp['rows']:,}-row import applied by every consumer vs the import",
            "goal": GOALS["import"][0],
            "today": GOALS["import"][1],
            "measured": f"{imp['ratio']:.2f}x (T_digest {imp['t_digest_s']:.1f} s / "
            f"T_import {imp['t_import_s']:.1f} s)",
            "verdict": "met" if imp["ratio"] <= 1.5 else "NOT met",
        },
        {
            "scenario": "revocation -> messaging refuses, during that digest",
            "goal": GOALS["digest"][0] + f" (>= {args.revocations})",
            "today": GOALS["digest"][1],
            "measured": latency(dur),
            "verdict": met(dur, 250, args.revocations),
        },
        {
            "scenario": "revocation -> messaging refuses, quiet",
            "goal": GOALS["quiet"][0],
            "today": GOALS["quiet"][1],
            "measured": latency(qui),
            "verdict": met(qui, 100, args.revocations),
        },
        {
            "scenario": "create-then-use sequences during the digest",
            "goal": GOALS["sequences"][0],
            "today": GOALS["sequences"][1],
            "measured": seq_text,
            "verdict": seq_verdict,
        },
    ]


def print_table(rows: list[dict[str, str]]) -> None:
    cols = ("scenario", "goal", "today", "measured", "verdict")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print()
    print(" | ".join(c.ljust(widths[c]) for c in cols))
    print("-|-".join("-" * widths[c] for c in cols))
    for r in rows:
        print(" | ".join(r[c].ljust(widths[c]) for c in cols))
    print()


def print_details(f: dict[str, Any]) -> None:
    imp = f["import"]
    print(
        f"import: {imp['rows']} rows, {imp['contact_events_to_apply']} contact events to "
        f"apply; job done {imp['t_import_s']:.1f} s, events on Kafka "
        f"{imp['t_published_s']:.1f} s, applied by "
        + ", ".join(f"{s} {t:.1f} s" for s, t in imp["applied_by_s"].items())
    )
    for label, key in (
        ("during the digest", "revocations_during_digest"),
        ("quiet", "revocations_quiet"),
    ):
        x = f[key]
        if x.get("count"):
            print(
                f"revocations {label}: the revoke request alone p50 "
                f"{x['revoke_request_p50_ms']:.0f} ms, p99 {x['revoke_request_p99_ms']:.0f} ms "
                f"({x['revoke_retried']} retried after a 503); from its answer to messaging's "
                f"refusal p50 {x.get('accepted_to_refused_p50_ms', 0):.0f} ms, "
                f"p99 {x.get('accepted_to_refused_p99_ms', 0):.0f} ms"
            )
    for phase, kind, o in (
        (p, k, o) for p, kinds in f["sequences"].items() for k, o in kinds.items() if o["sequences"]
    ):
        took = (
            f"p50 {o['to_success_p50_ms']:.0f} ms, p99 {o['to_success_p99_ms']:.0f} ms"
            if o["to_success_p50_ms"] is not None
            else "-"
        )
        print(
            f"{kind} ({phase.replace('_', ' ')}): second step's first answer "
            f"{o['first_answer']}, statuses not ok {o['first_answer_statuses']}; to success "
            f"{took}; first step p50 {o['step1_p50_ms'] or 0:.0f} ms, "
            f"p99 {o['step1_p99_ms'] or 0:.0f} ms, failed {o['step1_failed']}, "
            f"retried {o['step1_retried']}"
        )
    print(f"contacts held: {f['projections']}")


# ---------------------------------------------------------------- diagnostics


def log_marks(stack: RunningStack) -> dict[Path, int]:
    """How far each log goes once the platform is ready: what the start-up wrote (e.g. the
    consumers' GroupCoordinatorNotAvailable errors while Kafka elects its coordinator) is
    not this run's business."""
    return {log: log.stat().st_size for log in stack.cfg.logs_dir.glob("*.log")}


def platform_problems(stack: RunningStack, marks: dict[Path, int]) -> list[str]:
    """Processes gone, and error lines the processes logged during the run."""
    problems = [
        f"{spec.name} is not running"
        for spec in process_specs(stack.cfg)
        if stack.pid(spec.name) is None
    ]
    for log in sorted(stack.cfg.logs_dir.glob("*.log")):
        errors = []
        with open(log, "rb") as handle:
            handle.seek(marks.get(log, 0))
            for raw in handle:
                line = raw.decode("utf-8", "replace")
                if any(m in line for m in ('"level": "error"', "Traceback", "] ERROR ")):
                    errors.append(line.strip()[:400])
        if errors:
            problems.append(f"{log.name}: {len(errors)} error line(s), first: {errors[0]}")
    return problems


def keep_logs(stack: RunningStack) -> Path:
    dest = OUT_DIR / "backbone_under_load.logs"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(stack.cfg.logs_dir, dest)
    return dest


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sequences", type=int, default=1000, help="of each kind")
    parser.add_argument("--revocations", type=int, default=200, help="during the digest, and quiet")
    parser.add_argument("--clients", type=int, default=4, help="concurrent sequence clients")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="copy the platform's logs to .local/bench/backbone_under_load.logs/ even when "
        "nothing went wrong",
    )
    args = parser.parse_args()
    if min(args.rows, args.sequences, args.revocations, args.clients) < 1:
        parser.error("--rows, --sequences, --revocations and --clients must be at least 1")
    # SIGTERM (a timeout) stops the processes this run started, like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        expected = write_messy_csv(csv_path, args.rows, encoding="utf-8-sig", delimiter=";")
        print(
            f"file: {args.rows} rows, {csv_path.stat().st_size / 1e6:.1f} MB; "
            f"{expected.created} contacts, {expected.merged} duplicates, "
            f"{expected.rejected} invalid",
            flush=True,
        )
        data = csv_path.read_bytes()
        # The store on disk, like the other benchmarks' figures (and 100,000 contacts could
        # outgrow an in-memory store's cache).
        cfg = StackConfig.for_tests(
            name=f"bench-backbone-{uuid.uuid4().hex[:6]}", store_in_memory=False
        )
        print(f"starting an isolated platform ({cfg.name}) ...", flush=True)
        began = now()
        with RunningStack(cfg, environment="test") as stack:
            print(f"platform ready in {now() - began:.0f}s", flush=True)
            marks = log_marks(stack)
            failure: BaseException | None = None
            try:
                figures = asyncio.run(run(stack, args, data, expected))
            except Exception as exc:
                failure, figures = exc, {}
            problems = platform_problems(stack, marks)
            if problems:
                print("PLATFORM PROBLEMS:", *problems, sep="\n  ")
            if problems or failure or args.keep_logs:
                print(f"logs kept in {keep_logs(stack)}", flush=True)
            else:  # an earlier run's copy would pass for this run's
                shutil.rmtree(OUT_DIR / "backbone_under_load.logs", ignore_errors=True)
            if failure:
                raise failure
    rows = verdicts(figures, args)
    print_table(rows)
    print_details(figures)
    if len(set(figures["projections"].values())) != 1:
        print(f"PROJECTIONS DIFFER: {figures['projections']}")
    if not figures["import"]["counts_match_generator"]:
        print(f"IMPORT COUNTS DIFFER from the generator's: {figures['import']['counts']}")
    out = OUT_DIR / "backbone_under_load.json"
    out.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "args": vars(args),
                "table": rows,
                **figures,
                "platform_problems": problems,
            },
            indent=2,
        )
    )
    print(f"figures written to {out.relative_to(repo_root())}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
