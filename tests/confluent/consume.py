"""Reads a perfpilot output topic with Confluent's own Avro deserializer and prints each
record as a JSON line: what a team's existing consumers see.

usage: consume.py BOOTSTRAP TOPIC REGISTRY_URL IDLE_SECONDS
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    bootstrap, topic, registry_url, idle = sys.argv[1:5]
    registry = SchemaRegistryClient({"url": registry_url})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "confluent-reader-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    last = time.time()
    first_wait = 15.0
    while time.time() - last < (first_wait if first_wait else float(idle)):
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        first_wait = 0.0
        last = time.time()
        record = deserializer(m.value(), SerializationContext(topic, MessageField.VALUE))
        schema_id = int.from_bytes(m.value()[1:5], "big")
        for k, v in list(record.items()):
            if isinstance(v, bytes):
                record[k] = v.hex()
        print(json.dumps({"schema_id": schema_id, "record": record}), flush=True)
    consumer.close()


if __name__ == "__main__":
    main()
