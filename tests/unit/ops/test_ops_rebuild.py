"""`tribune rebuild` without a platform: when a build has caught up, how the offsets of a
flip are recorded, what the operator reads, and what the command refuses before it
connects (exit 2) or when nothing answers (exit 1)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from tribune_ops.cli import app
from tribune_ops.rebuild import Outcome, caught_up, projections_table, stamp_offsets, summary
from tribune_ops.rebuild import unstamp_offsets as unstamp
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def unreachable(monkeypatch):
    monkeypatch.setenv("TRIBUNE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TRIBUNE_MONGO_URL", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("TRIBUNE_OPS_REQUEST_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("MESSAGING_STORE_SERVER_SELECTION_TIMEOUT_SECONDS", "1")


A, B = ("t.contact-created", 0), ("t.contact-created", 1)


def test_a_build_has_caught_up_when_every_partition_is_committed_at_its_end():
    starts, ends = {A: 0, B: 5}, {A: 10, B: 5}
    assert caught_up(starts, ends, {}) == (0, 10, False)
    assert caught_up(starts, ends, {A: 4}) == (4, 10, False)
    assert caught_up(starts, ends, {A: 10}) == (10, 10, True)  # B is empty: nothing to do
    # events arriving meanwhile do not count beyond the ends taken at the start
    assert caught_up(starts, ends, {A: 12, B: 7}) == (10, 10, True)


def test_a_partition_whose_start_moved_past_the_commit_counts_from_its_start():
    # retention deleted the oldest events: what is left is all a build can read
    assert caught_up({A: 8}, {A: 10}, {A: 3}) == (0, 2, False)


def test_flip_offsets_are_recorded_without_the_platform_prefix():
    ends = {("t1.contact-created", 0): 4, ("t1.erasure-requested", 2): 9}
    stamped = stamp_offsets(ends, "t1.")
    assert stamped == {"contact-created:0": 4, "erasure-requested:2": 9}
    # another platform prefix (a restored copy) reads them under its own
    assert unstamp(stamped, "t2.") == {
        ("t2.contact-created", 0): 4,
        ("t2.erasure-requested", 2): 9,
    }


def outcome(**changes) -> Outcome:
    fields = dict(
        service="messaging",
        projection="contacts",
        mode="rebuild",
        dry_run=False,
        topics=["contact-created", "erasure-requested"],
        partitions=6,
        events=1234,
        active_before="contacts",
        target="contacts__v2",
        version=2,
        flipped=True,
        active_after="contacts__v2",
        previous="contacts",
        duration_seconds=3.2,
        applied_after_flip=7,
    )
    return Outcome(**{**fields, **changes})


def test_the_summary_says_what_was_switched_and_what_is_kept_for_a_rollback():
    text = summary(outcome())
    assert "switched from contacts to contacts__v2" in text
    assert "1,234 event(s) read" in text and "7 more" in text
    assert "contacts kept for --rollback" in text
    dry = summary(outcome(dry_run=True, flipped=False, active_after=None))
    assert "would read 1,234 event(s)" in dry and "Nothing changed" in dry


def test_the_projections_table_says_which_cannot_be_rebuilt_and_why():
    rows = [
        {
            "projection": "contacts",
            "rebuildable": True,
            "why_not": None,
            "active": "contacts__v2",
            "version": 2,
            "previous": "contacts",
            "building": None,
            "topics": ["contact-created"],
        },
        {
            "projection": "messages",
            "rebuildable": False,
            "why_not": "messaging's own record",
            "active": "messages",
            "version": 1,
            "previous": None,
            "building": None,
            "topics": [],
        },
    ]
    console = Console(record=True, width=200)
    console.print(projections_table("messaging", rows))
    text = console.export_text()
    assert "contacts__v2 (v2)" in text and "no: messaging's own record" in text


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["rebuild", "nosuch", "contacts"], "no service 'nosuch'"),
        (["rebuild", "gateway", "users"], "gateway has no rebuildable projections"),
        (["rebuild", "messaging", "nope"], "has no projection 'nope'"),
        (["rebuild", "messaging", "messages"], "cannot be rebuilt from the topics"),
        # a switch nobody confirmed: never from a script without --yes
        (["rebuild", "messaging", "contacts"], "needs --yes"),
    ],
)
def test_what_cannot_run_is_refused_before_connecting(args, said):
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 2, done.output
    assert said in json.loads(done.stdout)["error"]


def test_an_unreachable_platform_fails_and_switches_nothing():
    done = runner.invoke(app, ["rebuild", "messaging", "contacts", "--dry-run", "--json"])
    assert done.exit_code == 1, done.output
    assert "error" in json.loads(done.stdout)
