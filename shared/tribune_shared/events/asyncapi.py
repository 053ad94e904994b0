"""Generate the AsyncAPI 3.0 document of every topic from the contracts.

``python -m tribune_shared.events.asyncapi > docs/asyncapi.json``; a contract test
checks the committed document is up to date.
"""

from __future__ import annotations

import json
from typing import Any

from tribune_shared.events.contracts import CONTRACTS, TOPICS, dlq_topic
from tribune_shared.events.envelope import Envelope


def build() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Envelope": Envelope.model_json_schema()}
    messages: dict[str, Any] = {}
    for (event_type, version), model in sorted(CONTRACTS.items()):
        name = f"{model.__name__}"
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[def_name] = definition
        schemas[name] = schema
        messages[name] = {
            "name": event_type,
            "title": f"{event_type} v{version}",
            "summary": (model.__doc__ or "").strip(),
            "headers": {
                "type": "object",
                "properties": {
                    **{
                        h: {"type": "string"}
                        for h in ("event_id", "event_type", "event_version", "correlation_id")
                    },
                    # consumers accept the event only from the topic's owner, signed
                    "tribune-producer": {
                        "type": "string",
                        "description": "the service that published it (= envelope producer)",
                    },
                    "tribune-signature": {
                        "type": "string",
                        "description": "sha256=<hex HMAC-SHA256 of the value with the "
                        "producer's event signing key>",
                    },
                },
                "required": ["tribune-producer", "tribune-signature"],
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "version": {"const": version},
                            "key": {"description": f"= data.{model.key_field}"},
                            "data": {"$ref": f"#/components/schemas/{name}"},
                        },
                    },
                ]
            },
        }
    for topic, spec in sorted(TOPICS.items()):
        versions = [m for (t, _), m in sorted(CONTRACTS.items()) if t == topic]
        channels[topic] = {
            "address": topic,
            "description": f"{spec.description} Partitions: {spec.partitions}; key: aggregate id.",
            "messages": {
                m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in versions
            },
            "x-partitions": spec.partitions,
            "x-owner": spec.owner,
            "x-consumers": list(spec.consumers),
            "x-lane": spec.lane.value,
            "x-dead-letter-topic": dlq_topic(topic),
        }
        operations[f"publish-{topic}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"Published by {spec.owner}",
        }
        for consumer in spec.consumers:
            operations[f"{consumer}-receives-{topic}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{topic}"},
                "summary": f"Consumed by {consumer} ({spec.lane.value} lane)",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tribune events",
            "version": "1",
            "description": "Every Kafka topic of Tribune; one event type per topic.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, default=str) + "\n"


if __name__ == "__main__":
    print(render(), end="")
