"""The treasurer's ledger: payments and refunds in order with running totals."""

from __future__ import annotations

from datetime import UTC, datetime

from memberships.reports.ledger import payment_entry, refund_entry, running, sort_key


def at(day: int) -> datetime:
    return datetime(2026, 3, day, tzinfo=UTC)


def pay(pid: str, day: int, cents: int, purpose: str, **extra):
    return {
        "_id": pid,
        "paid_at": at(day),
        "amount_cents": cents,
        "purpose": purpose,
        "method": "card",
        "status": "accepted",
        **extra,
    }


def refund(rid: str, pid: str, day: int, cents: int, purpose: str, **extra):
    return {
        "_id": rid,
        "payment_id": pid,
        "refunded_at": at(day),
        "amount_cents": cents,
        "purpose": purpose,
        "kind": "refund",
        **extra,
    }


def test_running_totals_split_dues_and_donations_and_refunds_take_money_back():
    entries = sorted(
        [
            payment_entry(pay("p1", 1, 3_000, "dues")),
            payment_entry(pay("p2", 2, 10_000, "donation")),
            refund_entry(refund("r1", "p2", 3, 10_000, "donation")),
            payment_entry(pay("p3", 4, 5_000, "donation")),
        ],
        key=sort_key,
    )
    rows = list(running(entries))
    assert [r["kind"] for r in rows] == ["payment", "payment", "refund", "payment"]
    assert [r["amount_cents"] for r in rows] == [3_000, 10_000, -10_000, 5_000]
    assert [r["donations_total_cents"] for r in rows] == [0, 10_000, 0, 5_000]
    assert rows[-1]["dues_total_cents"] == 3_000
    assert rows[-1]["balance_cents"] == 8_000


def test_money_flagged_for_refund_is_owed_back_not_a_donation():
    flagged = pay("p1", 1, 900_000, "donation", status="flagged_for_refund", refusal={"x": 1})
    entries = [
        payment_entry(flagged),
        refund_entry(refund("r1", "p1", 2, 900_000, "donation", flagged=True)),
    ]
    rows = list(running(entries))
    assert rows[0]["donations_total_cents"] == 0
    assert rows[0]["flagged_total_cents"] == 900_000
    assert rows[1]["flagged_total_cents"] == 0 and rows[1]["balance_cents"] == 0


def test_a_refund_at_the_same_instant_comes_after_the_payment():
    p = payment_entry(pay("p1", 1, 100, "dues"))
    r = refund_entry(refund("r1", "p1", 1, 100, "dues"))
    assert sorted([r, p], key=sort_key) == [p, r]
