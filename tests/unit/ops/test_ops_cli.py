"""The `tribune` command line without a platform: usage errors exit 2 before connecting,
settings that describe no usable platform exit 2 with what to set, an unreachable
platform exits 1, and what the tables and documents show."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from tribune_ops import render
from tribune_ops.cli import app
from tribune_ops.dlq import Parked, summarize
from tribune_ops.lag import GroupLag, PartitionLag
from tribune_ops.settings import platform_services
from tribune_ops.store import OutboxBacklog
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def unreachable(monkeypatch):
    """A platform nobody listens at: a command that connects fails fast."""
    monkeypatch.setenv("TRIBUNE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TRIBUNE_MONGO_URL", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("TRIBUNE_OPS_REQUEST_TIMEOUT_SECONDS", "1")


def text_of(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "show", "contact-created", "--limit", "0"],
        ["dlq", "show"],  # no topic
        ["lag", "--max-lag", "-1"],
        ["dlq", "purge", "contact-created"],
        ["lag", "--frobnicate"],
    ],
)
def test_bad_usage_exits_2(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_a_replay_without_a_terminal_needs_yes_and_changes_nothing():
    result = runner.invoke(app, ["dlq", "replay", "contact-created", "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert "--yes" in document["error"] and document["exit_code"] == 2


def test_an_unknown_service_is_bad_usage():
    result = runner.invoke(app, ["outbox", "--service", "payroll"])
    assert result.exit_code == 2
    assert "payroll" in result.output and "memberships" in result.output


def test_settings_that_describe_no_usable_platform_exit_2_saying_what_to_set(monkeypatch):
    monkeypatch.setenv("TRIBUNE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    result = runner.invoke(app, ["lag", "--json"])
    assert result.exit_code == 2
    assert "KAFKA_SASL_USERNAME" in json.loads(result.stdout)["error"]


def test_production_settings_without_identity_secret_or_vault_key_are_enough(monkeypatch):
    # the CLI signs nothing and opens no personal field: a production operator's
    # environment need not hold those secrets (Kafka authentication it does need)
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "production")
    monkeypatch.setenv("TRIBUNE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TRIBUNE_KAFKA_SASL_USERNAME", "ops")
    monkeypatch.setenv("TRIBUNE_KAFKA_SASL_PASSWORD", "x" * 40)
    result = runner.invoke(app, ["lag", "--json"])
    assert result.exit_code == 1  # got as far as connecting
    assert json.loads(result.stdout)["error"].startswith("Kafka:")


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["lag", "--json"], "Kafka:"),
        (["dlq", "list", "--json"], "Kafka:"),
        (["outbox", "--json"], "store:"),
    ],
)
def test_an_unreachable_platform_exits_1_with_one_json_document(args, what):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"].startswith(what)


def test_outbox_covers_every_service_of_the_registry():
    assert platform_services() == ["consent", "contacts", "gateway", "memberships", "messaging"]


def test_the_lag_table_shows_each_partition_and_the_group_total():
    report = [
        GroupLag(
            "t.messaging",
            "Stable",
            1,
            (
                PartitionLag("t.contact-created", 0, 10, 15, 5),
                PartitionLag("t.contact-created", 1, None, 2, 2),
            ),
        )
    ]
    shown = text_of(render.lag_table(report))
    assert "t.contact-created" in shown and "Stable (1 member)" in shown
    assert "total" in shown and " 7 " in shown
    assert render.lag_document(report)["total_lag"] == 7
    assert render.lag_document(report)["groups"][0]["partitions"][1]["committed"] is None


def _parked(offset: int, error: str) -> Parked:
    return Parked.from_record(
        "t.contact-created-dlq",
        0,
        offset,
        0,
        b"k",
        b"{}",
        [
            ("event_id", f"e{offset}".encode()),
            ("dlq_error", error.encode()),
            ("dlq_consumer_group", b"t.consent"),
            ("dlq_attempts", b"3"),
        ],
    )


def test_the_dead_letter_tables_show_counts_errors_and_replay_state():
    messages = [(_parked(0, "KeyError('plan')"), True), (_parked(1, "KeyError('plan')"), False)]
    summaries = [summarize("t.contact-created-dlq", messages), summarize("t.other-dlq", [])]
    listed = text_of(render.dlq_list_table(summaries))
    assert "t.contact-created-dlq" in listed and "2 × KeyError('plan')" in listed
    assert "t.other-dlq" not in listed  # empty queues are only counted
    assert render.dlq_list_footer(summaries).endswith("1 of 2 dead-letter queue(s) empty")
    shown = text_of(render.parked_table("t.contact-created-dlq", messages))
    assert "0:0" in shown and "e1" in shown and "yes" in shown and "no" in shown
    document = render.parked_document("t.contact-created-dlq", 5, messages)
    assert (document["matched"], document["shown"]) == (5, 2)
    assert [m["replayed"] for m in document["messages"]] == [True, False]


def test_the_outbox_table_shows_the_backlog_and_how_long_the_oldest_waited():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        OutboxBacklog("contacts", "tribune_contacts", 12, now - timedelta(seconds=90)),
        OutboxBacklog("consent", "tribune_consent", 0, None),
    ]
    shown = text_of(render.outbox_table(rows, now))
    assert "tribune_contacts" in shown and "1.5 min" in shown
    document = render.outbox_document(rows, now)
    assert document["total"] == 12
    assert document["services"][0]["oldest_pending_seconds"] == 90.0
    assert document["services"][1]["oldest_pending_at"] is None
