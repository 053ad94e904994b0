"""Every event contract has a stored example that still validates, and the AsyncAPI
document in docs/ matches the contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tribune_shared.events import CONTRACTS, TOPICS, Envelope, asyncapi, decode

EXAMPLES = Path(__file__).resolve().parents[2] / "shared/tribune_shared/events/examples"
REPO = Path(__file__).resolve().parents[2]


def test_every_contract_has_an_example_and_no_example_is_orphaned():
    expected = {f"{t}.v{v}.json" for t, v in CONTRACTS}
    present = {p.name for p in EXAMPLES.glob("*.json")}
    assert expected == present


@pytest.mark.parametrize("key", sorted(CONTRACTS), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_stored_example_validates_against_its_contract(key):
    event_type, version = key
    raw = (EXAMPLES / f"{event_type}.v{version}.json").read_text()
    envelope = Envelope.model_validate_json(raw)
    assert (envelope.type, envelope.version) == key
    event = decode(envelope)
    # The Kafka key is the aggregate id carried in the data.
    assert envelope.key == event.key
    # Round trip: nothing the example carries is dropped by the current model.
    assert event.model_dump(mode="json") == envelope.data


def test_topics_are_kebab_case_past_tense_and_one_type_each():
    for name, spec in TOPICS.items():
        assert name == name.lower() and " " not in name and "_" not in name
        assert name.split("-")[-1].endswith(("ed", "sent")), name
        assert spec.partitions >= 1


def test_asyncapi_document_is_up_to_date():
    committed = (REPO / "docs/asyncapi.json").read_text()
    assert committed == asyncapi.render(), (
        "docs/asyncapi.json is stale: run `make asyncapi` and commit it"
    )
    doc = json.loads(committed)
    assert set(doc["channels"]) == set(TOPICS)
