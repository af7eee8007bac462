#!/usr/bin/env python3
"""Reads a topic as an independent read_committed consumer (confluent-kafka, not Sluice):
every partition from the beginning, until WANT distinct bodies were seen or SECONDS passed.
Prints one JSON line per record: {"partition", "offset", "key", "body"}.
Usage: read_committed.py BOOTSTRAP TOPIC PARTITIONS WANT SECONDS
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, partitions, want, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
c = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"reader-{uuid.uuid4().hex[:8]}",
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
})
c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
distinct, deadline = set(), time.time() + seconds
while len(distinct) < want and time.time() < deadline:
    for m in c.consume(num_messages=1000, timeout=0.5):
        if m.error() is not None:
            continue
        body = m.value().decode()
        distinct.add(body)
        key = m.key().decode() if m.key() is not None else None
        print(json.dumps({"partition": m.partition(), "offset": m.offset(), "key": key, "body": body}))
c.close()
