//! The first-party codec plugins in the real agent, against the independent tools of each
//! format: `protobuf` with `protoc` and Python's protobuf runtime. Messages written by the
//! tool are decoded into JSON events; what the agent encodes is read back by the tool; hostile
//! input is refused with a reason while the agent and the plugin keep running.

use std::{path::Path, process::Command, time::Duration};

use crate::common::{Agent, dist, free_port, json_lines, python};

/// Skips (or, under `scripts/test`, fails) when the format's tools are missing.
fn tools_present(check: &[&str]) -> bool {
    let ok = Command::new(check[0])
        .args(&check[1..])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_CODEC_TOOLS").is_none(),
            "{check:?} failed (scripts/test installs the codec tools)"
        );
        eprintln!("skipped: {check:?} failed (scripts/test installs the codec tools)");
    }
    ok
}

fn run_python(dir: &Path, script: &str) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

const ORDERS_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
message Order {
  int64 id = 1;
  string customer = 2;
  message Item { string sku = 1; uint32 qty = 2; double price = 3; }
  repeated Item items = 3;
  enum Status { UNKNOWN = 0; PAID = 1; SHIPPED = 2; }
  Status status = 4;
  bytes token = 5;
  map<string, string> labels = 6;
}
"#;

/// What Python builds, posts and later checks: order `i` of 60.
const ORDERS_PY: &str = r#"
import orders_pb2
from google.protobuf.internal.encoder import _VarintBytes
def order(i):
    o = orders_pb2.Order(id=10_000_000_000 + i, customer="c%d" % i,
                         status=orders_pb2.Order.PAID if i % 2 else orders_pb2.Order.SHIPPED,
                         token=bytes([i, 0, 255]))
    o.items.add(sku="sku-%d" % i, qty=i, price=i + 0.5)
    o.labels["zone"] = "z%d" % (i % 3)
    return o
def delimited(msgs):
    return b"".join(_VarintBytes(len(m)) + m for m in (o.SerializeToString() for o in msgs))
"#;

/// protoc describes the messages and Python writes them; the agent decodes length-delimited
/// streams posted to its http source into JSON events (with a header from a field) and
/// encodes them back into a stream that Python parses into the same messages. A wrong wire
/// type and a truncated stream are refused (400, with the reason) and the plugin goes on; an
/// event whose JSON is not an Order is dead-lettered by the encoding sink with the reason.
#[test]
fn protobuf_round_trips_with_protoc_and_python() {
    if !tools_present(&["protoc", "--version"])
        || !tools_present(&[&python(), "-c", "import google.protobuf"])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("orders.proto"), ORDERS_PROTO).unwrap();
    let protoc = Command::new("protoc")
        .current_dir(d)
        .args([
            "--include_imports",
            "--descriptor_set_out=orders.desc",
            "--python_out=.",
            "orders.proto",
        ])
        .output()
        .unwrap();
    assert!(
        protoc.status.success(),
        "{}",
        String::from_utf8_lossy(&protoc.stderr)
    );
    std::fs::write(d.join("orders_lib.py"), ORDERS_PY).unwrap();

    let port = free_port();
    let mut agent = Agent::start(
        d,
        "protobuf",
        &format!(
            "plugins:\n  orders:\n    path: '{wasm}'\n    files: {{ descriptor_set: orders.desc }}\n    \
             config: {{ message: shop.v1.Order, headers: {{ order: id }} }}\n\
             channels:\n  mem: {{ type: memory }}\n  copy: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  hook: {{ type: http, listen: '127.0.0.1:{port}', codec: orders, channels: [mem, copy] }}\n  \
             bad: {{ type: generator, count: 1, body: '{{\"id\": \"7\", \"nope\": 1}}', headers: {{ poison: yes }}, channels: [mem] }}\n\
             sinks:\n  bin: {{ type: file, channel: mem, path: '{p}/out.bin', format: orders, dlq: dead }}\n  \
             json: {{ type: file, channel: copy, path: '{p}/out.ndjson', format: ndjson }}\n  \
             dl: {{ type: file, channel: dead, path: '{p}/dead.ndjson', format: ndjson }}\n",
            wasm = dist("protobuf").display(),
            p = d.display(),
        ),
    );
    // Python posts 60 orders in 4 requests, then hostile payloads, then one more request.
    let said = run_python(
        d,
        &format!(
            r#"
import time, urllib.request, urllib.error
from orders_lib import order, delimited
url = "http://127.0.0.1:{port}/"
def post(body):
    for _ in range(100):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the agent never answered")
for k in range(4):
    print("good", post(delimited(order(i) for i in range(k * 15, (k + 1) * 15)))[0])
wrong_type = b"\x05" + b"\x0a\x03abc"          # field 1 (int64) sent length-delimited
print("wrong-type", *post(wrong_type))
whole = order(0).SerializeToString()
print("truncated", *post(bytes([len(whole)]) + whole[:-3]))
print("after", post(delimited([order(60)]))[0])
"#
        ),
    );
    let out = d.join("out.ndjson");
    let t0 = std::time::Instant::now();
    while json_lines(&out).len() < 61 || json_lines(&d.join("dead.ndjson")).is_empty() {
        agent.assert_running();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{said}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop_blocking();
    assert_eq!(said.matches("good 20").count(), 4, "{said}");
    assert!(said.contains("after 20"), "{said}");
    for case in ["wrong-type 400", "truncated 400"] {
        assert!(said.contains(case), "{case}: {said}");
    }
    assert!(said.contains("not a shop.v1.Order"), "{said}");

    // The JSON events: the canonical mapping with proto field names.
    let events = json_lines(&out);
    assert_eq!(events.len(), 61);
    let first: serde_json::Value =
        serde_json::from_str(events[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(events[1]["headers"]["order"], "10000000001");
    assert_eq!(first["id"], "10000000001", "{first}");
    assert_eq!(first["customer"], "c1");
    assert_eq!(first["status"], "PAID");
    assert_eq!(first["token"], "AQD/");
    assert_eq!(first["items"][0]["sku"], "sku-1");
    assert_eq!(first["items"][0]["price"], 1.5);
    assert_eq!(first["labels"]["zone"], "z1");

    // What the agent encoded, read back by Python: the same 61 orders, in order.
    let checked = run_python(
        d,
        r#"
import orders_pb2
from google.protobuf.internal.decoder import _DecodeVarint32
from orders_lib import order
data, pos, got = open("out.bin", "rb").read(), 0, []
while pos < len(data):
    n, pos = _DecodeVarint32(data, pos)
    m = orders_pb2.Order()
    m.ParseFromString(data[pos:pos + n])
    got.append(m)
    pos += n
want = [order(i) for i in range(61)]
assert got == want, (len(got), got[:2])
print("read back", len(got))
"#,
    );
    assert!(checked.contains("read back 61"), "{checked}");

    let dead = json_lines(&d.join("dead.ndjson"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["headers"]["poison"], "yes");
    let reason = dead[0]["headers"]["sluice.dlq.reason"].as_str().unwrap();
    assert!(reason.contains("not a shop.v1.Order in JSON"), "{reason}");
}

/// An agent with the codec plugin `plugin` (its `plugins:` entry body given), an http source
/// decoding with it, and two sinks: `out.<ext>` encoded with it (`batch_size` 1000, so one
/// request is one batch, one encode) and `out.ndjson`; sink refusals go to `dead.ndjson`.
fn codec_agent(d: &Path, name: &str, port: u16, plugin_entry: &str, ext: &str) -> Agent {
    Agent::start(
        d,
        name,
        &format!(
            "plugins:\n  codec:\n{plugin_entry}\
             channels:\n  mem: {{ type: memory, capacity: 5000 }}\n  copy: {{ type: memory, capacity: 5000 }}\n  dead: {{ type: memory }}\n\
             sources:\n  hook: {{ type: http, listen: '127.0.0.1:{port}', codec: codec, channels: [mem, copy] }}\n\
             sinks:\n  enc: {{ type: file, channel: mem, batch_size: 1000, path: '{p}/out.{ext}', format: codec, dlq: dead }}\n  \
             json: {{ type: file, channel: copy, path: '{p}/out.ndjson', format: ndjson }}\n  \
             dl: {{ type: file, channel: dead, path: '{p}/dead.ndjson', format: ndjson }}\n",
            p = d.display(),
        ),
    )
}

/// Python's poster: `post(bytes) -> (status, text)`, retrying until the agent listens.
fn poster(port: u16) -> String {
    format!(
        r#"
import time, urllib.request, urllib.error
def post(body):
    for _ in range(100):
        try:
            with urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{port}/", data=body, method="POST")) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the agent never answered")
"#
    )
}

fn wait_events(agent: &mut Agent, out: &Path, n: usize, said: &str) {
    let t0 = std::time::Instant::now();
    while json_lines(out).len() < n {
        agent.assert_running();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{said}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// lxml writes a document of repeated, namespaced elements with entities and CDATA; the
/// agent decodes one event per element (headers from an attribute and a child), encodes them
/// into one document that lxml parses back to the same values. A billion-laughs document and
/// one nested 10,000 deep are refused with their reasons, and the next document still works.
#[test]
fn xml_round_trips_with_lxml_and_refuses_bombs() {
    if !tools_present(&[&python(), "-c", "import lxml"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let mut agent = codec_agent(
        d,
        "xml",
        port,
        &format!(
            "    path: '{}'\n    config: {{ record: /orders/order, namespaces: strip, root: orders, element: order, headers: {{ id: '@id', city: address/city }} }}\n",
            dist("xml").display()
        ),
        "xml",
    );
    let said = run_python(
        d,
        &format!(
            r#"{poster}
from lxml import etree
NS = "urn:shop"
def doc(first, n):
    root = etree.Element("{{%s}}orders" % NS, nsmap={{"s": NS}})
    for i in range(first, first + n):
        o = etree.SubElement(root, "{{%s}}order" % NS, id=str(i), kind="web & mobile")
        etree.SubElement(o, "customer").text = "Ann <%d> & Bob" % i
        a = etree.SubElement(o, "address")
        etree.SubElement(a, "city").text = "Z\u00fcrich"
        n_ = etree.SubElement(o, "note")
        n_.text = etree.CDATA("raw <b>%d</b>" % i)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
print("good", post(doc(0, 40))[0])
laughs = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><orders><order>&c;</order></orders>'
print("laughs", *post(laughs))
print("deep", *post(b"<a>" * 10000 + b"</a>" * 10000))
print("after", post(doc(40, 2))[0])
"#,
            poster = poster(port)
        ),
    );
    wait_events(&mut agent, &d.join("out.ndjson"), 42, &said);
    agent.stop_blocking();
    assert!(said.contains("good 20"), "{said}");
    assert!(said.contains("after 20"), "{said}");
    let laughs = said.lines().find(|l| l.starts_with("laughs")).unwrap();
    assert!(
        laughs.starts_with("laughs 400") && laughs.contains("DOCTYPE is refused"),
        "{said}"
    );
    let deep = said.lines().find(|l| l.starts_with("deep")).unwrap();
    assert!(
        deep.starts_with("deep 400") && deep.contains("max_depth"),
        "{said}"
    );

    let events = json_lines(&d.join("out.ndjson"));
    assert_eq!(events.len(), 42);
    assert_eq!(events[5]["headers"]["id"], "5");
    assert_eq!(events[5]["headers"]["city"], "Z\u{fc}rich");
    let v: serde_json::Value = serde_json::from_str(events[5]["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["@kind"], "web & mobile", "{v}");
    assert_eq!(v["customer"], "Ann <5> & Bob");
    assert_eq!(v["note"], "raw <b>5</b>");

    let checked = run_python(
        d,
        r#"
from lxml import etree
parser = etree.XMLParser(resolve_entities=False)
got = []
data = open("out.xml", "rb").read()
# One document per encoded batch: the 40 in one request, then the 2 of the last one.
for part in data.split(b"<?xml")[1:]:
    root = etree.fromstring(b"<?xml" + part, parser)
    assert root.tag == "orders", root.tag
    for o in root:
        got.append((o.get("id"), o.get("kind"), o.findtext("customer"), o.findtext("address/city"), o.findtext("note")))
want = [(str(i), "web & mobile", "Ann <%d> & Bob" % i, "Z\u00fcrich", "raw <b>%d</b>" % i) for i in range(42)]
assert got == want, got[:2]
print("read back", len(got))
"#,
    );
    assert!(checked.contains("read back 42"), "{checked}");
}

/// fastavro writes container files (deflate, snappy); the agent decodes them into JSON events
/// and encodes container files (zstandard) that fastavro reads back as the same records. A
/// truncated file and a corrupted sync marker are refused with reasons, and the plugin goes
/// on. (Confluent-framed records arrive over MQTT in `connectors/mqtt.rs`.)
#[test]
fn avro_round_trips_with_fastavro() {
    if !tools_present(&[&python(), "-c", "import fastavro, cramjam"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schema = crate::common::repo_root().join("plugins/avro/testdata/order.avsc");
    std::fs::copy(&schema, d.join("order.avsc")).unwrap();
    let port = free_port();
    let mut agent = codec_agent(
        d,
        "avro",
        port,
        &format!(
            "    path: '{}'\n    files: {{ schema: order.avsc }}\n    config: {{ codec: zstandard }}\n",
            dist("avro").display()
        ),
        "avro",
    );
    let lib = r#"
import io, json, struct, fastavro
schema = fastavro.parse_schema(json.load(open("order.avsc")))
def rec(i):
    return {"id": 10_000_000_000 + i, "customer": "c%d" % i, "amount": i + 0.5,
            "status": "PAID" if i % 2 else "SHIPPED", "coupon": None if i % 3 else "X%d" % i,
            "tags": ["t%d" % i]}
def container(recs, codec):
    b = io.BytesIO()
    fastavro.writer(b, schema, recs, codec=codec, sync_interval=2000)
    return b.getvalue()
"#;
    std::fs::write(d.join("avro_lib.py"), lib).unwrap();
    let said = run_python(
        d,
        &format!(
            r#"{poster}
from avro_lib import rec, container
print("deflate", post(container([rec(i) for i in range(0, 300)], "deflate"))[0])
print("snappy", post(container([rec(i) for i in range(300, 600)], "snappy"))[0])
bad = container([rec(i) for i in range(5)], "null")
print("truncated", *post(bad[:-30]))
broken = bytearray(bad); broken[-1] ^= 0xff
print("sync", *post(bytes(broken)))
print("after", post(container([rec(600)], "null"))[0])
"#,
            poster = poster(port)
        ),
    );
    wait_events(&mut agent, &d.join("out.ndjson"), 601, &said);
    agent.stop_blocking();
    for ok in ["deflate 20", "snappy 20", "after 20"] {
        assert!(said.contains(ok), "{ok}: {said}");
    }
    assert!(said.contains("truncated 400"), "{said}");
    let sync = said.lines().find(|l| l.starts_with("sync")).unwrap();
    assert!(
        sync.starts_with("sync 400") && sync.contains("sync marker"),
        "{said}"
    );
    let events = json_lines(&d.join("out.ndjson"));
    assert_eq!(events.len(), 601);
    let v: serde_json::Value = serde_json::from_str(events[3]["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["id"], 10_000_000_003i64);
    assert_eq!(v["coupon"], "X3");
    assert_eq!(v["status"], "PAID");

    // Each request was one batch, so out.avro is one container file per request.
    let checked = run_python(
        d,
        r#"
import io, fastavro
from avro_lib import rec
data = open("out.avro", "rb").read()
got = []
for part in data.split(b"Obj\x01")[1:]:
    r = fastavro.reader(io.BytesIO(b"Obj\x01" + part))
    assert r.codec == "zstandard", r.codec
    got.extend(r)
assert got == [rec(i) for i in range(601)], got[:2]
print("read back", len(got))
"#,
    );
    assert!(checked.contains("read back 601"), "{checked}");
}

/// A plugin's `files:` count in its definition: a live reload after the descriptor set
/// changed on disk (field 2 renamed from `customer` to `client`) loads the plugin again, and
/// the same bytes then decode under the new name.
#[test]
fn a_reload_picks_up_a_changed_plugin_file() {
    if !tools_present(&["protoc", "--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let describe = |field: &str| {
        std::fs::write(
            d.join("o.proto"),
            format!("syntax = \"proto3\";\npackage t;\nmessage O {{ int64 id = 1; string {field} = 2; }}\n"),
        )
        .unwrap();
        let o = Command::new("protoc")
            .current_dir(d)
            .args(["--descriptor_set_out=o.desc", "o.proto"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    describe("customer");
    let (port, admin) = (free_port(), free_port());
    let mut agent = Agent::start(
        d,
        "files-reload",
        &format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}\n\
             plugins:\n  o: {{ path: '{wasm}', files: {{ descriptor_set: o.desc }}, config: {{ message: t.O, framing: single }} }}\n\
             channels:\n  mem: {{ type: memory }}\n\
             sources:\n  hook: {{ type: http, listen: '127.0.0.1:{port}', codec: o, channels: [mem] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{p}/out.ndjson', format: ndjson }}\n",
            wasm = dist("protobuf").display(),
            p = d.display(),
        ),
    );
    // id 7, field 2 = "c7".
    let post = format!(
        "{}\nimport sys\nprint(post(b'\\x08\\x07\\x12\\x02c7')[0])",
        poster(port)
    );
    assert!(run_python(d, &post).contains("200"));
    let out = d.join("out.ndjson");
    wait_events(&mut agent, &out, 1, "first");
    describe("client");
    let (status, body) = crate::reload::reload(admin);
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert!(run_python(d, &post).contains("200"));
    wait_events(&mut agent, &out, 2, "second");
    agent.stop_blocking();
    let bodies: Vec<String> = json_lines(&out)
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        bodies,
        [
            r#"{"id":"7","customer":"c7"}"#,
            r#"{"id":"7","client":"c7"}"#
        ]
    );
}
