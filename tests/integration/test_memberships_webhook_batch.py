"""The payment webhook at batch speed, over the real store: payments arriving at once share
transactions, and the store ends exactly as if the same calls had been recorded one by one
through the one-payment path (provider retries recorded once, a person's gifts checked
together against the yearly ceiling, a refused gift flagged with its reason while the
others are recorded, dues renewing memberships); a shared transaction that cannot commit
leaves nothing and each payment is then recorded alone."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from memberships.donations.store import GUARDS
from memberships.main import create_app
from memberships.payments.notice import DonorDeclaration, PaymentNotice
from memberships.payments.recording import PaymentRecorder, Recorded
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import CONTACTS, MEMBERSHIPS, PAYMENTS
from prometheus_client import REGISTRY
from pymongo.errors import OperationFailure
from support import deliver
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import DomainError, NotFound
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

SECRET = "whsec-batch-0123456789abcdef0123456789"
PARIS = "/root/paris/"
FRENCH = {"natural_person": True, "nationality": "FR", "resides_in_france": True}
PAID_AT = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", SECRET)
    # small batches, two at once, waiting a little to fill: several batches interleave
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_BATCH_MAX_SIZE", "16")
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_BATCH_MAX_WAIT_SECONDS", "0.05")
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_BATCH_MAX_IN_FLIGHT", "2")
    return MembershipsSettings()


def other_world(settings: MembershipsSettings) -> MembershipsSettings:
    """The same service on databases of its own (the one-by-one reference)."""
    return settings.model_copy(update={"database_prefix": settings.database_prefix + "seq_"})


@asynccontextmanager
async def running(settings: MembershipsSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def seed(store: Store, contact_ids: list[str]) -> None:
    handlers = ContactDirectory(store).handlers()
    for contact_id in contact_ids:
        envelope = new_envelope(
            ContactCreatedV1(
                contact_id=contact_id, contact_version=1, contact=ContactState(given_name="Ada")
            ),
            producer="contacts",
            federation_id="paris",
            federation_path=PARIS,
        )
        await deliver(store, handlers, envelope)


def body(pid: str, contact_id: str, cents: int = 3000, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "provider": "stripe",
        "provider_payment_id": pid,
        "contact_id": contact_id,
        "amount_cents": cents,
        "currency": "EUR",
        "method": "card",
        "purpose": "dues",
        "paid_at": PAID_AT.isoformat(),
    }
    fields.update(changes)
    return fields


def gift(pid: str, contact_id: str, cents: int, **changes: Any) -> dict[str, Any]:
    return body(pid, contact_id, cents, purpose="donation", donor=FRENCH, **changes)


def as_notice(fields: dict[str, Any]) -> PaymentNotice:
    data = dict(fields, paid_at=datetime.fromisoformat(fields["paid_at"]))
    if "donor" in data:
        data["donor"] = DonorDeclaration(**data["donor"])
    return PaymentNotice(**data)


CONTACT_IDS = [f"c{i:02d}" for i in range(30)] + ["twin", "big", "double"]


def calls() -> list[dict[str, Any]]:
    """50 webhook calls: dues and gifts, provider retries, a person's two gifts of 5,000 EUR,
    a gift over what a person has left, two dues of one person, cash over the limit and an
    unknown contact."""
    out = [
        gift("pi_twin_a", "twin", 500_000),
        gift("pi_twin_b", "twin", 500_000),
        body("pi_double_a", "double"),
        body("pi_double_b", "double"),
        gift("pi_big", "big", 300_000),  # 5,000 already given: over the ceiling
        gift("pi_cash", "c29", 20_000, method="cash"),  # cash above 150 EUR
        body("pi_ghost", "nobody"),  # 404
    ]
    out += [body(f"pi_dues_{i}", f"c{i:02d}") for i in range(20)]
    out += [gift(f"pi_gift_{i}", f"c{i:02d}", 10_000) for i in range(20, 30)]
    retries = [dict(c) for c in out[7:20]]  # 13 provider retries, interleaved
    mixed: list[dict[str, Any]] = []
    for i, c in enumerate(out):
        mixed.append(c)
        if i >= 7 and retries:
            mixed.append(retries.pop(0))
    assert len(mixed) == 50
    return mixed


PRIOR = gift("pi_big_before", "big", 500_000)


async def snapshot(store: Store) -> dict[str, Any]:
    """What a user would notice, without generated ids and times."""
    payments = await store[PAYMENTS].find({}).to_list()
    memberships = {m["_id"]: m for m in await store[MEMBERSHIPS].find({}).to_list()}
    contacts = await store[CONTACTS].find({}).to_list()
    outbox = await store[OUTBOX].find({}).to_list()
    guards = await store[GUARDS].find({}).to_list()
    current = {
        c["_id"]: memberships[c["current_membership_id"]]
        for c in contacts
        if c.get("current_membership_id")
    }
    return {
        "provider_ids": sorted(p["provider_payment_id"] for p in payments),
        "payments": sorted(
            (
                p["contact_id"],
                p["amount_cents"],
                p["purpose"],
                p["status"],
                (p.get("refusal") or {}).get("rule"),
                p["plan"],
                p["membership_id"] is not None,
            )
            for p in payments
        ),
        "memberships": sorted(
            (
                m["contact_id"],
                m["status"],
                m["starts_on"],
                m["ends_on"],
                m["plan"],
                tuple(h["status"] for h in m["history"]),
            )
            for m in memberships.values()
        ),
        "current": sorted((c, m["status"], m["ends_on"]) for c, m in current.items()),
        "events": sorted(
            Counter(
                (o["envelope"]["type"], o["envelope"]["data"].get("contact_id")) for o in outbox
            ).items()
        ),
        "guards": sorted(g["_id"] for g in guards),
    }


def answer(status_code: int, payload: dict[str, Any]) -> tuple[int, str | None]:
    return status_code, payload.get("status") if status_code < 300 else None


def outcome_answer(result: Any) -> tuple[int, str | None]:
    """What the webhook answers for a one-payment-path result."""
    if isinstance(result, NotFound):
        return 404, None
    return (200 if result.status == "duplicate" else 201), result.status


def committed_batches() -> float:
    value = REGISTRY.get_sample_value(
        "tribune_payment_batches_total", {"service": "memberships", "outcome": "committed"}
    )
    return value or 0.0


async def through_webhook(settings: MembershipsSettings, bodies: list[dict[str, Any]]) -> Any:
    async with running(settings) as app:
        await seed(app.state.store, CONTACT_IDS)
        await app.state.memberships_service.record_payment(as_notice(PRIOR))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def post(fields: dict[str, Any]) -> tuple[int, str | None]:
                raw = json.dumps(fields).encode()
                headers = {"Content-Type": "application/json", **signature_headers(SECRET, raw)}
                r = await client.post("/api/v1/webhooks/payments", content=raw, headers=headers)
                return answer(r.status_code, r.json())

            before = committed_batches()
            answers = await asyncio.gather(*(post(b) for b in bodies))
            batches = committed_batches() - before
        return answers, batches, await snapshot(app.state.store)


async def one_by_one(settings: MembershipsSettings, bodies: list[dict[str, Any]]) -> Any:
    async with running(settings) as app:
        svc: MembershipsService = app.state.memberships_service
        await seed(app.state.store, CONTACT_IDS)
        await svc.record_payment(as_notice(PRIOR))
        answers = []
        for fields in bodies:
            try:
                result: Any = await svc.record_payment(as_notice(fields))
            except DomainError as exc:
                result = exc
            answers.append(outcome_answer(result))
        return answers, await snapshot(app.state.store)


def test_concurrent_webhooks_give_the_state_of_the_same_calls_one_by_one(settings) -> None:
    bodies = calls()
    batched, batches, state = asyncio.run(through_webhook(settings, bodies))
    sequential, reference = asyncio.run(one_by_one(other_world(settings), bodies))

    assert 1 <= batches < len(bodies)  # they did share transactions
    assert Counter(batched) == Counter(sequential)
    assert state == reference
    # what that state is, as the treasurer sees it
    assert Counter(batched)[(200, "duplicate")] == 13
    assert Counter(batched)[(404, None)] == 1
    flagged = [p for p in state["payments"] if p[3] == "flagged_for_refund"]
    assert sorted((p[0], p[1], p[4]) for p in flagged) == [
        ("big", 300_000, "yearly_ceiling"),
        ("c29", 20_000, "cash_limit"),
        ("twin", 500_000, "yearly_ceiling"),
    ]
    assert len(state["provider_ids"]) == len(set(state["provider_ids"])) == 37  # and PRIOR
    double = [m for m in state["current"] if m[0] == "double"]
    assert double == [("double", "active", f"{PAID_AT.year + 1}-12-31")]


def test_one_batch_decides_each_payment_on_its_own(settings) -> None:
    """One batch, recorded directly: a person's two gifts (the second refused with its
    reason), a retry of the first, an unknown contact and a fine payment."""

    async def go() -> list[Any]:
        async with running(settings) as app:
            await seed(app.state.store, ["ada", "bob"])
            recorder: PaymentRecorder = app.state.payment_recorder
            return await recorder.record_many(
                [
                    as_notice(gift("pi_1", "ada", 500_000)),
                    as_notice(gift("pi_2", "ada", 300_000)),
                    as_notice(gift("pi_1", "ada", 500_000)),
                    as_notice(body("pi_3", "nobody")),
                    as_notice(body("pi_4", "bob")),
                ]
            )

    first, second, retry, ghost, dues = asyncio.run(go())
    assert isinstance(first, Recorded) and first.outcome.status == "recorded"
    assert isinstance(second, Recorded) and second.outcome.status == "flagged_for_refund"
    assert second.outcome.refusal is not None
    assert "5,000.00 EUR already given" in second.outcome.refusal
    assert isinstance(retry, Recorded)
    assert (retry.outcome.status, retry.outcome.payment_id) == (
        "duplicate",
        first.outcome.payment_id,
    )
    assert isinstance(ghost, NotFound)
    assert isinstance(dues, Recorded) and dues.outcome.status == "recorded"
    assert dues.outcome.membership is not None
    assert [e.type for e in dues.events] == ["payment-received", "membership-activated"]
    assert not second.events and not retry.events


def test_a_shared_transaction_that_cannot_commit_leaves_nothing_and_each_is_recorded_alone(
    settings, monkeypatch
) -> None:
    bodies = [body(f"pi_{i}", f"c{i:02d}") for i in range(5)]

    async def go() -> tuple[list[Any], dict[str, Any]]:
        async with running(settings) as app:
            await seed(app.state.store, CONTACT_IDS)
            recorder: PaymentRecorder = app.state.payment_recorder
            insert = recorder.repo.insert_payments
            calls = 0

            async def insert_then_fail(docs, session) -> None:
                nonlocal calls
                calls += 1
                await insert(docs, session)  # written in the transaction, then it fails
                raise OperationFailure("disk full", code=14031)

            monkeypatch.setattr(recorder.repo, "insert_payments", insert_then_fail)
            results = await recorder.record_many([as_notice(b) for b in bodies])
            assert calls == 1
            return results, await snapshot(app.state.store)

    results, state = asyncio.run(go())
    # nothing of the failed batch stayed (else these would be duplicates), each recorded once
    assert [r.outcome.status for r in results] == ["recorded"] * 5
    assert state["provider_ids"] == sorted(b["provider_payment_id"] for b in bodies)
    assert len(state["memberships"]) == 5
    assert sum(n for (t, _), n in state["events"] if t == "payment-received") == 5
