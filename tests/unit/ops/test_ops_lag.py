"""Consumer lag as the CLI computes it from commits and partition bounds."""

from __future__ import annotations

from tribune_ops.groups import expected_topics, worker_groups
from tribune_ops.lag import GroupInfo, build_report, partition_lag
from tribune_shared.events.contracts import Lane


def test_lag_counts_from_the_commit_or_from_the_log_start_without_one():
    assert partition_lag(7, 0, 10) == 3
    assert partition_lag(None, 0, 10) == 10
    assert partition_lag(None, 4, 10) == 6  # retention deleted the first four
    assert partition_lag(2, 4, 10) == 6  # its commit points at deleted records
    assert partition_lag(10, 0, 10) == 0


def test_a_group_gets_one_row_per_partition_and_a_total():
    report = build_report(
        committed={"t.consent": {("t.contact-created", 0): 5, ("t.contact-created", 1): 3}},
        expected={},
        partitions_of={"t.contact-created": [0, 1]},
        starts={},
        ends={("t.contact-created", 0): 5, ("t.contact-created", 1): 10},
        info={"t.consent": GroupInfo("Stable", 2)},
    )
    (group,) = report
    assert (group.state, group.members, group.total) == ("Stable", 2, 7)
    assert [(p.partition, p.committed, p.lag) for p in group.partitions] == [(0, 5, 0), (1, 3, 7)]
    assert group.as_json()["total_lag"] == 7


def test_an_expected_worker_group_that_never_ran_has_its_whole_log_as_lag():
    report = build_report(
        committed={},
        expected={"t.messaging": ["t.contact-created", "t.not-created-yet"]},
        partitions_of={"t.contact-created": [0]},
        starts={("t.contact-created", 0): 0},
        ends={("t.contact-created", 0): 4},
        info={},
    )
    (group,) = report
    assert group.state == "absent"
    assert [(p.topic, p.committed, p.lag) for p in group.partitions] == [
        ("t.contact-created", None, 4)
    ]


def test_an_expected_group_without_any_existing_topic_is_left_out():
    assert build_report({}, {"t.messaging": ["t.none"]}, {}, {}, {}, {}) == []


def test_worker_groups_follow_the_registry_lanes():
    groups = worker_groups("t.")
    assert "consent-revoked" in groups["t.messaging.urgent"]
    assert "consent-revoked" not in groups["t.messaging"]
    assert "contact-created" in groups["t.messaging"]
    assert set(expected_topics("messaging", Lane.urgent)) <= set(groups["t.messaging.urgent"])
