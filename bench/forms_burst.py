"""Benchmark: a petition going viral, through the gateway, on the whole platform.

    uv run --frozen python bench/forms_burst.py [--rate 1000] [--seconds 30]
        [--repeat-share 0.01] [--abuser-rate 100] [--abuse-seconds 10] [--others 200]
        [--retries 3] [--drain-timeout 1800]

It starts one isolated platform (every service API and worker as real processes, on a
Kafka, a store and an SMTP sink of its own: tribune_devstack's RunningStack on
StackConfig.for_tests(), free ports, a folder under .local/tests, stopped and deleted at
the end; the dev stack is never touched), publishes a petition with an email consent box
(double opt-in), then:

1. **Burst.** ``--rate`` submissions per second for ``--seconds`` seconds, open loop (each
   request leaves at its planned moment whatever the answers before it), each from its own
   client address (``X-Forwarded-For``; the bench's gateway trusts 127.0.0.1 as a proxy)
   and its own person, except ``--repeat-share`` of them: the same person signing again
   (counted once). POST /api/v1/public/forms/{id} with JSON, as a party website posts.
   The page tokens a browser would GET first are signed by the bench with the stack's
   secret beforehand and aged past the minimum fill time: the page GETs are not part of
   the measured burst (they are served from a cache; the submissions are the writes).
   A submission shed on purpose (429 from the intake's admission bound, or 503 from the
   gateway's bounded wait for a connection, both with Retry-After) is sent again after
   the time named, up to ``--retries`` times, as the page tells the person to.
   Figures: answers by status, each submission's last answer, latency p50/p99 (from the
   planned moment to the last answer), accepted per second; the goal "no 5xx" (literal:
   not one 5xx answer) and "no accidental 5xx" (every 5xx is a shed with Retry-After;
   no timeout, no broken connection).
2. **Applied exactly once.** Once the burst is over, until every accepted submission is
   applied: the store holds exactly one submission document per accepted submission, all
   applied; the petition's counter equals the distinct people; the SMTP sink received
   exactly one confirmation email per distinct person (goal: 0 missing, 0 duplicates).
   The time to drain is reported (the page answers while submissions queue).
3. **Floor.** The same writes the intake makes (one submission document and one outbox
   entry per submission) written raw, ``insert_many`` in transactions of the intake's
   batch size, into a scratch database of the same store: the store's own floor. Ratio =
   accepted per second / floor.
4. **Abuse.** One client at ``--abuser-rate`` submissions per second for
   ``--abuse-seconds`` while ``--others`` other clients each submit once, spread over the
   same time. Goal: the abuser is throttled (429) while every other client passes.

Figures go to .local/bench/forms_burst.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import time
import uuid
from collections import Counter
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from pymongo import AsyncMongoClient
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig, repo_root

#: requests on the wire at once (set from --connections). The burst goes through aiohttp
#: (C parser): with httpx the load generator took a whole CPU of the two and measured
#: itself; its pool also slows down quadratically with thousands of waiters
IN_FLIGHT = asyncio.Semaphore(256)
OUT = repo_root() / ".local" / "bench" / "forms_burst.json"
PURPOSE = "news"


def now() -> float:
    return time.perf_counter()


def address(i: int, base: int = 10) -> str:
    """A distinct client address per index (10.x.y.z)."""
    return f"{base}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def eventually(call, accept, timeout: float = 120.0, interval: float = 0.5):
    deadline = now() + timeout
    while True:
        value = await call()
        if accept(value):
            return value
        if now() > deadline:
            raise TimeoutError(f"not reached in {timeout}s: {value!r}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- setup


async def publish_petition(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    version = f"bench-petition-{uuid.uuid4().hex[:6]}"
    text = {
        "version": version,
        "title": "Pétition",
        "body": "J'accepte que la fédération m'écrive par email au sujet de cette pétition.",
    }
    r = await http.post("/api/v1/consents/texts", json=text, headers=auth)
    r.raise_for_status()
    form = {
        "kind": "petition",
        "title": "Sauvons la ligne de bus 42",
        "intro": "Signez pour que la ligne 42 continue de desservir nos villages.",
        "thank_you": "Merci ! Confirmez votre adresse email pour être tenu au courant.",
        "fields": [
            {"name": "given_name", "required": True},
            {"name": "family_name", "required": True},
            {"name": "email", "required": True},
        ],
        "consents": [{"channel": "email", "purpose": PURPOSE, "text_version": version}],
        "goal": 100_000,
        "tags": ["bus-42"],
        "reference": "bench-petition",
    }

    async def create() -> httpx.Response:
        # 422 until contacts has projected the consent text (consent-text-published)
        return await http.post("/api/v1/forms", json=form, headers=auth)

    made = await eventually(create, lambda r: r.status_code == 201)
    form_id = made.json()["id"]
    definition = (await http.get(f"/api/v1/public/forms/{form_id}.json")).json()
    return {"id": form_id, "definition": definition}


def page_tokens(stack: RunningStack, form: dict[str, Any], count: int) -> list[str]:
    """``count`` page tokens for the form, as its page hands them out (signed with the
    stack's secret, so the burst measures submissions, not page GETs)."""
    from contacts.forms.domain import PageTokens, texts_digest

    secret = os.environ["CONTACTS_FORMS_TOKEN_SECRET"]
    boxes = form["definition"]["consents"]
    tokens = PageTokens(secret, 24 * 3600, time.time)
    digest = texts_digest(boxes)
    return [tokens.issue(form["id"], 0, digest) for _ in range(count)]


def submission(i: int, person: int, token: str) -> dict[str, Any]:
    return {
        "answers": {
            "given_name": "Camille",
            "family_name": f"Signataire-{person}",
            "email": f"signataire.{person}@example.org",
        },
        "consents": [{"channel": "email", "purpose": PURPOSE}],
        "token": token,
        "website": "",
    }


# ---------------------------------------------------------------- load


class Tally:
    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.accepted_people: list[int] = []
        self.first_sent = 0.0
        self.last_answer = 0.0
        #: a few 5xx answers and refusals as the client got them (what failed, and whether
        #: a Retry-After was chosen): the cause of a 5xx is in its body
        self.samples: dict[str, list[str]] = {}
        self.retry_after: Counter[str] = Counter()
        #: each submission's last answer (after its retries), and how many were sent again
        self.final: Counter[str] = Counter()
        self.retried = 0


async def post_one(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    client_ip: str,
    tally: Tally,
    person: int,
    retries: int = 0,
) -> int:
    """Send one submission; a shed one (429 or 503 with Retry-After) is sent again after
    the time it names, up to ``retries`` times, as the page tells the person to."""
    began = now()  # the planned moment: time waiting for a connection counts
    attempt = 0
    while True:
        wait = None
        try:
            async with (
                IN_FLIGHT,
                http.post(
                    url,
                    data=json.dumps(body).encode(),
                    headers={"X-Forwarded-For": client_ip, "Content-Type": "application/json"},
                ) as r,
            ):
                code = r.status
                text = await r.text()
            tally.status[str(code)] += 1
            if code >= 429:
                if "retry-after" in r.headers:
                    tally.retry_after[str(code)] += 1
                    wait = float(r.headers["retry-after"])
                held = tally.samples.setdefault(str(code), [])
                if len(held) < 3:
                    held.append(text[:300])
        except (aiohttp.ClientError, TimeoutError) as exc:
            code = 0
            tally.status[f"error:{type(exc).__name__}"] += 1
            held = tally.samples.setdefault(type(exc).__name__, [])
            if len(held) < 3:
                held.append(repr(exc)[:300])
        if wait is None or code not in (429, 503) or attempt >= retries:
            break
        attempt += 1
        tally.retried += 1
        await asyncio.sleep(wait)
    ended = now()
    tally.final[str(code)] += 1
    tally.latencies.append(ended - began)
    tally.last_answer = max(tally.last_answer, ended)
    if code == 202:
        tally.accepted_people.append(person)
    return code


async def open_loop(plan: list[tuple[float, Any]]) -> None:
    """Start each coroutine factory at its planned offset (seconds from now)."""
    start = now()
    tasks: list[asyncio.Task[Any]] = []
    for offset, make in plan:
        delay = start + offset - now()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(make()))
    await asyncio.gather(*tasks)


async def burst(
    http: aiohttp.ClientSession,
    form_id: str,
    tokens: list[str],
    rate: int,
    seconds: int,
    repeat_share: float,
    retries: int,
) -> Tally:
    url = f"/api/v1/public/forms/{form_id}"
    total = rate * seconds
    repeat_every = int(1 / repeat_share) if repeat_share > 0 else 0
    tally = Tally()
    plan = []
    for i in range(total):
        # every repeat_every-th submission is the person of the one before signing again
        person = i - 1 if repeat_every and i % repeat_every == repeat_every - 1 else i
        body = submission(i, person, tokens[i])

        def make(body=body, i=i, person=person):
            return post_one(http, url, body, address(i), tally, person, retries)

        plan.append((i / rate, make))
    tally.first_sent = now()
    await open_loop(plan)
    return tally


async def abuse(
    http: aiohttp.ClientSession,
    form_id: str,
    tokens: list[str],
    abuser_rate: int,
    seconds: int,
    others: int,
    person_base: int,
) -> dict[str, Any]:
    url = f"/api/v1/public/forms/{form_id}"
    abuser, fair = Tally(), Tally()
    plan = []
    for i in range(abuser_rate * seconds):
        body = submission(i, person_base + i, tokens[i])

        def make(body=body, i=i):
            return post_one(http, url, body, "192.0.2.66", abuser, person_base + i)

        plan.append((i / abuser_rate, make))
    offset = abuser_rate * seconds
    for j in range(others):
        body = submission(j, person_base + offset + j, tokens[offset + j])

        def make_other(body=body, j=j):
            return post_one(http, url, body, address(j, 172), fair, person_base + offset + j)

        plan.append((j * seconds / max(1, others), make_other))
    plan.sort(key=lambda p: p[0])
    await open_loop(plan)
    return {
        "accepted_people": abuser.accepted_people + fair.accepted_people,
        "abuser_sent": abuser_rate * seconds,
        "abuser_status": dict(abuser.status),
        "samples": {**abuser.samples, **{f"others:{k}": v for k, v in fair.samples.items()}},
        "others_sent": others,
        "others_status": dict(fair.status),
        "abuser_throttled": abuser.status.get("429", 0),
        "others_passed": fair.status.get("202", 0),
        "met": abuser.status.get("429", 0) > 0 and fair.status.get("202", 0) == others,
    }


# ---------------------------------------------------------------- checks


def mails_by_recipient(maildir: Path) -> Counter[str]:
    """Confirmation emails in the sink's folder, counted per recipient."""
    counts: Counter[str] = Counter()
    for path in maildir.glob("*.eml"):
        head = path.read_bytes()[:8192].decode("utf-8", "replace")
        for line in head.splitlines():
            if line.lower().startswith("to:"):
                # "Camille Signataire-5 <signataire.5@example.org>": the address alone
                counts[parseaddr(line.split(":", 1)[1])[1].lower()] += 1
                break
    return counts


def log_events(stack: RunningStack) -> dict[str, int]:
    """Warnings and errors the platform's processes logged, counted by process and event:
    where a 5xx came from (the gateway's upstream failures, the intake's, the store's)."""
    counts: Counter[str] = Counter()
    for path in sorted(stack.cfg.logs_dir.glob("*.log")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.startswith("{"):
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("warning", "error", "critical"):
                    counts[f"{path.stem}:{entry.get('event')}"] += 1
    return dict(counts.most_common(30))


async def drained(
    stack: RunningStack,
    form_id: str,
    accepted: int,
    people: set[int],
    timeout: float,
) -> dict[str, Any]:
    """Wait until every accepted submission is applied and every person has their one
    confirmation email; then check nothing is there twice."""
    env = stack.env
    client: AsyncMongoClient = AsyncMongoClient(stack.cfg.store_url("contacts"))
    db = client[f"{env['TRIBUNE_DATABASE_PREFIX']}contacts"]
    maildir = stack.cfg.infra_dir / "mail"
    began = now()
    wanted = {f"signataire.{p}@example.org" for p in people}
    try:
        while True:
            stored = await db.form_submissions.count_documents({"form_id": form_id})
            applied = await db.form_submissions.count_documents(
                {"form_id": form_id, "status": "applied"}
            )
            mails = mails_by_recipient(maildir)
            got = sum(1 for a in wanted if mails.get(a))
            print(
                f"  drain {now() - began:5.0f}s: stored {stored}/{accepted}, applied "
                f"{applied}, confirmation emails {got}/{len(wanted)}",
                flush=True,
            )
            if (applied >= accepted and got >= len(wanted)) or now() - began > timeout:
                break
            await asyncio.sleep(10)
        counter = await db.form_counters.find_one({"_id": form_id}) or {}
        return {
            "drain_seconds": round(now() - began, 1),
            "stored": stored,
            "applied": applied,
            "accepted": accepted,
            "distinct_people": len(wanted),
            "counter": counter.get("signatures"),
            "emails_missing": sum(1 for a in wanted if not mails.get(a)),
            "emails_duplicated": sum(1 for a in wanted if mails.get(a, 0) > 1),
            "met": stored == accepted
            and applied == accepted
            and counter.get("signatures") == len(wanted)
            and all(mails.get(a) == 1 for a in wanted),
        }
    finally:
        await client.close()


async def floor_rate(stack: RunningStack, count: int, batch: int) -> float:
    """The intake's writes raw: a submission document and an outbox entry each, in
    transactions of ``batch``, into a scratch database."""
    env = stack.env
    # contacts' store: the one the intake writes to
    client: AsyncMongoClient = AsyncMongoClient(stack.cfg.store_url("contacts"))
    db = client[f"{env['TRIBUNE_DATABASE_PREFIX']}floor_{uuid.uuid4().hex[:6]}"]
    await db.create_collection("form_submissions")
    await db.create_collection("outbox")
    received = time.time()

    def docs(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        sub_id = uuid.uuid4().hex
        sub = {
            "_id": sub_id,
            "form_id": "f",
            "form_kind": "petition",
            "federation_id": "root",
            "federation_path": "/root/",
            "status": "queued",
            "answers": submission(i, i, "")["answers"],
            "consents": [
                {
                    "channel": "email",
                    "purpose": PURPOSE,
                    "text_version": "v",
                    "text_sha256": "0" * 64,
                }
            ],
            "proof": {
                "submitted_at": "2026-12-03T09:00:00Z",
                "ip": "10.0.0.0/24",
                "user_agent": "x",
            },
            "form": {"kind": "petition", "title": "t", "tags": ["bus-42"], "reference": "r"},
            "received_at": received,
        }
        outbox = {
            "_id": uuid.uuid4().hex,
            "topic": "form-submitted",
            "key": sub_id,
            "value": json.dumps({"submission_id": sub_id, "form_id": "f"}),
            "published": False,
            "created_at": received,
        }
        return sub, outbox

    rows = [docs(i) for i in range(count)]
    began = now()
    for start in range(0, count, batch):
        chunk = rows[start : start + batch]
        async with client.start_session() as session, await session.start_transaction():
            await db.form_submissions.insert_many([s for s, _ in chunk], session=session)
            await db.outbox.insert_many([o for _, o in chunk], session=session)
    rate = count / (now() - began)
    await client.drop_database(db.name)
    await client.close()
    return rate


# ---------------------------------------------------------------- run


async def run(args: argparse.Namespace, stack: RunningStack) -> dict[str, Any]:
    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections
    )
    wire = aiohttp.ClientSession(
        base_url=stack.gateway_url,
        connector=aiohttp.TCPConnector(limit=args.connections),
        timeout=aiohttp.ClientTimeout(total=args.timeout),
        trust_env=False,
    )
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url, timeout=args.timeout, trust_env=False, limits=limits
        ) as http,
        wire,
    ):
        email, password = stack.admin_credentials
        r = await http.post("/api/v1/auth/token", data={"username": email, "password": password})
        r.raise_for_status()
        form = await publish_petition(http, r.json()["access_token"])
        total = args.rate * args.seconds
        extra = args.abuser_rate * args.abuse_seconds + args.others
        tokens = page_tokens(stack, form, total + extra)
        await asyncio.sleep(float(form["definition"]["min_fill_seconds"]) + 0.5)

        print(f"burst: {args.rate}/s for {args.seconds}s ({total} submissions) ...", flush=True)
        tally = await burst(
            wire, form["id"], tokens, args.rate, args.seconds, args.repeat_share, args.retries
        )
        accepted = len(tally.accepted_people)
        span = max(1e-9, tally.last_answer - tally.first_sent)
        server_errors = sum(n for s, n in tally.status.items() if s.startswith("5"))
        # shed on purpose: an explicit bound answered at once with a Retry-After; anything
        # else 5xx (or a broken connection) is an accident
        shed = sum(tally.retry_after.values())
        accidents = (
            server_errors
            - tally.retry_after.get("503", 0)
            + sum(n for s, n in tally.status.items() if s.startswith("error:"))
        )
        burst_figures = {
            "sent": total,
            "status": dict(tally.status),
            "final_status": dict(tally.final),
            "retried": tally.retried,
            "shed_with_retry_after": shed,
            "server_errors": server_errors,
            "accidental_errors": accidents,
            "with_retry_after": dict(tally.retry_after),
            "samples": tally.samples,
            "accepted": accepted,
            "accepted_per_second": round(accepted / span, 1),
            "p50_ms": round(percentile(tally.latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 1),
            "mean_ms": round(statistics.fmean(tally.latencies) * 1000, 1),
        }
        burst_figures["logged"] = log_events(stack)
        print(json.dumps(burst_figures), flush=True)

        print("abuse: one client hammering while others sign ...", flush=True)
        abuse_figures = await abuse(
            wire,
            form["id"],
            tokens[total:],
            args.abuser_rate,
            args.abuse_seconds,
            args.others,
            person_base=10_000_000,
        )
        abuse_people = abuse_figures.pop("accepted_people")
        print(json.dumps(abuse_figures), flush=True)

    people = set(tally.accepted_people) | set(abuse_people)
    print("waiting for every accepted submission to be applied and confirmed ...", flush=True)
    drain = await drained(
        stack, form["id"], accepted + len(abuse_people), people, args.drain_timeout
    )
    print(json.dumps(drain), flush=True)
    floor = await floor_rate(stack, min(total, 20_000), args.floor_batch)
    return {
        "burst": burst_figures,
        "exactly_once": drain,
        "floor_per_second": round(floor, 1),
        "ratio_to_floor": round(burst_figures["accepted_per_second"] / floor, 3),
        "abuse": abuse_figures,
        "no_5xx": server_errors == 0,
        "no_accidental_5xx": accidents == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeat-share", type=float, default=0.01)
    parser.add_argument("--abuser-rate", type=int, default=100)
    parser.add_argument("--abuse-seconds", type=int, default=10)
    parser.add_argument("--others", type=int, default=200)
    parser.add_argument(
        "--retries", type=int, default=3, help="a shed submission is sent again (Retry-After)"
    )
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--floor-batch", type=int, default=500)
    args = parser.parse_args()
    global IN_FLIGHT
    IN_FLIGHT = asyncio.Semaphore(args.connections)
    # the bench is the party's reverse proxy: it says which client each request is from
    os.environ["GATEWAY_TRUSTED_PROXIES"] = "127.0.0.1"
    # the page tokens' secret, known to the bench so it can sign the pages it "served"
    os.environ["CONTACTS_FORMS_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    cfg = StackConfig.for_tests(name=f"bench-forms-{uuid.uuid4().hex[:6]}", store_in_memory=False)
    print(f"starting an isolated platform ({cfg.name}) ...", flush=True)
    with RunningStack(cfg, environment="test") as stack:
        try:
            figures = asyncio.run(run(args, stack))
        finally:
            # the processes' logs outlive the stack's folder: where a 5xx came from
            kept = OUT.parent / "forms_burst_logs"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(stack.cfg.logs_dir, kept, dirs_exist_ok=True)
    figures["args"] = vars(args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    ok = figures["no_5xx"] and figures["exactly_once"]["met"] and figures["abuse"]["met"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
