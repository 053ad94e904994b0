"""Backups without a platform: the manifest (round trip, an altered one refused), the
files' checksums, the copy order, the Kafka positions a restore sends each group back to,
where it looks for erasures, and the vault rotation's arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import bson
import pytest
from tribune_ops.backups import archive
from tribune_ops.backups.domain import (
    CollectionCopy,
    DatabaseCopy,
    KafkaPositions,
    Manifest,
    ManifestError,
    busy_groups,
    check_file,
    copy_order,
    erasure_scan_from,
    group_resets,
    positions,
)
from tribune_ops.cli import app
from tribune_ops.vault import droppable_keks, left_under_old
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def unreachable(monkeypatch):
    monkeypatch.setenv("TRIBUNE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TRIBUNE_MONGO_URL", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("TRIBUNE_OPS_REQUEST_TIMEOUT_SECONDS", "1")


def manifest() -> Manifest:
    return Manifest(
        started_at=datetime(2026, 3, 1, 2, 0, tzinfo=UTC),
        finished_at=datetime(2026, 3, 1, 2, 5, tzinfo=UTC),
        tool_version="tribune-ops 0.1.0",
        topic_prefix="p.",
        database_prefix="tribune_",
        kafka=KafkaPositions(
            ends={"erasure-requested": {0: 10, 1: 4}},
            groups={"consent.urgent": {"erasure-requested": {0: 8, 1: 4}}},
        ),
        databases=[
            DatabaseCopy(
                "contacts",
                "tribune_contacts",
                [CollectionCopy("contacts", "contacts/contacts.bson.gz", 3, 120, "ab" * 32)],
            )
        ],
    )


# ---------------------------------------------------------------- the manifest


def test_a_manifest_reads_back_as_written():
    text = manifest().to_text()
    again = Manifest.from_text(text)
    assert again == manifest()
    assert again.documents == 3
    assert json.loads(text)["kafka"]["group_offsets"]["consent.urgent"] == {
        "erasure-requested": {"0": 8, "1": 4}
    }


@pytest.mark.parametrize(
    "alter",
    [
        lambda d: d["databases"][0]["collections"][0].update(documents=4),
        lambda d: d["kafka"]["end_offsets"]["erasure-requested"].update({"0": 1}),
        lambda d: d.pop("sha256"),
    ],
)
def test_an_altered_manifest_is_refused(alter):
    doc = json.loads(manifest().to_text())
    alter(doc)
    with pytest.raises(ManifestError, match="altered"):
        Manifest.from_text(json.dumps(doc))


@pytest.mark.parametrize("text", ["{not json", "[]", json.dumps({"format": "other"})])
def test_what_is_no_manifest_is_refused(text):
    with pytest.raises(ManifestError):
        Manifest.from_text(text)


def test_a_file_is_checked_by_size_and_checksum():
    copy = CollectionCopy("c", "x/c.bson.gz", 1, 10, "0" * 64)
    assert check_file(copy, (10, "0" * 64)) is None
    assert "missing" in (check_file(copy, None) or "")
    assert "11 bytes" in (check_file(copy, (11, "0" * 64)) or "")
    assert "checksum mismatch" in (check_file(copy, (10, "1" * 64)) or "")


def test_a_collection_file_round_trips_and_its_checksum_is_reproducible(tmp_path):
    docs = [bson.encode({"_id": i, "key": bytes([i]) * 32, "name": f"n{i}"}) for i in range(5)]
    sums = []
    for name in ("a", "b"):
        writer = archive.CollectionWriter(tmp_path / name / "c.bson.gz")
        for raw in docs:
            writer.write(raw)
        writer.close()
        assert writer.documents == 5
        assert archive.digest(tmp_path, f"{name}/c.bson.gz") == (writer.size, writer.sha256)
        sums.append(writer.sha256)
        assert [d.raw for d in archive.documents(tmp_path, f"{name}/c.bson.gz")] == docs
    assert sums[0] == sums[1]  # same documents, same bytes
    assert archive.digest(tmp_path, "nothing.bson.gz") is None
    assert not list(tmp_path.glob("**/*.partial"))


def test_an_aborted_file_leaves_nothing_that_looks_whole(tmp_path):
    writer = archive.CollectionWriter(tmp_path / "c.bson.gz")
    writer.write(bson.encode({"_id": 1}))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_processed_ids_then_the_outbox_are_copied_first():
    names = ["contacts", "outbox", "system.views", "audit", "processed_events"]
    assert copy_order(names) == ["processed_events", "outbox", "audit", "contacts"]


# ---------------------------------------------------------------- Kafka positions


def test_positions_are_recorded_without_the_prefix():
    recorded = positions(
        "p.",
        {("p.erasure-requested", 0): 7, ("other.x", 0): 3},
        {"p.consent.urgent": {("p.erasure-requested", 0): 5}},
    )
    assert recorded.ends == {"erasure-requested": {0: 7}}
    assert recorded.groups == {"consent.urgent": {"erasure-requested": {0: 5}}}


def test_each_group_resumes_at_its_backup_offsets_or_the_log_start():
    kafka = KafkaPositions(
        ends={"contact-created": {0: 50, 1: 40}},
        groups={"consent": {"contact-created": {0: 45, 1: 40}}},
    )
    resets = group_resets(
        kafka,
        {"consent": ["contact-created", "form-submitted"], "messaging": ["contact-created"]},
        # a partition and a topic born since the backup
        {"p.contact-created": [0, 1, 2], "p.form-submitted": [0]},
        {("p.contact-created", 2): 0, ("p.form-submitted", 0): 0},
        "p.",
    )
    consent, messaging = resets
    assert consent.group == "p.consent"
    assert consent.offsets == {
        ("p.contact-created", 0): 45,
        ("p.contact-created", 1): 40,
        ("p.contact-created", 2): 0,
        ("p.form-submitted", 0): 0,
    }
    assert consent.lost == {}
    # a group without a commit at backup time reads everything (nothing was applied)
    assert set(messaging.offsets.values()) == {0}


def test_records_deleted_by_retention_since_the_backup_are_counted_as_lost():
    kafka = KafkaPositions(ends={"t": {0: 50}}, groups={"g": {"t": {0: 45}}})
    (reset,) = group_resets(kafka, {"g": ["t"]}, {"t": [0]}, {("t", 0): 48}, "")
    assert reset.offsets == {("t", 0): 48}
    assert reset.lost == {("t", 0): 3}
    assert reset.as_json()["lost_to_retention"] == {"t[0]": 3}


def test_erasures_are_looked_for_from_the_lowest_position_of_their_readers():
    kafka = KafkaPositions(
        ends={"erasure-requested": {0: 10, 1: 4}},
        groups={
            "consent.urgent": {"erasure-requested": {0: 8, 1: 4}},
            "messaging.urgent": {"erasure-requested": {0: 9}},  # never read partition 1
        },
    )
    readers = ["consent.urgent", "messaging.urgent"]
    assert erasure_scan_from(kafka, readers, [0, 1, 2]) == {0: 8, 1: 0, 2: 0}
    assert erasure_scan_from(kafka, ["consent.urgent"], [0, 1]) == {0: 8, 1: 4}


def test_a_group_with_members_stops_a_restore():
    states = {"a": ("Empty", 0), "b": ("Stable", 2), "c": ("unknown", None), "d": ("Dead", 0)}
    assert busy_groups(states) == ["b"]


# ---------------------------------------------------------------- the vault rotation


def test_what_a_rotation_has_left_and_which_old_keks_can_go():
    status = {
        "current_kek": "new",
        "wrapped_by_kek": {"new": 9, "old": 2, "older": 0},
        "unwrapped": 1,
    }
    left = left_under_old(status)
    assert left == {"old": 2, "unwrapped": 1}
    assert droppable_keks(["new", "old", "older"], "new", left) == ["older"]
    done = left_under_old({**status, "wrapped_by_kek": {"new": 12}, "unwrapped": 0})
    assert done == {} and droppable_keks(["new", "old"], "new", done) == ["old"]


# ---------------------------------------------------------------- the commands


def test_a_restore_without_a_terminal_needs_yes_and_changes_nothing(tmp_path):
    result = runner.invoke(app, ["restore", str(tmp_path), "--json"])
    assert result.exit_code == 2
    assert "--yes" in json.loads(result.stdout)["error"]


def test_a_folder_without_a_manifest_is_no_backup(tmp_path):
    result = runner.invoke(app, ["restore", str(tmp_path), "--verify", "--json"])
    assert result.exit_code == 1
    assert "manifest.json" in json.loads(result.stdout)["error"]


def test_a_verified_backup_says_what_it_holds(tmp_path):
    writer = archive.CollectionWriter(tmp_path / "contacts" / "contacts.bson.gz")
    writer.write(bson.encode({"_id": "c1"}))
    writer.close()
    written = Manifest(
        **{
            **vars(manifest()),
            "databases": [
                DatabaseCopy(
                    "contacts",
                    "tribune_contacts",
                    [
                        CollectionCopy(
                            "contacts",
                            "contacts/contacts.bson.gz",
                            1,
                            writer.size,
                            writer.sha256,
                        )
                    ],
                )
            ],
        }
    )
    archive.write_manifest(tmp_path, written.to_text())
    result = runner.invoke(app, ["restore", str(tmp_path), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["verified"] is True
    assert document["databases"][0]["collections"] == {"contacts": 1}
    (tmp_path / "contacts" / "contacts.bson.gz").write_bytes(b"garbage")
    result = runner.invoke(app, ["restore", str(tmp_path), "--verify", "--json"])
    assert result.exit_code == 1 and "7 bytes" in json.loads(result.stdout)["error"]


def test_a_backup_into_a_folder_holding_files_is_refused(tmp_path):
    (tmp_path / "something").write_text("x")
    result = runner.invoke(app, ["backup", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert "not empty" in json.loads(result.stdout)["error"]


def test_redestroy_needs_files_or_receipts():
    result = runner.invoke(app, ["vault", "redestroy", "--json"])
    assert result.exit_code == 2
