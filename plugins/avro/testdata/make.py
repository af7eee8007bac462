"""Writes the avro plugin's unit-test vectors with fastavro (the reference implementation):
a container file per codec, one Confluent-framed record and one single-object record."""
import io, json, struct
import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

schema = fastavro.parse_schema(json.load(open("order.avsc")))
records = [{"id": 10_000_000_000 + i, "customer": "c%d" % i, "amount": i + 0.5,
            "status": "PAID" if i % 2 else "SHIPPED", "coupon": None if i % 3 else "X%d" % i,
            "tags": ["t%d" % i, "all"]} for i in range(50)]
for codec in ("null", "deflate", "snappy", "zstandard"):
    with open(f"orders-{codec}.avro", "wb") as f:
        fastavro.writer(f, schema, records, codec=codec, sync_interval=1000)
buf = io.BytesIO()
fastavro.schemaless_writer(buf, schema, records[1])
open("order-confluent-7.bin", "wb").write(b"\x00" + struct.pack(">I", 7) + buf.getvalue())
fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
open("order-single.bin", "wb").write(b"\xc3\x01" + fp + buf.getvalue())
