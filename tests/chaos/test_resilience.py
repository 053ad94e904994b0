"""Faults in the middle of real work, on the real processes: a broker restarted (SIGTERM,
then SIGKILL) during a contacts import and a payment burst, each worker killed in turn
(the supervisor starts it again), the store paused for 10 s. After each, without a human:
every service answers again, and a reconciliation of the stores against the topics finds
nothing lost and nothing doubled. The recovery times are printed (and in the README)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from chaos.kit import (
    RECOVERY_TIMEOUT,
    RESULTS,
    Federation,
    Supervisor,
    Timer,
    signal_group,
    start_broker,
    stop_broker,
)
from pymongo import MongoClient
from tribune_devstack.platform import RunningStack
from tribune_shared.webhooks import signature_headers

# each test waits for a recovery (RECOVERY_TIMEOUT) more than once
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]

ROWS = 600  # contacts imported by each flow
PAYMENTS = 40  # donations of each flow's burst, each notified twice (a provider's retry)
WORKERS = (
    "contacts-worker",
    "consent-worker",
    "memberships-worker",
    "messaging-worker",
    "gateway-worker",
)


def wait_for(check: Callable[[], Any], what: str, timeout: float = RECOVERY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {last!r})"[:2000])


@dataclass
class NotYet:
    """A check not met yet, and what it saw (shown if it never is)."""

    seen: Any

    def __bool__(self) -> bool:
        return False


def until_not_busy(call: Callable[[], httpx.Response]) -> httpx.Response:
    """``call`` as a well-behaved client makes it: a 503 with Retry-After (the store cut
    off, or the data held by a killed worker's transaction until the store aborts it) is
    sent again after the time it names, for up to RECOVERY_TIMEOUT."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        r = call()
        retry_after = r.headers.get("Retry-After")
        if r.status_code != 503 or not retry_after or time.monotonic() > deadline:
            return r
        time.sleep(min(float(retry_after), 5.0))


# --- the flow: an import and a payment burst -------------------------------------------


def csv_rows(tag: str, rows: int) -> bytes:
    lines = ["Prénom;Nom;Courriel;Code postal;Ville"]
    lines += [f"Aline;Chaos{i};{tag}.{i}@example.org;75011;Paris" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Flow:
    """One import of ``ROWS`` contacts and a burst of ``PAYMENTS`` signed donation
    notifications (each sent twice), running in the background while a fault happens."""

    stack: RunningStack
    federation: Federation
    http: httpx.Client
    tag: str = field(default_factory=lambda: f"chaos{uuid.uuid4().hex[:8]}")
    job_id: str = ""
    donors: list[str] = field(default_factory=list)
    provider_ids: list[str] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    _burst: threading.Thread | None = None

    def start(self) -> None:
        secretary = self.federation.secretary
        for i in range(PAYMENTS):  # the donors, created one by one through the API
            body = {
                "given_name": "Louise",
                "family_name": f"Donor{i}-{self.tag}",
                "email": f"donor{i}.{self.tag}@example.org",
                "origin": {"kind": "event", "detail": "chaos"},
                "address": {"lines": ["8 rue des Cerisiers"], "postcode": "75011"},
            }
            r = until_not_busy(lambda body=body: secretary("POST", "/api/v1/contacts", json=body))
            assert r.status_code == 201, r.text
            self.donors.append(r.json()["id"])
        r = until_not_busy(
            lambda: secretary(
                "POST",
                "/api/v1/contacts/imports",
                files=[
                    ("origin_kind", (None, "petition")),
                    ("origin_detail", (None, "chaos")),
                    ("tag", (None, self.tag)),
                    ("file", ("chaos.csv", csv_rows(self.tag, ROWS), "text/csv")),
                ],
            )
        )
        assert r.status_code == 202, r.text
        self.job_id = r.json()["id"]
        self._burst = threading.Thread(target=self._pay_all, name=f"burst-{self.tag}")
        self._burst.start()

    def _pay_all(self) -> None:
        try:
            for i, donor in enumerate(self.donors):
                provider_id = f"chaos-{self.tag}-{i}"
                self.provider_ids.append(provider_id)
                for _ in range(2):  # the provider notifies, then retries
                    self._notify(donor, provider_id)
        except Exception as exc:  # shown by finish()
            self.errors.append(repr(exc))

    def _notify(self, contact_id: str, provider_id: str) -> None:
        """As a provider does: retried until a 2xx (404 while memberships has not learnt
        the contact; 503 or a refused connection while a fault lasts)."""
        body = json.dumps(
            {
                "provider": "helloasso",
                "provider_payment_id": provider_id,
                "contact_id": contact_id,
                "amount_cents": 5_000,
                "currency": "EUR",
                "method": "card",
                "purpose": "donation",
                "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
            }
        ).encode()
        secret = self.stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
            try:
                r = self.http.post("/api/v1/webhooks/payments", content=body, headers=headers)
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            self.answers[provider_id].append(r.status_code)
            if r.status_code in (200, 201):
                return
            if r.status_code not in (404, 502, 503, 504):
                raise AssertionError(f"payment {provider_id}: {r.status_code} {r.text[:300]}")
            time.sleep(0.3)
        raise AssertionError(f"payment {provider_id} never accepted: {self.answers[provider_id]}")

    def import_progress(self) -> dict[str, Any]:
        """The job as the gateway shows it; {} while it answers 503 (Retry-After)."""
        r = self.federation.secretary("GET", f"/api/v1/contacts/imports/{self.job_id}")
        if r.status_code == 503 and r.headers.get("Retry-After"):
            return {}
        assert r.status_code == 200, r.text
        return dict(r.json())

    def import_started(self) -> dict[str, Any] | NotYet:
        job = self.import_progress()
        return job if job.get("progress", {}).get("rows_done", 0) > 0 else NotYet(job)

    def finish(self) -> dict[str, Any]:
        job = wait_for(
            lambda: (j := self.import_progress()).get("status") in ("done", "failed") and j,
            "the import ends",
        )
        assert job["status"] == "done", job
        assert job["counts"]["created"] == ROWS and job["counts"]["rejected"] == 0, job
        assert self._burst is not None
        self._burst.join(RECOVERY_TIMEOUT)
        assert not self._burst.is_alive(), "the payment burst did not end"
        assert not self.errors, self.errors
        # each notification recorded at most once (201); its retry is a duplicate (200)
        assert all(a.count(201) <= 1 for a in self.answers.values()), dict(self.answers)
        return job


# --- reconciliation: the stores against the topics ---------------------------------------


async def _read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of ``topic``, up to its end now."""
    consumer = AIOKafkaConsumer(
        topic,  # no group: every partition of the topic is assigned to this consumer
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:  # noqa: ASYNC110 (no event to await: aiokafka assigns after its first metadata)
            await asyncio.sleep(0.1)
        parts = sorted(consumer.assignment())
        assert parts, f"no partition of {topic} assigned"
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 5:
            positions = {tp: await consumer.position(tp) for tp in parts}
            if all(positions[tp] >= ends[tp] for tp in parts):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
                idle_since = time.monotonic()
        return records
    finally:
        await consumer.stop()


def events_by_key(stack: RunningStack, topic: str, keys: set[str]) -> dict[str, set[str]]:
    """Per aggregate key among ``keys``: the distinct event ids the topic holds for it (a
    relay that published twice after a fault sends the same event id again: one id)."""
    records = asyncio.run(_read_topic(stack.cfg.kafka_bootstrap, stack.cfg.topic_prefix + topic))
    out: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        key = rec.key.decode() if rec.key else ""
        if key in keys:
            out[key].add(json.loads(rec.value)["event_id"])
    return out


def reconcile(stack: RunningStack, flow: Flow) -> list[str]:
    """What is lost or doubled (empty: nothing). Compares every store with the topics."""
    problems: list[str] = []
    db = stack.cfg.database_prefix
    with MongoClient(stack.cfg.mongo_url, serverSelectionTimeoutMS=10_000) as mongo:
        contacts = mongo[f"{db}contacts"]["contacts"]
        imported = {d["_id"] for d in contacts.find({"tags": flow.tag}, {"_id": 1})}
        if len(imported) != ROWS:
            problems.append(f"{len(imported)} contacts carry the import's tag, not {ROWS}")
        people = imported | set(flow.donors)
        projections = (
            ("consent", "contact_hashes"),
            ("messaging", "contacts"),
            ("memberships", "people"),
        )
        memberships = mongo[f"{db}memberships"]
        payments = list(
            memberships["payments"].find({"provider_payment_id": {"$in": flow.provider_ids}})
        )
        payment_ids = {p["_id"] for p in payments}
        receipts = list(
            memberships["receipts"].find(
                {"payment_id": {"$in": list(payment_ids)}, "status": "issued"}
            )
        )
        # the stores first (cheap): while a projection still catches up, the topics
        # (read from their beginning) need not be read yet
        for service, collection in projections:
            held = mongo[f"{db}{service}"][collection].count_documents(
                {"_id": {"$in": list(people)}}
            )
            if held != len(people):
                problems.append(f"{service}.{collection}: {held} of {len(people)} contacts")
        if len({r["payment_id"] for r in receipts}) < len(payment_ids):
            problems.append(f"receipts: {len(receipts)} for {len(payment_ids)} payments")
        if problems:
            return problems

        created = events_by_key(stack, "contact-created", people)
        missing = people - set(created)
        doubled = {k: v for k, v in created.items() if len(v) > 1}
        if missing:
            problems.append(f"{len(missing)} contacts without a contact-created event")
        if doubled:
            problems.append(f"{len(doubled)} contacts created by two distinct events")
        event_ids = {i for ids in created.values() for i in ids}
        for service, collection in (
            ("consent", "contact_hashes"),
            ("messaging", "contacts"),
            ("memberships", "people"),
        ):
            held = {
                d["_id"]
                for d in mongo[f"{db}{service}"][collection].find(
                    {"_id": {"$in": list(people)}}, {"_id": 1}
                )
            }
            if held != people:
                problems.append(f"{service}.{collection} lacks {len(people - held)} contacts")
            applied = mongo[f"{db}{service}"]["processed_events"].count_documents(
                {"_id": {"$in": [f"{service}:{e}" for e in event_ids]}}
            )
            if applied != len(event_ids):
                problems.append(f"{service} applied {applied} of {len(event_ids)} contact-created")

        per_provider_id = defaultdict(list)
        for p in payments:
            per_provider_id[p["provider_payment_id"]].append(p["_id"])
        if len(flow.provider_ids) != PAYMENTS or any(
            len(per_provider_id[i]) != 1 for i in flow.provider_ids
        ):
            problems.append(
                f"payments recorded: {sorted(len(v) for v in per_provider_id.values())[-3:]} "
                f"per notification, {len(per_provider_id)} of {len(flow.provider_ids)}"
            )
        received = events_by_key(stack, "payment-received", payment_ids)
        if set(received) != payment_ids or any(len(v) != 1 for v in received.values()):
            problems.append(
                f"payment-received: {len(received)} of {len(payment_ids)} payments, "
                f"{sum(len(v) > 1 for v in received.values())} twice"
            )
        per_payment: dict[str, int] = defaultdict(int)
        for r in receipts:
            per_payment[r["payment_id"]] += 1
        if set(per_payment) != payment_ids or any(n != 1 for n in per_payment.values()):
            problems.append(
                f"receipts: {len(per_payment)} of {len(payment_ids)} payments have one, "
                f"{sum(n > 1 for n in per_payment.values())} have several"
            )
        numbers = [r["number"] for r in receipts]
        if len(set(numbers)) != len(numbers):
            problems.append("two receipts share a number")
        receipt_ids = {r["_id"] for r in receipts}
        issued = events_by_key(stack, "receipt-issued", receipt_ids)
        if set(issued) != receipt_ids or any(len(v) != 1 for v in issued.values()):
            problems.append(f"receipt-issued: {len(issued)} of {len(receipt_ids)} receipts")
    return problems


def reconciled(stack: RunningStack, flow: Flow, timer: Timer) -> None:
    """Wait until the reconciliation finds nothing wrong (projections catch up), then
    record how long that took after the fault."""
    last: list[str] = []

    def clean() -> bool:
        nonlocal last
        last = reconcile(stack, flow)
        return not last

    try:
        wait_for(clean, "stores and topics reconcile")
    except AssertionError:
        raise AssertionError(f"not reconciled after {RECOVERY_TIMEOUT:.0f} s: {last}") from None
    timer.mark("reconciled (nothing lost or doubled)")


def first_success(flow: Flow, timer: Timer) -> None:
    def ok() -> bool:
        r = flow.federation.secretary("GET", "/api/v1/contacts", params={"limit": 1})
        return r.status_code == 200

    wait_for(ok, "a request succeeds")
    timer.mark("first 2xx through the gateway")


def every_worker_ready(stack: RunningStack, supervisor: Supervisor, timer: Timer) -> None:
    def ready() -> bool:
        if not supervisor.settled():
            return False
        for svc in ("contacts", "consent", "memberships", "messaging", "gateway"):
            r = httpx.get(f"{stack.worker_url(svc)}/ready", timeout=2)
            if r.status_code != 200:
                return False
        return True

    wait_for(ready, "every worker is ready")
    timer.mark("every worker ready")


# --- the faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_broker_restarts_mid_import_and_payment_burst(
    stack: RunningStack,
    supervisor: Supervisor,
    federation: Federation,
    http: httpx.Client,
    sig: signal.Signals,
) -> None:
    flow = Flow(stack, federation, http)
    flow.start()
    wait_for(
        flow.import_started,
        "the import starts",
    )
    restarts_before = dict(supervisor.restarts)
    timer = Timer(f"broker {sig.name}")
    stop_broker(stack, sig)
    time.sleep(3)  # work goes on against a missing broker for a moment
    start_broker(stack)
    timer.end_fault()

    first_success(flow, timer)
    flow.finish()
    timer.mark("import done, every payment accepted")
    reconciled(stack, flow, timer)
    every_worker_ready(stack, supervisor, timer)
    restarted = {
        k: v - restarts_before.get(k, 0)
        for k, v in supervisor.restarts.items()
        if v != restarts_before.get(k, 0)
    }
    RESULTS.append(timer.report() + f"; processes restarted: {restarted or 'none'}")
    print(RESULTS[-1])


def test_each_worker_killed_in_turn_loses_and_doubles_nothing(
    stack: RunningStack, supervisor: Supervisor, federation: Federation, http: httpx.Client
) -> None:
    flow = Flow(stack, federation, http)
    flow.start()
    timer = Timer("each worker SIGKILLed in turn")
    for name in WORKERS:
        pid = stack.kill(name)  # SIGKILL, mid-flow; the supervisor starts it again
        wait_for(
            lambda name=name, pid=pid: (
                (p := stack.pid(name)) is not None
                and p != pid
                and httpx.get(
                    f"{stack.worker_url(name.split('-')[0])}/ready", timeout=2
                ).status_code
                == 200
            ),
            f"{name} back",
        )
    timer.end_fault()
    flow.finish()
    timer.mark("import done, every payment accepted")
    reconciled(stack, flow, timer)
    RESULTS.append(timer.report() + f"; restarts so far: {supervisor.restarts}")
    print(RESULTS[-1])


@dataclass
class Answer:
    started: float
    took: float
    status: int | None  # None: no answer (connection refused or reset)
    retry_after: str | None
    path: str
    correlation: str | None = None  # X-Correlation-ID: find the request in the logs


def _load(
    flow: Flow, stop: threading.Event, answers: list[Answer], write: bool, timeout: float
) -> None:
    secretary = flow.federation.secretary
    i = 0
    while not stop.is_set():
        i += 1
        started = time.monotonic()
        if write:
            path = "/api/v1/contacts"
            kw: dict[str, Any] = {
                "json": {
                    "given_name": "Paul",
                    "family_name": f"Pause{i}-{flow.tag}",
                    "email": f"pause{i}.{flow.tag}.{threading.get_ident()}@example.org",
                    "origin": {"kind": "event", "detail": "chaos"},
                }
            }
            method = "POST"
        else:
            path, method, kw = "/api/v1/contacts", "GET", {"params": {"limit": 5}}
        correlation = uuid.uuid4().hex
        try:
            r = secretary(
                method, path, timeout=timeout, headers={"X-Correlation-ID": correlation}, **kw
            )
            status, retry = r.status_code, r.headers.get("Retry-After")
        except httpx.HTTPError:
            status, retry = None, None
        took = time.monotonic() - started
        answers.append(Answer(started, took, status, retry, path, correlation))
        time.sleep(0.2)


def test_a_paused_store_gets_503_with_retry_after_and_the_workers_resume(
    stack: RunningStack, supervisor: Supervisor, federation: Federation, http: httpx.Client
) -> None:
    flow = Flow(stack, federation, http)
    settings_bound = 30.0  # the gateway's upstream timeout: past it a request hangs
    stop = threading.Event()
    answers: list[Answer] = []
    load = [
        threading.Thread(target=_load, args=(flow, stop, answers, write, settings_bound + 30))
        for write in (False, False, True, True)
    ]
    for t in load:
        t.start()
    time.sleep(2)
    timer = Timer("store paused 10 s")
    paused_at = time.monotonic()
    signal_group(stack, "store", signal.SIGSTOP)
    try:
        time.sleep(10)
    finally:
        signal_group(stack, "store", signal.SIGCONT)
    timer.end_fault()

    def answered_ok_after() -> float | None:
        ends = [
            a.started + a.took
            for a in list(answers)
            if a.status in (200, 201) and a.started + a.took >= timer.fault_ended
        ]
        return min(ends) if ends else None

    first_ok = wait_for(answered_ok_after, "a request succeeds after the pause")
    timer.figures["first 2xx through the gateway"] = round(first_ok - timer.fault_ended, 1)
    time.sleep(2)
    stop.set()
    for t in load:
        t.join(settings_bound + 60)

    during = [a for a in answers if a.started + a.took >= paused_at]
    statuses = sorted({a.status for a in during}, key=str)
    assert not [a for a in during if a.status is None], "a request got no answer at all"
    assert not [a for a in during if a.status == 500], f"500s during the pause: {statuses}"
    unavailable = [a for a in during if a.status == 503]
    assert unavailable, f"no 503 while the store was paused: {statuses}"
    assert all(a.retry_after and a.retry_after.isdigit() for a in unavailable), [
        a.retry_after for a in unavailable
    ]
    assert set(statuses) <= {200, 201, 503}, statuses
    slowest = max(a.took for a in during)
    slow = [
        f"{a.path} {a.status} after {a.took:.1f} s, sent {a.started - paused_at:+.1f} s "
        f"from the pause (correlation {a.correlation})"
        for a in during
        if a.took >= settings_bound
    ]
    assert slowest < settings_bound, f"a request was held {slowest:.1f} s: {slow}"
    timer.figures["slowest answer during the pause"] = round(slowest, 1)
    timer.notes.append(f"{len(unavailable)} answers 503 + Retry-After, {len(during)} in all")

    # the workers resume by themselves: a contact made now reaches every projection
    flow.start()
    flow.finish()
    reconciled(stack, flow, timer)
    every_worker_ready(stack, supervisor, timer)
    RESULTS.append(timer.report() + f"; restarts so far: {supervisor.restarts or 'none'}")
    print(RESULTS[-1])
