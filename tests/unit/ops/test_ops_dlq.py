"""What the CLI reads off a parked message, which ones an operator selects, what a replay
sends, and how the replay ledger remembers what was replayed."""

from __future__ import annotations

import json

import pytest
from tribune_ops.dlq import (
    REPLAYED_HEADER,
    Parked,
    ReplayLedger,
    Selection,
    error_kind,
    replay_headers,
    resolve_topic,
    summarize,
)

ORIGINAL_HEADERS = (
    ("event_id", b"e-1"),
    ("event_type", b"contact-created"),
    ("event_version", b"1"),
    ("correlation_id", b"c-1"),
    ("tribune-producer", b"contacts"),
    ("tribune-signature", b"sha256=abc"),
)


def parked(
    offset: int = 0,
    *,
    error: str = "RuntimeError('handler refuses poison')",
    group: str = "t.consent",
    headers: tuple[tuple[str, bytes], ...] = ORIGINAL_HEADERS,
    value: bytes = b'{"event_id": "e-1", "type": "contact-created"}',
) -> Parked:
    dlq = (
        ("dlq_error", error.encode()),
        ("dlq_original_topic", b"t.contact-created"),
        ("dlq_partition", b"2"),
        ("dlq_offset", b"41"),
        ("dlq_attempts", b"3"),
        ("dlq_consumer_group", group.encode()),
    )
    return Parked.from_record(
        "t.contact-created-dlq", 0, offset, 1_700_000_000_000, b"k1", value, headers + dlq
    )


def test_a_parked_message_says_what_failed_where_and_for_whom():
    message = parked()
    assert message.event_id == "e-1"
    assert message.event_type == "contact-created"
    assert message.group == "t.consent"
    assert message.attempts == 3
    assert message.error == "RuntimeError('handler refuses poison')"
    assert (message.original_topic, message.original_partition, message.original_offset) == (
        "t.contact-created",
        2,
        41,
    )
    shown = message.as_json(replayed=False)
    assert shown["key"] == "k1" and shown["replayed"] is False
    json.dumps(shown)  # a JSON document, no bytes left


def test_without_identity_headers_the_envelope_names_the_event():
    message = parked(headers=(), value=b'{"event_id": "from-value", "type": "consent-revoked"}')
    assert (message.event_id, message.event_type) == ("from-value", "consent-revoked")
    undecodable = parked(headers=(), value=b"\xff not json")
    assert undecodable.event_id is None and undecodable.event_type is None


def test_a_replay_keeps_the_original_headers_drops_the_dead_letter_ones_and_says_so():
    sent = replay_headers(parked(offset=7))
    names = [name for name, _ in sent]
    assert not [n for n in names if n.startswith("dlq_")]
    assert sent[: len(ORIGINAL_HEADERS)] == list(ORIGINAL_HEADERS)  # signature untouched
    assert dict(sent)[REPLAYED_HEADER] == b"t.contact-created-dlq:0:7"


def test_a_message_replayed_twice_carries_only_the_latest_origin():
    again = parked(offset=9, headers=(*ORIGINAL_HEADERS, (REPLAYED_HEADER, b"t.x-dlq:0:1")))
    assert again.replayed_before == "t.x-dlq:0:1"
    sent = replay_headers(again)
    assert [v for n, v in sent if n == REPLAYED_HEADER] == [b"t.contact-created-dlq:0:9"]


@pytest.mark.parametrize(
    "argument",
    ["contact-created", "contact-created-dlq", "t.contact-created", "t.contact-created-dlq"],
)
def test_an_operator_names_a_dead_letter_queue_as_he_likes(argument):
    assert resolve_topic(argument, "t.") == "t.contact-created-dlq"


def test_selection_by_error_text_ignores_case():
    assert Selection(error="REFUSES").matches(parked(), False, "t.")
    assert not Selection(error="timeout").matches(parked(), False, "t.")


@pytest.mark.parametrize(
    ("wanted", "parked_by", "selected"),
    [
        ("consent", "t.consent", True),
        ("consent", "t.consent.urgent", True),  # a service names all its lanes
        ("t.consent.urgent", "t.consent.urgent", True),
        ("consent.urgent", "t.consent", False),
        ("consent", "t.consent-live", False),
        ("messaging", "t.consent", False),
    ],
)
def test_selection_by_group(wanted, parked_by, selected):
    assert Selection(group=wanted).matches(parked(group=parked_by), False, "t.") is selected


def test_pending_leaves_out_what_was_replayed():
    assert Selection(pending=True).matches(parked(), False, "t.")
    assert not Selection(pending=True).matches(parked(), True, "t.")


def test_the_ledger_compacts_to_a_watermark_and_keeps_gaps():
    ledger = ReplayLedger().with_replayed([0, 1, 2, 5, 6, 9])
    assert ledger.watermark == 3
    assert [o for o in range(11) if ledger.replayed(o)] == [0, 1, 2, 5, 6, 9]
    assert ledger.metadata() == "v1:5-6,9"
    filled = ledger.with_replayed([3, 4])
    assert filled.watermark == 7 and filled.metadata() == "v1:9"


def test_the_ledger_round_trips_through_a_commit():
    ledger = ReplayLedger().with_replayed([0, 4, 5, 6, 10])
    restored = ReplayLedger.from_commit(ledger.watermark, ledger.metadata())
    assert restored == ledger


def test_offsets_deleted_by_retention_do_not_hold_the_watermark_back():
    ledger = ReplayLedger().with_replayed([100, 101], log_start=100)
    assert ledger.watermark == 102 and ledger.metadata() == "v1:"


@pytest.mark.parametrize("metadata", [None, "", "something else", "v1:3-x"])
def test_no_commit_or_a_foreign_one_means_nothing_replayed_above_the_watermark(metadata):
    assert ReplayLedger.from_commit(None, metadata) == ReplayLedger()
    assert not ReplayLedger.from_commit(-1, metadata).replayed(0)
    assert ReplayLedger.from_commit(4, metadata).replayed(3)


def test_summary_counts_per_group_with_the_most_frequent_errors_first():
    messages = [
        (parked(0, error="KeyError('plan')"), True),
        (parked(1, error="KeyError('plan')"), False),
        (parked(2, error="ValueError('x')\nTraceback ..."), False),
        (parked(3, group="t.messaging", error="boom"), False),
    ]
    summary = summarize("t.contact-created-dlq", messages)
    assert (summary.messages, summary.pending) == (4, 3)
    assert summary.original_topic == "t.contact-created"
    consent, messaging = summary.groups
    assert consent.group == "t.consent" and (consent.messages, consent.pending) == (3, 2)
    assert consent.errors == (("KeyError('plan')", 2), ("ValueError('x')", 1))
    assert messaging.as_json()["errors"] == [{"error": "boom", "count": 1}]


def test_error_kind_is_one_short_line():
    assert error_kind("a   b\nsecond line") == "a b"
    assert len(error_kind("x" * 500)) == 120
