//! The `redis` sink and source through the real binary, against a real Redis
//! (`SLUICE_TEST_REDIS`, default `redis://127.0.0.1:6379/`); results are read back with the
//! `redis` crate. Every test uses its own key prefix (a uuid), so tests run in parallel and
//! reruns do not interfere.
//!
//! Sink: every command stores exactly what was sent (bytes, hash fields from JSON bodies and
//! from headers, list order, stream fields, TTLs, pub/sub); poison events (a body that is not
//! JSON, a key of the wrong type) go to the DLQ while the rest land, with and without
//! MULTI/EXEC; a Redis that comes up only after the agent started still gets every event.
//! Source: a stream read through a consumer group end to end (all acknowledged), SIGKILL in the
//! middle and a restart (every entry at least once, duplicates reported), and entries left
//! pending by a dead consumer claimed and delivered.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::common::{self, envelope, json_lines, run_stdin, sluice, wait_until};
use redis::Value;

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection()
        .unwrap_or_else(|e| panic!("redis at {url}: {e}"))
}

fn con() -> redis::Connection {
    connect(&redis_url())
}

/// A key prefix of this test's own.
fn prefix() -> String {
    format!("sluice-test:{}", uuid::Uuid::new_v4())
}

fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// Entries not yet acknowledged in `group`.
fn pending(con: &mut redis::Connection, stream: &str, group: &str) -> i64 {
    let summary: Vec<Value> = query(con, &["XPENDING", stream, group]);
    redis::from_redis_value(summary[0].clone()).unwrap()
}

/// How often the tests poll (with [`wait_until`]) for what they wait for.
const POLL: Duration = Duration::from_millis(50);

/// The `sluice` binary on a pipeline in a temp dir, stdin piped if asked (`write`, `finish`);
/// killed if still running when dropped. (Batch runs on stdin use [`run_stdin`].)
struct Agent {
    child: Option<Child>,
    dir: PathBuf,
}

impl Agent {
    fn spawn(dir: &Path, pipeline: &str, stdin: bool) -> Agent {
        let file = dir.join("p.yaml");
        std::fs::write(&file, pipeline).unwrap();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let child = sluice()
            .arg("-p")
            .arg(&file)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            dir: dir.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn write(&mut self, text: &str) {
        let child = self.child.as_mut().unwrap();
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// Closes stdin (the stdin source ends) and waits for the agent to drain and exit.
    fn finish(mut self) -> String {
        drop(self.child.as_mut().unwrap().stdin.take());
        let status = self.wait(Duration::from_secs(60));
        let log = self.log();
        assert!(status.success(), "sluice failed ({status}):\n{log}");
        log
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> String {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.wait(Duration::from_secs(30));
        let log = self.log();
        assert!(status.success(), "sluice failed ({status}):\n{log}");
        log
    }

    /// SIGKILL: no chance to acknowledge or commit anything more.
    fn kill(mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice did not finish in {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_running(&mut self) {
        if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("sluice exited ({s}):\n{}", self.log());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The five test events: JSON object bodies (so every command can take them), two headers.
fn sample() -> (String, Vec<String>) {
    let mut input = String::new();
    let mut bodies = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"n":{i},"s":"text ü {i}","nested":{{"x":[{i},true]}}}}"#);
        input += &envelope(&[("id", i.to_string()), ("kind", format!("k{i}"))], &body);
        bodies.push(body);
    }
    (input, bodies)
}

#[test]
fn every_command_stores_what_it_is_given() {
    let p = prefix();
    let url = redis_url();
    let dir = tempfile::tempdir().unwrap();
    let chans = ["set", "hj", "hh", "rp", "lp", "xa"];
    let mut pipeline = String::from("channels:\n");
    for c in chans {
        pipeline += &format!("  {c}: {{ type: memory }}\n");
    }
    pipeline += &format!(
        r#"sources:
  in: {{ type: stdin, codec: ndjson, channels: [{chans}] }}
sinks:
  set_out: {{ type: redis, channel: set, url: '{url}', command: set, key: '{p}:set:%{{id}}', ttl: 60s }}
  hset_json: {{ type: redis, channel: hj, url: '{url}', command: hset, key: '{p}:hj:%{{id}}' }}
  hset_headers:
    type: redis
    channel: hh
    url: '{url}'
    command: hset
    fields: headers
    body_field: payload
    key: '{p}:hh:%{{id}}'
  rpush_out: {{ type: redis, channel: rp, url: '{url}', command: rpush, key: '{p}:rlist', ttl: 30s, batch_size: 2 }}
  lpush_out: {{ type: redis, channel: lp, url: '{url}', command: lpush, key: '{p}:llist' }}
  xadd_out: {{ type: redis, channel: xa, url: '{url}', command: xadd, key: '{p}:stream', maxlen: 1000 }}
"#,
        chans = chans.join(", ")
    );
    let (input, bodies) = sample();
    run_stdin(dir.path(), &pipeline, &input);

    let mut c = con();
    for (i, body) in bodies.iter().enumerate() {
        // set: the body byte for byte, with its expiry.
        let key = format!("{p}:set:{i}");
        let got: Vec<u8> = query(&mut c, &["GET", &key]);
        assert_eq!(got, body.as_bytes(), "{key}");
        let ttl: i64 = query(&mut c, &["PTTL", &key]);
        assert!((1..=60_000).contains(&ttl), "{key}: PTTL {ttl}");

        // hset from a JSON body: strings as they are, other values as JSON text.
        let key = format!("{p}:hj:{i}");
        let got: BTreeMap<String, String> = query(&mut c, &["HGETALL", &key]);
        let want: BTreeMap<String, String> = [
            ("n", i.to_string()),
            ("s", format!("text ü {i}")),
            ("nested", format!(r#"{{"x":[{i},true]}}"#)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want, "{key}");
        let ttl: i64 = query(&mut c, &["PTTL", &key]);
        assert_eq!(ttl, -1, "{key}: no ttl configured");

        // hset from headers, plus the body under `body_field`.
        let key = format!("{p}:hh:{i}");
        let got: BTreeMap<String, String> = query(&mut c, &["HGETALL", &key]);
        let want: BTreeMap<String, String> = [
            ("id", i.to_string()),
            ("kind", format!("k{i}")),
            ("payload", body.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want, "{key}");
    }

    // rpush keeps the order across batches (batch_size 2); lpush reverses it.
    let got: Vec<String> = query(&mut c, &["LRANGE", &format!("{p}:rlist"), "0", "-1"]);
    assert_eq!(got, bodies);
    let ttl: i64 = query(&mut c, &["PTTL", &format!("{p}:rlist")]);
    assert!((1..=30_000).contains(&ttl), "rlist: PTTL {ttl}");
    let mut got: Vec<String> = query(&mut c, &["LRANGE", &format!("{p}:llist"), "0", "-1"]);
    got.reverse();
    assert_eq!(got, bodies);

    // xadd: the headers, then the body under `body`, in order.
    let entries: Vec<(String, Vec<String>)> =
        query(&mut c, &["XRANGE", &format!("{p}:stream"), "-", "+"]);
    assert_eq!(entries.len(), 5);
    for (i, (_, fields)) in entries.iter().enumerate() {
        let want = [
            "id".to_owned(),
            i.to_string(),
            "kind".into(),
            format!("k{i}"),
            "body".into(),
            bodies[i].clone(),
        ];
        assert_eq!(fields, &want, "entry {i}");
    }
    cleanup(&mut c, &p);
}

/// `only_new: true` (`SET ... NX`) keyed on the event id: replayed records, also twice in one
/// batch, leave the first copy's value, and nothing goes to the DLQ.
#[test]
fn set_only_new_keeps_the_first_copy_of_each_event() {
    let p = prefix();
    let url = redis_url();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem], event_id: {{ from: [offset] }} }}
sinks:
  once: {{ type: redis, channel: mem, dlq: dead, url: '{url}', command: set, only_new: true, key: '{p}:ev:%{{sluice.id}}' }}
  dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#,
        d = dir.path().display()
    );
    let lines = |ids: std::ops::Range<u32>, round: &str| -> String {
        ids.map(|i| envelope(&[("offset", i.to_string())], &format!("{round} {i}")))
            .collect()
    };
    run_stdin(dir.path(), &pipeline, lines(0..30, "first"));
    run_stdin(
        dir.path(),
        &pipeline,
        lines(0..50, "second") + &lines(0..50, "third"),
    );
    let mut c = con();
    for i in 0..50 {
        let got: String = query(&mut c, &["GET", &format!("{p}:ev:{i}")]);
        let round = if i < 30 { "first" } else { "second" };
        assert_eq!(got, format!("{round} {i}"), "event {i}");
    }
    let dead = std::fs::read_to_string(dir.path().join("dead.ndjson")).unwrap_or_default();
    assert!(dead.is_empty(), "an existing key is no error: {dead}");
    cleanup(&mut c, &p);
}

#[test]
fn binary_bodies_are_stored_byte_for_byte() {
    let p = prefix();
    let url = redis_url();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"channels:
  mem: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem] }}
sinks:
  out: {{ type: redis, channel: mem, url: '{url}', command: set, key: '{p}:bin:%{{id}}', ttl: 90500ms }}
"#
    );
    use base64::Engine as _;
    let all: Vec<u8> = (0..=255u8).collect();
    let empty: Vec<u8> = Vec::new();
    let mut input = String::new();
    for (id, bytes) in [("all", &all), ("empty", &empty)] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        input +=
            &(serde_json::json!({"headers": {"id": id}, "body_base64": b64}).to_string() + "\n");
    }
    run_stdin(dir.path(), &pipeline, &input);
    let mut c = con();
    let got: Vec<u8> = query(&mut c, &["GET", &format!("{p}:bin:all")]);
    assert_eq!(got, all);
    let exists: i64 = query(&mut c, &["EXISTS", &format!("{p}:bin:empty")]);
    assert_eq!(exists, 1);
    let got: Vec<u8> = query(&mut c, &["GET", &format!("{p}:bin:empty")]);
    assert!(got.is_empty());
    let ttl: i64 = query(&mut c, &["PTTL", &format!("{p}:bin:all")]);
    assert!(
        (60_001..=90_500).contains(&ttl),
        "PTTL {ttl} (milliseconds kept)"
    );
    cleanup(&mut c, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_subscriber() {
    use futures_util::StreamExt as _;

    let p = prefix();
    let url = redis_url();
    let channel = format!("{p}:chan");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"channels:
  mem: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem] }}
sinks:
  out: {{ type: redis, channel: mem, url: '{url}', command: publish, key: '{channel}' }}
"#
    );
    let (input, bodies) = sample();
    let agent = tokio::task::spawn_blocking(move || {
        run_stdin(dir.path(), &pipeline, &input);
        dir
    });

    let mut messages = std::pin::pin!(pubsub.on_message());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < bodies.len() {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(m)) => {
                assert_eq!(m.get_channel_name(), channel);
                got.push(String::from_utf8(m.get_payload_bytes().to_vec()).unwrap());
            }
            Ok(None) => panic!("subscription ended after {got:?}"),
            Err(_) => panic!("timed out after {} of {} messages", got.len(), bodies.len()),
        }
    }
    assert_eq!(got, bodies);
    agent.await.unwrap();
}

#[test]
fn poison_events_go_to_the_dlq_and_the_rest_land() {
    let p = prefix();
    let url = redis_url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut c = con();
    // Keys 2 already hold strings: HSET on them is refused with WRONGTYPE.
    for sink in ["plain", "multi"] {
        let key = format!("{p}:{sink}:2");
        query::<()>(&mut c, &["SET", &key, "a string"]);
    }
    let pipeline = format!(
        r#"channels:
  a: {{ type: memory }}
  b: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [a, b] }}
sinks:
  plain: {{ type: redis, channel: a, dlq: dead, url: '{url}', command: hset, fields: json, key: '{p}:plain:%{{id}}' }}
  multi: {{ type: redis, channel: b, dlq: dead, url: '{url}', command: hset, key: '{p}:multi:%{{id}}', transaction: true }}
  dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#
    );
    let input = [
        envelope(&[("id", "1".into())], r#"{"a":"1"}"#),
        envelope(&[("id", "2".into())], r#"{"b":"2"}"#),
        envelope(&[("id", "3".into())], "not json"),
        envelope(&[("id", "4".into())], r#"{"c":3}"#),
    ]
    .concat();
    run_stdin(dir.path(), &pipeline, &input);

    for sink in ["plain", "multi"] {
        let hash = |c: &mut redis::Connection, id: u32| -> BTreeMap<String, String> {
            query(c, &["HGETALL", &format!("{p}:{sink}:{id}")])
        };
        assert_eq!(hash(&mut c, 1), BTreeMap::from([("a".into(), "1".into())]));
        assert_eq!(hash(&mut c, 4), BTreeMap::from([("c".into(), "3".into())]));
        let s: String = query(&mut c, &["GET", &format!("{p}:{sink}:2")]);
        assert_eq!(s, "a string", "{sink}: the string key is untouched");
        let n: i64 = query(&mut c, &["EXISTS", &format!("{p}:{sink}:3")]);
        assert_eq!(n, 0, "{sink}: nothing stored for the non-JSON body");
    }

    let dead = json_lines(&dir.path().join("dead.ndjson"));
    assert_eq!(dead.len(), 4, "{dead:#?}");
    for sink in ["plain", "multi"] {
        let mut mine: Vec<(String, String)> = dead
            .iter()
            .filter(|e| e["headers"]["sluice.dlq.component"] == sink)
            .map(|e| {
                (
                    e["body"].as_str().unwrap().to_owned(),
                    e["headers"]["sluice.dlq.reason"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect();
        mine.sort();
        assert_eq!(mine.len(), 2, "{sink}: {dead:#?}");
        assert_eq!(mine[0].0, "not json");
        assert_eq!(mine[0].1, "body is not a JSON object");
        assert_eq!(mine[1].0, r#"{"b":"2"}"#);
        assert!(
            mine[1].1.starts_with("WRONGTYPE"),
            "{sink}: reason {:?}",
            mine[1].1
        );
        for e in dead
            .iter()
            .filter(|e| e["headers"]["sluice.dlq.component"] == sink)
        {
            assert_eq!(e["headers"]["sluice.dlq.class"], "permanent");
        }
    }
    cleanup(&mut c, &p);
}

/// A `redis-server` of the test's own, stopped when dropped (also when the test fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_redis_that_comes_up_later_gets_every_event() {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: redis-server is not on PATH");
        return;
    }
    let port = common::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"channels:
  mem: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem] }}
sinks:
  out:
    type: redis
    channel: mem
    url: '{url}'
    command: rpush
    key: list
    timeout: 1s
    batch_size: 10
    retry: {{ max_attempts: 100000, initial_backoff: 50ms, max_backoff: 300ms }}
"#
    );
    let mut agent = Agent::spawn(dir.path(), &pipeline, true);
    let bodies: Vec<String> = (0..50).map(|i| format!("event-{i:03}")).collect();
    for b in &bodies {
        agent.write(&envelope(&[], b));
    }
    // Let delivery fail against the closed port for a while (not a pass criterion).
    std::thread::sleep(Duration::from_secs(2));
    agent.assert_running();
    let server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut c = wait_until(Duration::from_secs(30), POLL, String::new, async || {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .map_err(|e| format!("the late redis-server does not accept connections: {e}"))
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got: Vec<String> = query(&mut c, &["LRANGE", "list", "0", "-1"]);
        if got.len() >= bodies.len() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events arrived:\n{}",
            got.len(),
            bodies.len(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(got, bodies, "every event once, in order");
    let log = agent.log();
    assert!(log.contains("delivery failed; will retry"), "{log}");
    assert!(log.contains("connected to redis"), "{log}");
    drop(server);
    agent.finish();
}

/// XADDs `n` entries `body=<prefix>-<i>, seq=<i>` to `stream`, in batches.
fn add_entries(c: &mut redis::Connection, stream: &str, from: usize, n: usize) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("seq")
                .arg(*i)
                .arg("body")
                .arg(format!("msg-{i}"))
                .ignore();
        }
        pipe.query::<()>(c).unwrap();
    }
}

fn source_pipeline(url: &str, stream: &str, extra: &str, sink: &str) -> String {
    format!(
        r#"channels:
  mem: {{ type: memory }}
sources:
  rs:
    type: redis
    channels: [mem]
    url: '{url}'
    stream: '{stream}'
    group: g
    consumer: c1
    block: 200ms
{extra}sinks:
{sink}"#
    )
}

#[tokio::test]
async fn a_stream_is_read_through_a_group_and_every_entry_acknowledged() {
    let p = prefix();
    let url = redis_url();
    let stream = format!("{p}:s");
    let mut c = con();
    const N: usize = 1000;
    add_entries(&mut c, &stream, 0, N);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = source_pipeline(
        &url,
        &stream,
        "    batch_size: 128\n",
        &format!(
            "  out: {{ type: file, channel: mem, path: '{}', format: ndjson }}\n",
            out.display()
        ),
    );
    let agent = Agent::spawn(dir.path(), &pipeline, false);
    let count = || {
        std::fs::read_to_string(&out)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let log = || agent.log();
    wait_until(Duration::from_secs(60), POLL, log, async || match count() {
        n if n >= N => Ok(()),
        n => Err(format!("{n} of {N} events written")),
    })
    .await;
    wait_until(Duration::from_secs(30), POLL, log, async || {
        match pending(&mut c, &stream, "g") {
            0 => Ok(()),
            n => Err(format!("{n} entries still pending")),
        }
    })
    .await;
    // Entries added while the agent runs are read too.
    add_entries(&mut c, &stream, N, 10);
    wait_until(Duration::from_secs(30), POLL, log, async || match count() {
        n if n >= N + 10 => Ok(()),
        n => Err(format!("{n} of {} events written", N + 10)),
    })
    .await;
    let log = agent.stop();
    assert!(!log.contains("redis XREADGROUP failed"), "{log}");

    let events = json_lines(&out);
    assert_eq!(events.len(), N + 10);
    let ids: Vec<(String, Vec<String>)> = query(&mut c, &["XRANGE", &stream, "-", "+"]);
    for (i, e) in events.iter().enumerate() {
        let h = &e["headers"];
        assert_eq!(e["body"], format!("msg-{i}"), "in stream order");
        assert_eq!(h["seq"], i.to_string());
        assert_eq!(h["redis.stream"], stream.as_str());
        assert_eq!(h["redis.id"], ids[i].0.as_str());
        let ms = ids[i].0.split('-').next().unwrap();
        assert_eq!(h["timestamp"], ms);
        assert!(h.get("body").is_none(), "the body field is not a header");
    }
    assert_eq!(pending(&mut c, &stream, "g"), 0);
    cleanup(&mut c, &p);
}

#[tokio::test]
async fn sigkill_and_restart_delivers_every_entry_at_least_once() {
    let p = prefix();
    let url = redis_url();
    let stream = format!("{p}:s");
    let list = format!("{p}:out");
    let mut c = con();
    const N: usize = 4000;
    add_entries(&mut c, &stream, 0, N);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = source_pipeline(
        &url,
        &stream,
        "    batch_size: 50\n",
        &format!(
            "  out: {{ type: redis, channel: mem, url: '{url}', command: rpush, key: '{list}', batch_size: 20 }}\n"
        ),
    )
    .replace(
        "  mem: { type: memory }",
        &format!(
            "  mem: {{ type: rocksdb, path: '{}' }}",
            dir.path().join("ch").display()
        ),
    );
    let len = |c: &mut redis::Connection| -> usize { query(c, &["LLEN", &list]) };
    let mut kills = Vec::new();
    for threshold in [300, 1500] {
        let mut agent = Agent::spawn(dir.path(), &pipeline, false);
        wait_until(
            Duration::from_secs(60),
            POLL,
            || agent.log(),
            async || match len(&mut c) {
                n if n >= threshold => Ok(()),
                n => Err(format!("{n} of the first {threshold} delivered")),
            },
        )
        .await;
        agent.assert_running();
        agent.kill();
        kills.push(len(&mut c));
    }
    let agent = Agent::spawn(dir.path(), &pipeline, false);
    let distinct = |c: &mut redis::Connection| -> (usize, usize) {
        let all: Vec<String> = query(c, &["LRANGE", &list, "0", "-1"]);
        let set: HashSet<&String> = all.iter().collect();
        (set.len(), all.len())
    };
    let log = || agent.log();
    wait_until(
        Duration::from_secs(120),
        POLL,
        log,
        async || match distinct(&mut c) {
            (d, _) if d >= N => Ok(()),
            d => Err(format!("distinct/total {d:?} of {N}")),
        },
    )
    .await;
    wait_until(Duration::from_secs(30), POLL, log, async || {
        match pending(&mut c, &stream, "g") {
            0 => Ok(()),
            n => Err(format!("{n} entries still pending")),
        }
    })
    .await;
    agent.stop();

    let all: Vec<String> = query(&mut c, &["LRANGE", &list, "0", "-1"]);
    let want: HashSet<String> = (0..N).map(|i| format!("msg-{i}")).collect();
    let got: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(got, want, "every entry delivered, nothing else");
    eprintln!(
        "redis sigkill: {N} entries, list length at the kills {kills:?}, delivered {} ({} duplicates)",
        all.len(),
        all.len() - N
    );
    assert_eq!(pending(&mut c, &stream, "g"), 0);
    cleanup(&mut c, &p);
}

#[tokio::test]
async fn entries_left_pending_by_a_dead_consumer_are_claimed() {
    let p = prefix();
    let url = redis_url();
    let stream = format!("{p}:s");
    let mut c = con();
    query::<()>(&mut c, &["XGROUP", "CREATE", &stream, "g", "0", "MKSTREAM"]);
    add_entries(&mut c, &stream, 0, 10);
    // A consumer reads four entries and dies without acknowledging them.
    let _: Value = query(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "dead",
            "COUNT",
            "4",
            "STREAMS",
            &stream,
            ">",
        ],
    );
    assert_eq!(pending(&mut c, &stream, "g"), 4);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = source_pipeline(
        &url,
        &stream,
        "    claim_idle: 1s\n",
        &format!(
            "  out: {{ type: file, channel: mem, path: '{}', format: ndjson }}\n",
            out.display()
        ),
    );
    let agent = Agent::spawn(dir.path(), &pipeline, false);
    let count = || {
        std::fs::read_to_string(&out)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let log = || agent.log();
    wait_until(Duration::from_secs(30), POLL, log, async || match count() {
        n if n >= 10 => Ok(()),
        n => Err(format!("{n} of 10 events written")),
    })
    .await;
    wait_until(Duration::from_secs(30), POLL, log, async || {
        match pending(&mut c, &stream, "g") {
            0 => Ok(()),
            n => Err(format!("{n} entries still pending")),
        }
    })
    .await;
    let log = agent.stop();
    let mut bodies: Vec<String> = json_lines(&out)
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    bodies.sort_by_key(|b| b[4..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..10).map(|i| format!("msg-{i}")).collect();
    assert_eq!(bodies, want, "each entry once:\n{log}");
    assert!(log.contains("claimed"), "{log}");
    cleanup(&mut c, &p);
}

/// Deletes this test's keys.
fn cleanup(c: &mut redis::Connection, prefix: &str) {
    let keys: Vec<String> = query(c, &["KEYS", &format!("{prefix}:*")]);
    for k in keys {
        let _: i64 = query(c, &["DEL", &k]);
    }
}
