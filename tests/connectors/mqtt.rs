//! The `mqtt` source and sink through the real binary against the Mosquitto broker on this
//! machine (`SLUICE_TEST_MQTT`, default `mqtt://127.0.0.1:1883`), with Mosquitto's own
//! clients (`mosquitto_pub`, `mosquitto_sub`) on the other end.
//!
//! Source: messages published at QoS 1 while the agent is stopped arrive when it starts (the
//! persistent session kept them); a SIGKILL in the middle of a stream loses nothing (what was
//! not acknowledged comes again; the RocksDB channel keeps what was committed). Sink: every
//! event arrives at a subscriber, on the topic rendered from its headers.

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{Agent, json_lines, ndjson_bodies, unique};

fn url() -> String {
    std::env::var("SLUICE_TEST_MQTT").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// `-h host -p port` of the broker, for Mosquitto's clients.
fn broker_args() -> Vec<String> {
    let u = url();
    let hostport = u.trim_start_matches("mqtt://").trim_end_matches('/');
    let (h, p) = hostport.rsplit_once(':').unwrap_or((hostport, "1883"));
    vec!["-h".into(), h.into(), "-p".into(), p.into()]
}

/// Publishes `lines` as messages (QoS 1) on `topic`, `pause` between them.
fn publish(topic: &str, lines: impl Iterator<Item = String>, pause: Duration) {
    let mut child = Command::new("mosquitto_pub")
        .args(broker_args())
        .args(["-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (mosquitto-clients)");
    {
        let stdin = child.stdin.as_mut().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

/// Lines of an NDJSON file so far (none before it exists).
fn count(p: &Path) -> usize {
    if p.exists() { json_lines(p).len() } else { 0 }
}

fn distinct(out: &Path) -> usize {
    ndjson_bodies(out)
        .into_iter()
        .collect::<BTreeSet<_>>()
        .len()
}

fn source_pipeline(dir: &Path, topic: &str, client: &str) -> String {
    let d = dir.display();
    format!(
        "channels:\n  disk: {{ type: rocksdb, path: '{d}/disk' }}\n\
         sources:\n  m: {{ type: mqtt, url: '{url}', topics: ['{topic}/#'], client_id: {client}, channels: [disk], batch_size: 200, linger: 20ms }}\n\
         sinks:\n  out: {{ type: file, channel: disk, path: '{d}/out.ndjson', format: ndjson }}\n",
        url = url()
    )
}

async fn wait_connected(agent: &mut Agent, times: usize) {
    let t0 = Instant::now();
    while agent.log().matches("connected to the MQTT broker").count() < times {
        agent.assert_running();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not connected {times} times:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_the_agent_is_down_arrive_after_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sluice-test");
    let client = unique("sluice-client");
    let pipeline = source_pipeline(dir.path(), &topic, &client);
    // The first run makes the session and its subscription.
    let mut agent = Agent::start(dir.path(), "first", &pipeline);
    wait_connected(&mut agent, 1).await;
    // Give the SUBACK a moment, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;
    let t = format!("{topic}/a");
    tokio::task::spawn_blocking(move || {
        publish(&t, (0..300).map(|i| format!("offline {i}")), Duration::ZERO)
    })
    .await
    .unwrap();
    let out = dir.path().join("out.ndjson");
    assert_eq!(distinct(&out), 0);
    let mut agent = Agent::start(dir.path(), "second", &pipeline);
    agent
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let n = distinct(&out);
                if n >= 300 {
                    Ok(())
                } else {
                    Err(format!("{n} of 300 messages"))
                }
            },
        )
        .await;
    agent.stop().await;
    let events = json_lines(&out);
    // In order, each once (the agent was stopped cleanly).
    let got: Vec<String> = events
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..300).map(|i| format!("offline {i}")).collect();
    assert_eq!(got, want);
    assert_eq!(events[0]["headers"]["mqtt.topic"], format!("{topic}/a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sluice-test");
    let client = unique("sluice-client");
    let pipeline = source_pipeline(dir.path(), &topic, &client);
    let out = dir.path().join("out.ndjson");
    let mut agent = Agent::start(dir.path(), "first", &pipeline);
    wait_connected(&mut agent, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    const N: usize = 3000;
    let t = format!("{topic}/k");
    let publisher = std::thread::spawn(move || {
        publish(
            &t,
            (0..N).map(|i| format!("msg {i:05}")),
            Duration::from_millis(1),
        )
    });
    let t0 = Instant::now();
    while distinct(&out) < 500 {
        agent.assert_running();
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.kill();
    let mut agent = Agent::start(dir.path(), "second", &pipeline);
    publisher.join().unwrap();
    agent
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let n = distinct(&out);
                if n >= N {
                    Ok(())
                } else {
                    Err(format!("{n} of {N} messages"))
                }
            },
        )
        .await;
    agent.stop().await;
    let got: BTreeSet<String> = ndjson_bodies(&out).into_iter().collect();
    let want: BTreeSet<String> = (0..N).map(|i| format!("msg {i:05}")).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_publishes_every_event_with_qos_1() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sluice-test");
    let got = dir.path().join("got.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(broker_args())
        .args([
            "-q",
            "1",
            "-v",
            "-C",
            "500",
            "-W",
            "60",
            "-t",
            &format!("{topic}/#"),
        ])
        .stdout(std::fs::File::create(&got).unwrap())
        .spawn()
        .expect("mosquitto_sub (mosquitto-clients)");
    // mosquitto_sub needs a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = Agent::start(
        dir.path(),
        "sink",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  g: {{ type: generator, count: 500, body_size: 16, cycle: {{ header: dev, values: [d1, d2] }}, channels: [mem] }}\n\
             sinks:\n  m: {{ type: mqtt, url: '{url}', topic: '{topic}/%{{dev}}', channel: mem }}\n",
            url = url()
        ),
    );
    let status = tokio::task::spawn_blocking(move || sub.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "mosquitto_sub did not get 500 messages:\n{}",
        agent.log()
    );
    let text = std::fs::read_to_string(&got).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 500);
    let d1 = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{topic}/d1 ")))
        .count();
    let d2 = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{topic}/d2 ")))
        .count();
    assert_eq!((d1, d2), (250, 250), "{text}");
    drop(agent);
}

/// A private Mosquitto with one TLS listener that requires a client certificate (its CN,
/// `client`, becomes the user name) and an ACL that lets that user use topics under `ok/`
/// only.
struct TlsBroker {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    fn start() -> TlsBroker {
        let certs = crate::common::repo_root().join("tests/fixtures/tls/hop");
        let dir = tempfile::tempdir().unwrap();
        let port = crate::common::free_port();
        let acl = dir.path().join("acl");
        std::fs::write(&acl, "user client\ntopic readwrite ok/#\n").unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} localhost\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\n\
                 allow_anonymous false\nacl_file {acl}\npersistence false\n",
                ca = certs.join("ca.pem").display(),
                cert = certs.join("server.pem").display(),
                key = certs.join("server-key.pem").display(),
                acl = acl.display(),
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("mosquitto");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsBroker {
            child,
            port,
            _dir: dir,
        }
    }

    /// Mosquitto's client options for this broker, with the client certificate.
    fn client_args(&self) -> Vec<String> {
        let certs = crate::common::repo_root().join("tests/fixtures/tls/hop");
        let f = |n: &str| certs.join(n).display().to_string();
        [
            "-V",
            "mqttv5",
            "-h",
            "localhost",
            "-p",
            &self.port.to_string(),
            "--cafile",
            &f("ca.pem"),
            "--cert",
            &f("client.pem"),
            "--key",
            &f("client-key.pem"),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The `tls:` setting of a pipeline connecting as `client`.
    fn tls_setting() -> String {
        let certs = crate::common::repo_root().join("tests/fixtures/tls/hop");
        let f = |n: &str| certs.join(n).display().to_string();
        format!(
            "{{ ca: '{}', cert: '{}', key: '{}' }}",
            f("ca.pem"),
            f("client.pem"),
            f("client-key.pem")
        )
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// MQTT 5 over mutual TLS (`mqtts://`): the source maps user properties to headers (checked
/// with a message from `mosquitto_pub`), the sink maps headers to user properties (checked
/// with `mosquitto_sub`), and messages the broker's ACL refuses (an MQTT 5 PUBACK with
/// `NotAuthorized`) are dead-lettered with that reason while the others are delivered.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_over_mutual_tls_maps_properties_and_dead_letters_refusals() {
    let broker = TlsBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let t = unique("t");
    let url = format!("mqtts://localhost:{}", broker.port);
    let tls = TlsBroker::tls_setting();
    let mut receiver = Agent::start(
        dir.path(),
        "receiver",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  m: {{ type: mqtt, version: 5, url: '{url}', topics: ['ok/{t}/#'], tls: {tls}, channels: [mem], linger: 20ms }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/got.ndjson', format: ndjson }}\n"
        ),
    );
    wait_connected(&mut receiver, 1).await;
    // An independent client subscribes too, printing each message's user properties.
    let seen = dir.path().join("seen.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(broker.client_args())
        .args(["-q", "1", "-C", "21", "-W", "60", "-F", "%t|%P|%p", "-t"])
        .arg(format!("ok/{t}/#"))
        .stdout(std::fs::File::create(&seen).unwrap())
        .spawn()
        .expect("mosquitto_sub");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pubbed = Command::new("mosquitto_pub")
        .args(broker.client_args())
        .args(["-q", "1", "-t", &format!("ok/{t}/independent")])
        .args(["-D", "publish", "user-property", "origin", "mosquitto_pub"])
        .args(["-m", "from mosquitto_pub"])
        .output()
        .unwrap();
    assert!(
        pubbed.status.success(),
        "{}",
        crate::common::stderr(&pubbed)
    );
    let sender = Agent::start(
        dir.path(),
        "sender",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  g: {{ type: generator, count: 40, body_size: 16, cycle: {{ header: zone, values: [ok, forbidden] }}, headers: {{ team: blue }}, channels: [mem] }}\n\
             sinks:\n  m: {{ type: mqtt, version: 5, url: '{url}', topic: '%{{zone}}/{t}/x', tls: {tls}, channel: mem, dlq: dead }}\n  \
             dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}\n"
        ),
    );
    let got = dir.path().join("got.ndjson");
    let dead = dir.path().join("dead.ndjson");
    receiver
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let (n, k) = (count(&got), count(&dead));
                if n >= 21 && k >= 20 {
                    Ok(())
                } else {
                    Err(format!("{n} of 21 received, {k} of 20 dead-lettered"))
                }
            },
        )
        .await;
    let status = tokio::task::spawn_blocking(move || sub.wait())
        .await
        .unwrap()
        .unwrap();
    let sender_log = sender.log();
    drop(sender);
    receiver.stop().await;
    assert!(status.success(), "mosquitto_sub did not get 21 messages");

    let events = json_lines(&got);
    assert_eq!(events.len(), 21, "{events:#?}");
    let independent = events
        .iter()
        .find(|e| e["body"] == "from mosquitto_pub")
        .expect("the message from mosquitto_pub");
    assert_eq!(independent["headers"]["origin"], "mosquitto_pub");
    assert_eq!(
        independent["headers"]["mqtt.topic"],
        format!("ok/{t}/independent")
    );
    let from_sluice: Vec<_> = events
        .iter()
        .filter(|e| e["headers"]["mqtt.topic"] == format!("ok/{t}/x"))
        .collect();
    assert_eq!(from_sluice.len(), 20);
    for e in &from_sluice {
        // Headers went out as user properties and came back as headers.
        assert_eq!(e["headers"]["zone"], "ok", "{e}");
        assert_eq!(e["headers"]["team"], "blue", "{e}");
    }
    let dead = json_lines(&dead);
    assert_eq!(dead.len(), 20, "{dead:#?}\n{sender_log}");
    for e in &dead {
        assert_eq!(e["headers"]["zone"], "forbidden");
        let reason = e["headers"]["sluice.dlq.reason"].as_str().unwrap();
        assert!(reason.contains("NotAuthorized"), "{reason}");
    }
    let seen = std::fs::read_to_string(&seen).unwrap();
    let ours: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with(&format!("ok/{t}/x|")))
        .collect();
    assert_eq!(ours.len(), 20, "{seen}");
    assert!(
        ours.iter()
            .all(|l| l.contains("zone:ok") && l.contains("team:blue")),
        "{seen}"
    );
}

/// Binary payloads through codec plugins, as devices send them: Protobuf messages (written by
/// Python's protobuf from `protoc` output) and Confluent-framed Avro records (fastavro) are
/// published by `mosquitto_pub`; the sources decode them into JSON events, and hostile
/// payloads — a wrong wire type, an unknown schema id, a truncated record — are dead-lettered
/// with the plugin's reason while later messages still decode.
#[tokio::test(flavor = "multi_thread")]
async fn codec_plugins_decode_payloads_and_dead_letter_hostile_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = crate::common::repo_root();
    let t = unique("codecs");
    let protoc = Command::new("protoc")
        .current_dir(root.join("plugins/protobuf/testdata"))
        .arg(format!("--python_out={}", d.display()))
        .arg("orders.proto")
        .output()
        .expect("protoc (scripts/test installs it)");
    assert!(
        protoc.status.success(),
        "{}",
        String::from_utf8_lossy(&protoc.stderr)
    );
    let made = Command::new(crate::common::python())
        .current_dir(d)
        .arg("-c")
        .arg(format!(
            r#"
import io, json, struct, fastavro, orders_pb2
schema = fastavro.parse_schema(json.load(open("{avsc}")))
def avro(i, schema_id=7):
    b = io.BytesIO()
    fastavro.schemaless_writer(b, schema, {{"id": i, "customer": "c%d" % i, "amount": 1.5,
        "status": "PAID", "coupon": None, "tags": []}})
    return b"\x00" + struct.pack(">I", schema_id) + b.getvalue()
def pb(i):
    return orders_pb2.Order(id=i, customer="c%d" % i, status=orders_pb2.Order.PAID).SerializeToString()
msgs = [("pb", b"\x0a\x03abc")] + [("pb", pb(i)) for i in range(1, 6)]
msgs += [("avro", avro(100, 8)), ("avro", avro(101)[:-3])] + [("avro", avro(i)) for i in range(1, 6)]
for n, (kind, body) in enumerate(msgs):
    open("%02d-%s.bin" % (n, kind), "wb").write(body)
"#,
            avsc = root.join("plugins/avro/testdata/order.avsc").display()
        ))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut agent = Agent::start(
        d,
        "codecs",
        &format!(
            "plugins:\n  pb: {{ path: '{pbw}', files: {{ descriptor_set: '{desc}' }}, config: {{ message: shop.v1.Order, framing: single }} }}\n  \
             av: {{ path: '{avw}', files: {{ schema.7: '{avsc}' }}, config: {{ format: confluent }} }}\n\
             channels:\n  mem: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  p: {{ type: mqtt, url: '{url}', topics: ['{t}/pb'], codec: pb, channels: [mem], dlq: dead, linger: 20ms }}\n  \
             a: {{ type: mqtt, url: '{url}', topics: ['{t}/avro'], codec: av, channels: [mem], dlq: dead, linger: 20ms }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{p}/got.ndjson', format: ndjson }}\n  \
             dl: {{ type: file, channel: dead, path: '{p}/dead.ndjson', format: ndjson }}\n",
            pbw = crate::common::dist("protobuf").display(),
            avw = crate::common::dist("avro").display(),
            desc = root.join("plugins/protobuf/testdata/orders.desc").display(),
            avsc = root.join("plugins/avro/testdata/order.avsc").display(),
            url = url(),
            p = d.display(),
        ),
    );
    wait_connected(&mut agent, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut files: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    for f in &files {
        let kind = if f.to_string_lossy().ends_with("pb.bin") {
            "pb"
        } else {
            "avro"
        };
        let o = Command::new("mosquitto_pub")
            .args(broker_args())
            .args(["-q", "1", "-t", &format!("{t}/{kind}"), "-f"])
            .arg(f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let got = d.join("got.ndjson");
    let dead = d.join("dead.ndjson");
    agent
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let (n, k) = (count(&got), count(&dead));
                if n >= 10 && k >= 3 {
                    Ok(())
                } else {
                    Err(format!("{n} of 10 decoded, {k} of 3 dead-lettered"))
                }
            },
        )
        .await;
    agent.stop().await;
    let events = json_lines(&got);
    assert_eq!(events.len(), 10, "{events:#?}");
    let bodies: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(e["body"].as_str().unwrap()).unwrap())
        .collect();
    for i in 1..6 {
        assert!(
            bodies.iter().any(
                |b| b["id"].as_str().and_then(|s| s.parse::<i64>().ok()) == Some(i)
                    && b["customer"] == format!("c{i}")
            ),
            "protobuf order {i}: {bodies:?}"
        );
        assert!(
            bodies
                .iter()
                .any(|b| b["id"] == i && b["customer"] == format!("c{i}")),
            "avro order {i}: {bodies:?}"
        );
    }
    let reasons: Vec<String> = json_lines(&dead)
        .iter()
        .map(|e| {
            e["headers"]["sluice.dlq.reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not a shop.v1.Order")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("schema id 8 is not configured")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains(&format!("{t}/avro"))),
        "{reasons:?}"
    );
}
