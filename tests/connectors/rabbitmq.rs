//! The `rabbitmq` source and sink through the real binary, against the RabbitMQ at
//! `SLUICE_TEST_AMQP` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//!
//! 1. queue → source → memory channel → sink → queue: every message arrives once, in order,
//!    with its properties and headers; the input queue ends empty (everything acknowledged).
//! 2. kill -9 mid-stream with a RocksDB channel and a sink that cannot deliver yet: after a
//!    restart and the outage's end, every message arrives at least once (duplicates reported).
//! 3. the sink's exchange does not exist at first: once it is created and bound, every
//!    message arrives.
//! 4. connections are cut (a TCP proxy between agent and broker drops them, and, when the
//!    test runs as root with `rabbitmqctl`, the broker closes them): nothing is lost.
//!
//! Queue and exchange names carry a fresh UUID, so tests run in parallel and reruns do not
//! interfere; test queues also expire on their own (`x-expires`) if a test dies.

use std::{
    collections::{HashMap, HashSet},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::{Agent, unique};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

pub(crate) fn amqp() -> String {
    std::env::var("SLUICE_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub(crate) async fn connect() -> Connection {
    Connection::connect(&amqp(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot reach RabbitMQ (SLUICE_TEST_AMQP): {e}"))
}

/// A channel whose publishes are confirmed.
pub(crate) async fn publisher(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// A queue that deletes itself after ten unused minutes.
pub(crate) async fn declare_queue(ch: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .unwrap();
}

/// Messages ready in `queue` (delivered-but-unacknowledged ones are not counted).
pub(crate) async fn ready(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Publishes persistent messages to the default exchange and waits for every confirm.
pub(crate) async fn publish(ch: &Channel, queue: &str, messages: Vec<(String, BasicProperties)>) {
    let mut confirms = Vec::with_capacity(messages.len());
    for (body, props) in messages {
        let c = ch
            .basic_publish(
                ShortString::from(""),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props.with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        assert!(
            c.await.unwrap().is_ack(),
            "the broker refused a test message"
        );
    }
}

pub(crate) fn plain(bodies: impl IntoIterator<Item = String>) -> Vec<(String, BasicProperties)> {
    bodies
        .into_iter()
        .map(|b| (b, BasicProperties::default()))
        .collect()
}

pub(crate) async fn cleanup(ch: &Channel, queues: &[&str], exchanges: &[&str]) {
    for q in queues {
        let _ = ch
            .queue_delete((*q).into(), QueueDeleteOptions::default())
            .await;
    }
    for x in exchanges {
        let _ = ch
            .exchange_delete((*x).into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// How often the tests poll (with [`Agent::wait_until`]) for what they wait for.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------- reading the output

/// Consumes a queue (auto-ack) in the background and keeps what arrives.
struct Collector {
    got: Arc<Mutex<Vec<(String, BasicProperties)>>>,
    task: JoinHandle<()>,
}

impl Collector {
    async fn start(conn: &Connection, queue: &str) -> Collector {
        let ch = conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                ShortString::from(""),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let got: Arc<Mutex<Vec<(String, BasicProperties)>>> = Arc::default();
        let sink = Arc::clone(&got);
        let task = tokio::spawn(async move {
            let _channel = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let body = String::from_utf8(d.data).unwrap();
                sink.lock().unwrap().push((body, d.properties));
            }
        });
        Collector { got, task }
    }

    /// How many times each body arrived.
    fn counts(&self) -> HashMap<String, u32> {
        let mut m = HashMap::new();
        for (b, _) in self.got.lock().unwrap().iter() {
            *m.entry(b.clone()).or_default() += 1;
        }
        m
    }

    fn distinct(&self) -> usize {
        self.counts().len()
    }

    async fn wait_distinct(&self, n: usize, limit: Duration, agent: &mut Agent) {
        agent
            .wait_until(limit, POLL, async || match self.distinct() {
                have if have >= n => Ok(()),
                have => Err(format!(
                    "waiting for {n} distinct messages in the output queue ({have} so far)"
                )),
            })
            .await
    }

    /// Checks that exactly `expected` arrived, each at least once; returns the duplicates.
    fn check_at_least_once(&self, expected: &[String]) -> u32 {
        let counts = self.counts();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|b| !counts.contains_key(b.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} messages never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        let wanted: HashSet<&str> = expected.iter().map(String::as_str).collect();
        let unexpected: Vec<&String> = counts
            .keys()
            .filter(|b| !wanted.contains(b.as_str()))
            .collect();
        assert!(unexpected.is_empty(), "unexpected messages: {unexpected:?}");
        counts.values().map(|n| n - 1).sum()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn table_text(p: &BasicProperties, key: &str) -> Option<String> {
    match p.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => panic!("header {key}: expected a string, got {other:?}"),
    }
}

fn short_text(v: &Option<ShortString>) -> Option<&str> {
    v.as_ref().map(ShortString::as_str)
}

// ---------------------------------------------------------------- 1. end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_move_between_queues_with_properties_and_headers() {
    const N: usize = 500;
    const T0: u64 = 1_700_000_000;
    let conn = connect().await;
    let ch = publisher(&conn).await;
    let (qin, qout) = (unique("sluice-test-in"), unique("sluice-test-out"));
    declare_queue(&ch, &qin).await;
    declare_queue(&ch, &qout).await;

    let messages = (0..N)
        .map(|i| {
            let mut headers = FieldTable::default();
            headers.insert(
                "route".into(),
                AMQPValue::LongString(LongString::from(qout.as_str())),
            );
            headers.insert("seq".into(), AMQPValue::LongInt(i as i32));
            headers.insert("flag".into(), AMQPValue::Boolean(true));
            let props = BasicProperties::default()
                .with_message_id(format!("m-{i}").into())
                .with_content_type("text/plain".into())
                .with_timestamp(T0 + i as u64)
                .with_headers(headers);
            (format!("body-{i:04}"), props)
        })
        .collect();
    publish(&ch, &qin, messages).await;

    let dir = tempfile::tempdir().unwrap();
    let uri = amqp();
    let out = Collector::start(&conn, &qout).await;
    let mut agent = Agent::start(
        dir.path(),
        "e2e",
        &format!(
            r#"
channels:
  mem: {{ type: memory, capacity: 5000 }}
sources:
  in:
    type: rabbitmq
    uri: '{uri}'
    queue: '{qin}'
    batch_size: 64
    linger: 20ms
    channels: [mem]
sinks:
  out:
    type: rabbitmq
    uri: '{uri}'
    channel: mem
    routing_key: '%{{route}}'
    batch_size: 100
"#
        ),
    );
    out.wait_distinct(N, Duration::from_secs(60), &mut agent)
        .await;
    let log = agent.stop().await;

    let got = out.got.lock().unwrap().clone();
    let bodies: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("body-{i:04}")).collect();
    assert_eq!(bodies, expected, "every message once, in order");
    for (i, (_, p)) in got.iter().enumerate() {
        let ctx = format!("message {i}: {p:?}");
        assert_eq!(
            short_text(p.message_id()),
            Some(&*format!("m-{i}")),
            "{ctx}"
        );
        assert_eq!(short_text(p.content_type()), Some("text/plain"), "{ctx}");
        assert_eq!(*p.timestamp(), Some(T0 + i as u64), "{ctx}");
        assert_eq!(*p.delivery_mode(), Some(2), "persistent by default; {ctx}");
        assert_eq!(table_text(p, "route"), Some(qout.clone()), "{ctx}");
        assert_eq!(table_text(p, "seq"), Some(i.to_string()), "{ctx}");
        assert_eq!(table_text(p, "flag").as_deref(), Some("true"), "{ctx}");
        assert_eq!(
            table_text(p, "timestamp"),
            Some(((T0 + i as u64) * 1000).to_string()),
            "the epoch-ms event time travels in the table; {ctx}"
        );
        let table = p.headers().as_ref().unwrap();
        assert!(
            !table
                .inner()
                .keys()
                .any(|k| k.as_str().starts_with("amqp.")),
            "amqp.* headers become properties, not table entries; {ctx}"
        );
    }
    assert_eq!(
        ready(&ch, &qin).await,
        0,
        "every input message was acknowledged; log:\n{log}"
    );
    cleanup(&ch, &[qin.as_str(), qout.as_str()], &[]).await;
}

// ---------------------------------------------------------------- 2. kill -9

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_between_queue_and_durable_channel() {
    const N: usize = 3000;
    let conn = connect().await;
    let ch = publisher(&conn).await;
    let (qin, qout, ex) = (
        unique("sluice-test-in"),
        unique("sluice-test-out"),
        unique("sluice-test-ex"),
    );
    declare_queue(&ch, &qin).await;
    declare_queue(&ch, &qout).await;
    let expected: Vec<String> = (0..N).map(|i| format!("k-{i:05}")).collect();
    publish(&ch, &qin, plain(expected.clone())).await;

    let dir = tempfile::tempdir().unwrap();
    let uri = amqp();
    let disk = dir.path().join("disk");
    let pipeline = format!(
        r#"
channels:
  disk: {{ type: rocksdb, path: '{disk}' }}
sources:
  in:
    type: rabbitmq
    uri: '{uri}'
    queue: '{qin}'
    batch_size: 20
    prefetch: 40
    linger: 5ms
    channels: [disk]
sinks:
  out:
    type: rabbitmq
    uri: '{uri}'
    channel: disk
    exchange: '{ex}'
    routing_key: k
    mandatory: true
    unroutable: retry
    batch_size: 100
    retry: {{ max_attempts: 1000000, initial_backoff: 20ms, max_backoff: 200ms }}
"#,
        disk = disk.display()
    );

    // The exchange does not exist yet: everything the source takes piles up on disk.
    let mut first = Agent::start(dir.path(), "first", &pipeline);
    let (chan, input) = (&ch, qin.as_str());
    let two_thirds = (N - N / 3) as u32;
    first
        .wait_until(Duration::from_secs(30), POLL, async || {
            match ready(chan, input).await {
                left if left <= two_thirds => Ok(()),
                left => Err(format!(
                    "waiting for the source to take a third of the queue ({left} of {N} still ready)"
                )),
            }
        })
        .await;
    first.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = ready(&ch, &qin).await;
    eprintln!("killed with {left} of {N} messages still in the input queue");

    let mut second = Agent::start(dir.path(), "second", &pipeline);
    second
        .wait_until(Duration::from_secs(60), POLL, async || {
            match ready(chan, input).await {
                0 => Ok(()),
                left => Err(format!(
                    "waiting for the restarted source to empty the input queue ({left} still ready)"
                )),
            }
        })
        .await;
    let out = Collector::start(&conn, &qout).await;
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qout.as_str().into(),
        ex.as_str().into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    out.wait_distinct(N, Duration::from_secs(90), &mut second)
        .await;
    let log = second.stop().await;
    let duplicates = out.check_at_least_once(&expected);
    eprintln!("kill -9: all {N} messages delivered; {duplicates} duplicates");
    assert_eq!(
        ready(&ch, &qin).await,
        0,
        "nothing left unacknowledged; log:\n{log}"
    );
    cleanup(&ch, &[qin.as_str(), qout.as_str()], &[ex.as_str()]).await;
}

// ---------------------------------------------------------------- 3. sink outage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_holds_events_until_it_exists() {
    const N: usize = 400;
    let conn = connect().await;
    let ch = publisher(&conn).await;
    let (qin, qout, ex) = (
        unique("sluice-test-in"),
        unique("sluice-test-out"),
        unique("sluice-test-ex"),
    );
    declare_queue(&ch, &qin).await;
    declare_queue(&ch, &qout).await;

    let dir = tempfile::tempdir().unwrap();
    let uri = amqp();
    let mut agent = Agent::start(
        dir.path(),
        "outage",
        &format!(
            r#"
channels:
  mem: {{ type: memory }}
sources:
  in:
    type: rabbitmq
    uri: '{uri}'
    queue: '{qin}'
    batch_size: 50
    linger: 10ms
    channels: [mem]
sinks:
  out:
    type: rabbitmq
    uri: '{uri}'
    channel: mem
    exchange: '{ex}'
    routing_key: 'to-%{{dest}}'
    mandatory: true
    unroutable: retry
    batch_size: 100
    retry: {{ max_attempts: 1000000, initial_backoff: 20ms, max_backoff: 300ms }}
"#
        ),
    );
    let expected: Vec<String> = (0..N).map(|i| format!("o-{i:04}")).collect();
    let messages = expected
        .iter()
        .map(|b| {
            let mut h = FieldTable::default();
            h.insert("dest".into(), AMQPValue::LongString("out".into()));
            (b.clone(), BasicProperties::default().with_headers(h))
        })
        .collect();
    publish(&ch, &qin, messages).await;

    let log_path = dir.path().join("outage.log");
    let log_path = log_path.as_path();
    agent
        .wait_until(Duration::from_secs(30), POLL, async || {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if log.contains("NOT_FOUND") {
                Ok(())
            } else {
                Err("waiting for the sink to report the missing exchange".to_owned())
            }
        })
        .await;
    let (chan, input) = (&ch, qin.as_str());
    agent
        .wait_until(Duration::from_secs(30), POLL, async || {
            match ready(chan, input).await {
                0 => Ok(()),
                left => Err(format!(
                    "waiting for the source to take every message ({left} still ready)"
                )),
            }
        })
        .await;

    let out = Collector::start(&conn, &qout).await;
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qout.as_str().into(),
        ex.as_str().into(),
        "to-out".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    out.wait_distinct(N, Duration::from_secs(60), &mut agent)
        .await;
    agent.stop().await;
    let duplicates = out.check_at_least_once(&expected);
    eprintln!(
        "outage: all {N} messages delivered once the exchange existed; {duplicates} duplicates"
    );
    cleanup(&ch, &[qin.as_str(), qout.as_str()], &[ex.as_str()]).await;
}

// ---------------------------------------------------------------- 4. cut connections

/// A TCP proxy to the broker whose connections the test can cut at once.
struct Proxy {
    port: u16,
    /// Live pipes and the local port of their broker side (the broker's `peer_port`).
    pipes: Arc<Mutex<Vec<(AbortHandle, u16)>>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pipes: Arc<Mutex<Vec<(AbortHandle, u16)>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (p, a) = (Arc::clone(&pipes), Arc::clone(&accepted));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let local = up.local_addr().map(|s| s.port()).unwrap_or(0);
                let pipe = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                p.lock().unwrap().push((pipe.abort_handle(), local));
            }
        });
        Proxy {
            port,
            pipes,
            accepted,
            task,
        }
    }

    /// Drops every connection (both sides see the socket close); returns how many.
    fn cut(&self) -> usize {
        let pipes = std::mem::take(&mut *self.pipes.lock().unwrap());
        for (pipe, _) in &pipes {
            pipe.abort();
        }
        pipes.len()
    }

    fn broker_side_ports(&self) -> Vec<u16> {
        self.pipes.lock().unwrap().iter().map(|(_, p)| *p).collect()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// `(host:port of the broker, the same URI pointed at 127.0.0.1:port)`.
fn proxied(uri: &str, port: u16) -> (String, String) {
    let (scheme, rest) = uri.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let upstream = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    };
    let user = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    (
        upstream,
        format!("{scheme}://{user}127.0.0.1:{port}/{path}"),
    )
}

/// Asks the broker to close the connections coming from `ports`; `Err` says why it cannot.
fn rabbitmqctl_close(ports: &[u16]) -> Result<usize, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "peer_port"])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl list_connections failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut cols = line.split_whitespace();
        let (Some(pid), Some(port)) = (cols.next(), cols.next()) else {
            continue;
        };
        if port.parse::<u16>().is_ok_and(|p| ports.contains(&p)) {
            let ok = Command::new("rabbitmqctl")
                .args(["close_connection", pid, "sluice test: forced close"])
                .status()
                .map_err(|e| format!("rabbitmqctl: {e}"))?
                .success();
            closed += usize::from(ok);
        }
    }
    Ok(closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_are_reopened_and_nothing_is_lost() {
    const PHASE: usize = 1000;
    let conn = connect().await;
    let ch = publisher(&conn).await;
    let (qin, qout) = (unique("sluice-test-in"), unique("sluice-test-out"));
    declare_queue(&ch, &qin).await;
    declare_queue(&ch, &qout).await;

    let (upstream, _) = proxied(&amqp(), 0);
    let proxy = Proxy::start(upstream).await;
    let (_, via_proxy) = proxied(&amqp(), proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let out = Collector::start(&conn, &qout).await;
    let mut agent = Agent::start(
        dir.path(),
        "cuts",
        &format!(
            r#"
channels:
  mem: {{ type: memory }}
sources:
  in:
    type: rabbitmq
    uri: '{via_proxy}'
    queue: '{qin}'
    batch_size: 50
    linger: 10ms
    reconnect_backoff: 100ms
    max_reconnect_backoff: 1s
    channels: [mem]
sinks:
  out:
    type: rabbitmq
    uri: '{via_proxy}'
    channel: mem
    routing_key: '{qout}'
    batch_size: 100
    retry: {{ max_attempts: 1000000, initial_backoff: 20ms, max_backoff: 300ms }}
"#
        ),
    );

    let mut expected = Vec::new();
    for phase in 0..3 {
        let bodies: Vec<String> = (0..PHASE).map(|i| format!("c-{phase}-{i:04}")).collect();
        expected.extend(bodies.iter().cloned());
        let publishing = {
            let ch = ch.clone();
            let qin = qin.clone();
            tokio::spawn(async move {
                for chunk in bodies.chunks(100) {
                    publish(&ch, &qin, plain(chunk.to_vec())).await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        };
        // Cut while this phase's messages are in flight.
        out.wait_distinct(phase * PHASE + 300, Duration::from_secs(60), &mut agent)
            .await;
        if phase < 2 {
            let cut = proxy.cut();
            eprintln!("phase {phase}: cut {cut} proxied connections");
            assert!(cut >= 2, "source and sink connect through the proxy");
        } else {
            let ports = proxy.broker_side_ports();
            match tokio::task::spawn_blocking(move || rabbitmqctl_close(&ports))
                .await
                .unwrap()
            {
                Ok(n) => eprintln!("phase {phase}: the broker closed {n} connections"),
                Err(why) => eprintln!("phase {phase}: SKIPPED the broker-side close ({why})"),
            }
        }
        publishing.await.unwrap();
        out.wait_distinct((phase + 1) * PHASE, Duration::from_secs(90), &mut agent)
            .await;
    }
    // After the last disruption: the flow still works.
    let tail: Vec<String> = (0..200).map(|i| format!("c-tail-{i:03}")).collect();
    expected.extend(tail.iter().cloned());
    publish(&ch, &qin, plain(tail)).await;
    out.wait_distinct(expected.len(), Duration::from_secs(60), &mut agent)
        .await;
    assert!(
        proxy.accepted() >= 6,
        "source and sink reconnected after each cut ({} connections)",
        proxy.accepted()
    );
    let log = agent.stop().await;
    let duplicates = out.check_at_least_once(&expected);
    eprintln!(
        "cuts: all {} messages delivered; {duplicates} duplicates",
        expected.len()
    );
    assert!(
        log.contains("reconnecting"),
        "the source logged the lost connection:\n{log}"
    );
    assert_eq!(ready(&ch, &qin).await, 0, "nothing left unacknowledged");
    cleanup(&ch, &[qin.as_str(), qout.as_str()], &[]).await;
}
