#!/usr/bin/env python3
"""Does the Kafka broker hide aborted transactions from read_committed consumers?

An independent client (confluent-kafka), not Sluice: writes one record in a transaction it
aborts, then one in a transaction it commits, and reads the topic with
isolation.level=read_committed. Prints one JSON line:
{"aborted_visible": bool, "committed_visible": bool, "seen": [...]}.
Usage: isolation_probe.py BOOTSTRAP
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
topic = f"isolation-probe-{uuid.uuid4().hex[:8]}"
admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"probe-{uuid.uuid4().hex[:8]}"})
p.init_transactions(30)
p.begin_transaction()
p.produce(topic, b"aborted", partition=0)
p.flush(30)
p.abort_transaction(30)
p.begin_transaction()
p.produce(topic, b"committed", partition=0)
p.commit_transaction(30)

c = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"probe-{uuid.uuid4().hex[:8]}",
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
})
c.assign([TopicPartition(topic, 0, 0)])
seen, deadline = [], time.time() + 20
while "committed" not in seen and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        seen.append(m.value().decode())
c.close()
print(json.dumps({
    "aborted_visible": "aborted" in seen,
    "committed_visible": "committed" in seen,
    "seen": seen,
}))
