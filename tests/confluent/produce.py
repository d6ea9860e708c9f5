"""Publishes metric events with Confluent's own Avro serializer (confluent-kafka's
AvroSerializer and SchemaRegistryClient): the framing a team's existing producers write.

The writer schema is a team's own, evolved from perfpilot's MetricEvent: another
namespace, no `unit` field, and a field of its own. One series, steady with a little
noise, then a spike; then one record whose schema id the registry does not have.

usage: produce.py BOOTSTRAP TOPIC REGISTRY_URL TARGET POINTS [EXTRA_FIELD [POISON]]

EXTRA_FIELD names the team's own field (default datacenter; another name is another
schema, with an id of its own). POISON=0 leaves out the record with an unknown id.
Prints the id the serializer wrote with, as JSON.
"""
import json
import math
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

WRITER_SCHEMA = {
    "type": "record",
    "name": "MetricEvent",
    "namespace": "com.acme.metrics",
    "fields": [
        {"name": "source", "type": "string"},
        {"name": "target", "type": "string"},
        {"name": "pool", "type": ["null", "string"], "default": None},
        {"name": "metric", "type": "string"},
        {"name": "labels", "type": {"type": "map", "values": "string"}, "default": {}},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "value", "type": "double"},
        {"name": "datacenter", "type": "string", "default": "eu-1"},
    ],
}


def main():
    bootstrap, topic, registry_url, target, points = sys.argv[1:6]
    extra = sys.argv[6] if len(sys.argv) > 6 else "datacenter"
    poison = (sys.argv[7] if len(sys.argv) > 7 else "1") == "1"
    points = int(points)
    WRITER_SCHEMA["fields"][-1]["name"] = extra
    registry = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(registry, json.dumps(WRITER_SCHEMA))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    start = 1_790_000_000_000
    for i in range(points):
        value = 100.0 + 3.0 * math.sin(i * 0.7) + (i % 5) * 0.5
        if i == points - 5:
            value = 1000.0
        event = {
            "source": "python-confluent",
            "target": target,
            "pool": None,
            "metric": "latency_p99_ms",
            "labels": {"zone": "a"},
            "timestamp_ms": start + i * 60_000,
            "value": value,
            extra: "us-2",
        }
        body = serializer(event, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=target.encode(), value=body)
    if poison:
        # A schema id the registry does not have, in the same framing.
        producer.produce(topic, key=target.encode(), value=b"\x00" + (987654).to_bytes(4, "big") + b"\x02\x04")
    left = producer.flush(30)
    if left:
        sys.exit(f"{left} records not delivered")
    written = registry.lookup_schema(f"{topic}-value", Schema(json.dumps(WRITER_SCHEMA), "AVRO"))
    print(json.dumps({"schema_id": written.schema_id}))


if __name__ == "__main__":
    main()
