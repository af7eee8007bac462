//! The Kafka connectors against a real broker (`SLUICE_TEST_KAFKA`, default 127.0.0.1:9092;
//! `scripts/test` starts tansu there): source → sink through the binary, 20 SIGKILLs and an
//! output broker's outage (a tansu of the test's own behind a proxy) with a durable channel in
//! between, checked in Jepsen's terms, two agents sharing a consumer group, the `kafka` channel
//! across reopenings (library level), and a sink waiting for a topic that does not exist yet.
//!
//! Topics and groups are created through rdkafka's own clients, with unique names, so tests
//! run in parallel and reruns do not interfere. Consumer group joins on tansu take a few
//! seconds, so every wait is a generous deadline, never a fixed sleep.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sluice::connectors::kafka::{channel::KafkaChannel, config::KafkaChannelConfig};
use sluice_core::{
    channel::{Channel, Lease},
    event::Event,
};

use crate::common::{Agent, python, unique};

pub(crate) fn broker() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// One record: key, body, headers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Rec {
    pub key: Option<String>,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Rec {
    fn body(body: String) -> Rec {
        Rec {
            key: None,
            body,
            headers: Vec::new(),
        }
    }
}

pub(crate) async fn create_topic(name: &str, partitions: i32) {
    create_topic_on(&broker(), name, partitions).await
}

async fn create_topic_on(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .expect("create_topics");
    for r in results {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
}

/// Produces `recs` (partition chosen by index) and waits until all are acknowledged.
async fn produce(topic: &str, recs: &[Rec], partition: impl Fn(usize) -> i32) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        let mut rec = FutureRecord::<str, str>::to(topic)
            .payload(r.body.as_str())
            .partition(partition(i));
        if let Some(k) = &r.key {
            rec = rec.key(k.as_str());
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k.as_str(),
                    value: Some(v.as_str()),
                });
            }
            rec = rec.headers(h);
        }
        pending.push(p.send_result(rec).map_err(|(e, _)| e).expect("enqueue"));
    }
    for d in pending {
        d.await.expect("delivery report").expect("delivered");
    }
}

fn rec_of<M: Message>(m: &M) -> Rec {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Rec {
        key: m.key().map(text),
        body: m.payload().map(text).unwrap_or_default(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(text).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Reads `topic` (every partition, from the start, outside any group's offsets) until `done`
/// says so or `within` passed; returns what was read and whether `done` was reached.
pub(crate) async fn read_until(
    topic: &str,
    partitions: i32,
    within: Duration,
    done: impl FnMut(&Rec) -> bool,
) -> (Vec<Rec>, bool) {
    read_until_on(&broker(), topic, partitions, within, done).await
}

/// [`read_until`] from the broker at `bootstrap`.
async fn read_until_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    within: Duration,
    mut done: impl FnMut(&Rec) -> bool,
) -> (Vec<Rec>, bool) {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut finished = false;
    while !finished && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            Ok(Ok(m)) => {
                let r = rec_of(&m);
                finished = done(&r);
                out.push(r);
            }
            Ok(Err(e)) => {
                eprintln!("reading {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    }
    // Closing a consumer can hang on some brokers (rust-rdkafka #509); not on this thread.
    std::thread::spawn(move || drop(c));
    (out, finished)
}

/// Progress of a topic: the sum of its partitions' high watermarks (tansu counts record
/// batches there, Kafka counts records; either way, > 0 means output has begun).
struct Watermarks(BaseConsumer);

impl Watermarks {
    fn new() -> Self {
        Watermarks(
            ClientConfig::new()
                .set("bootstrap.servers", broker())
                .create()
                .expect("metadata client"),
        )
    }

    fn count(&self, topic: &str, partitions: i32) -> i64 {
        (0..partitions)
            .map(|p| {
                self.0
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .map_or(0, |(_, high)| high)
            })
            .sum()
    }
}

/// Complete lines of a file (a line still being written is not counted).
fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let done = text.rfind('\n').map_or("", |end| &text[..end]);
    done.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A multiset, to compare outputs with inputs regardless of order.
fn counts<T: Ord + Clone>(items: &[T]) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn source_to_sink_keeps_bodies_keys_and_headers() {
    const N: usize = 500;
    let (a, group) = (unique("kin"), unique("g"));
    let b = format!("{a}-out");
    create_topic(&a, 3).await;
    create_topic(&b, 3).await;
    let input: Vec<Rec> = (0..N)
        .map(|i| Rec {
            key: (i % 10 != 0).then(|| format!("k{}", i % 7)),
            body: format!("m-{i}"),
            headers: vec![
                ("n".into(), i.to_string()),
                ("trace".into(), format!("t{i}")),
            ],
        })
        .collect();
    produce(&a, &input, |i| (i % 3) as i32).await;

    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(
        dir.path(),
        "agent",
        &format!(
            "channels:
  mem: {{ type: memory, capacity: 10000 }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{a}]
    batch_size: 100
    channels: [mem]
sinks:
  out:
    type: kafka
    channel: mem
    bootstrap_servers: \"{broker}\"
    topic: \"%{{kafka.topic}}-out\"
    key: \"%{{kafka.key}}\"
    exclude_headers: [\"kafka.*\"]
",
            broker = broker()
        ),
    );

    let mut n = 0;
    let (out, done) = read_until(&b, 3, Duration::from_secs(90), |_| {
        n += 1;
        n >= N
    })
    .await;
    agent.assert_running();
    assert!(
        done,
        "{} of {N} records arrived:\n{}",
        out.len(),
        agent.log()
    );

    // The source's `timestamp` header travels as a Kafka header; the `kafka.*` ones do not.
    let mut seen = Vec::with_capacity(out.len());
    for mut r in out {
        let ts = r.headers.iter().position(|(k, _)| k == "timestamp");
        let ts = ts.map(|i| r.headers.remove(i).1);
        assert!(
            ts.is_some_and(|t| t.parse::<i64>().is_ok()),
            "no numeric timestamp header on {r:?}"
        );
        r.headers.sort();
        seen.push(r);
    }
    let (want, got) = (counts(&input), counts(&seen));
    let missing: Vec<_> = want
        .keys()
        .filter(|r| !got.contains_key(*r))
        .take(5)
        .collect();
    let unexpected: Vec<_> = got
        .keys()
        .filter(|r| !want.contains_key(*r))
        .take(5)
        .collect();
    assert!(
        want == got,
        "output differs from input; missing e.g. {missing:?}, unexpected e.g. {unexpected:?}"
    );
}

/// Kafka (`a` on the test broker) → rocksdb in `dir` → Kafka (`b` on `out_broker`).
fn relay_pipeline(dir: &Path, group: &str, a: &str, b: &str, out_broker: &str) -> String {
    format!(
        "channels:
  disk: {{ type: rocksdb, path: \"{dir}/channel\" }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{a}]
    batch_size: 200
    channels: [disk]
sinks:
  out:
    type: kafka
    channel: disk
    bootstrap_servers: \"{out_broker}\"
    topic: {b}
    batch_size: 200
",
        dir = dir.display(),
        broker = broker()
    )
}

/// Writes self-checking records (`jepsen::body`) to `topic`, 200 every 50 ms, until stopped.
struct ChaosProducer {
    produced: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProducer {
    fn start(topic: &str) -> ChaosProducer {
        let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s, topic) = (produced.clone(), stop.clone(), topic.to_owned());
        let task = tokio::spawn(async move {
            let mut next = 0u64;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let recs: Vec<Rec> = (next..next + 200)
                    .map(|n| Rec::body(crate::common::jepsen::body(n)))
                    .collect();
                produce(&topic, &recs, |i| (i % 2) as i32).await;
                next += 200;
                p.store(next, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ChaosProducer {
            produced,
            stop,
            task,
        }
    }

    /// Stops it; every record produced (all acknowledged by the broker).
    async fn stop(self) -> std::collections::BTreeSet<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap();
        (0..self.produced.load(std::sync::atomic::Ordering::SeqCst)).collect()
    }
}

/// Kafka → rocksdb → Kafka through 20 SIGKILLs (`SLUICE_CHAOS_KILLS`), in Jepsen's terms: a
/// producer writes self-checking records all along; after each restart the agent is killed
/// 300–1200 ms after its output moves again. Records read from the input count as
/// acknowledged once produced: Kafka keeps them, and the source must not commit an offset past
/// one it has not stored.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_rocksdb_to_kafka_through_sigkills() {
    use crate::common::jepsen::{Report, parse};
    let kills: usize = std::env::var("SLUICE_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (a, b, group) = (unique("chaos-in"), unique("chaos-out"), unique("g"));
    create_topic(&a, 2).await;
    create_topic(&b, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = relay_pipeline(dir.path(), &group, &a, &b, &broker());
    let producer = ChaosProducer::start(&a);
    let marks = Watermarks::new();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut logs = String::new();
    for run in 0..kills {
        let mut agent = Agent::start(dir.path(), &format!("run{run}"), &pipeline);
        let before = marks.count(&b, 2);
        let deadline = Instant::now() + Duration::from_secs(90);
        while marks.count(&b, 2) == before {
            agent.assert_running();
            assert!(Instant::now() < deadline, "no progress:\n{}", agent.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(300 + (rng >> 33) % 900)).await;
        agent.kill();
        logs = agent.log();
    }
    let sent = producer.stop().await;
    let agent = Agent::start(dir.path(), "last", &pipeline);
    let mut distinct = std::collections::BTreeSet::new();
    let (out, _) = read_until(&b, 2, Duration::from_secs(180), |r| {
        if let Some(seq) = parse(&r.body) {
            distinct.insert(seq);
        }
        distinct.len() >= sent.len()
    })
    .await;
    let log = agent.stop().await;
    let bodies: Vec<String> = out.into_iter().map(|r| r.body).collect();
    Report::check(kills, &sent, &sent, &bodies)
        .assert_safe("kafka → rocksdb → kafka", &(logs + &log));
}

/// A broker of the test's own (tansu, `SLUICE_TANSU`, which `scripts/test` exports) behind a
/// TCP proxy and advertised at the proxy's port, so that every connection a client makes to
/// it goes through the proxy: the test can cut them all, or refuse them for a while.
struct ProxiedBroker {
    child: std::process::Child,
    proxy: crate::common::faults::Proxy,
    bootstrap: String,
}

impl ProxiedBroker {
    fn start() -> ProxiedBroker {
        let tansu = std::env::var("SLUICE_TANSU")
            .expect("SLUICE_TANSU: the tansu binary (scripts/test sets it)");
        let port = crate::common::free_port();
        let proxy = crate::common::faults::Proxy::start(port);
        let child = std::process::Command::new(tansu)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{}", proxy.port))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        ProxiedBroker {
            child,
            bootstrap: format!("127.0.0.1:{}", proxy.port),
            proxy,
        }
    }
}

impl Drop for ProxiedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kafka → rocksdb → Kafka whose output broker goes away: its connections are cut every
/// 300–900 ms for 8 s, then refused for 30 s (`SLUICE_CHAOS_OUTAGE_SECS`), then cut again for
/// 8 s, while a producer writes self-checking records to the input all along. Checked in
/// Jepsen's terms; the agent's memory is sampled all along (the backlog waits on disk).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_rocksdb_to_kafka_through_a_broker_outage_and_cuts() {
    use crate::common::{
        faults::rss,
        jepsen::{Report, parse},
    };
    let outage = Duration::from_secs(
        std::env::var("SLUICE_CHAOS_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    );
    let out_broker = ProxiedBroker::start();
    let (a, b, group) = (unique("outage-in"), unique("outage-out"), unique("g"));
    create_topic(&a, 2).await;
    create_topic_on(&out_broker.bootstrap, &b, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = relay_pipeline(dir.path(), &group, &a, &b, &out_broker.bootstrap);
    let producer = ChaosProducer::start(&a);
    let mut agent = Agent::start(dir.path(), "run", &pipeline);
    let marks = Watermarks(
        ClientConfig::new()
            .set("bootstrap.servers", &out_broker.bootstrap)
            .create()
            .expect("metadata client"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while marks.count(&b, 2) == 0 {
        agent.assert_running();
        assert!(Instant::now() < deadline, "no output:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = agent.pid().unwrap();
    let mut peak = 0u64;
    let mut seed = Instant::now().elapsed().subsec_nanos() as u64 | 1;
    for (length, down) in [
        (Duration::from_secs(8), false),
        (outage, true),
        (Duration::from_secs(8), false),
    ] {
        out_broker.proxy.set_down(down);
        let start = Instant::now();
        while start.elapsed() < length {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(300 + (seed >> 33) % 600)).await;
            if !down {
                out_broker.proxy.cut();
            }
            peak = peak.max(rss(pid).unwrap_or(0));
            agent.assert_running();
        }
    }
    out_broker.proxy.set_down(false);
    let sent = producer.stop().await;
    let mut distinct = std::collections::BTreeSet::new();
    let (out, _) = read_until_on(
        &out_broker.bootstrap,
        &b,
        2,
        Duration::from_secs(180),
        |r| {
            if let Some(seq) = parse(&r.body) {
                distinct.insert(seq);
            }
            distinct.len() >= sent.len()
        },
    )
    .await;
    let log = agent.stop().await;
    let bodies: Vec<String> = out.into_iter().map(|r| r.body).collect();
    let cuts = out_broker
        .proxy
        .cuts
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "chaos kafka → rocksdb → kafka (broker outage): proxy cuts {cuts}, broker down {outage:?}, peak RSS {:.1} MiB, producer replaced {} times",
        peak as f64 / (1 << 20) as f64,
        log.matches("replacing the producer").count()
    );
    Report::check(0, &sent, &sent, &bodies)
        .assert_safe("kafka → rocksdb → kafka (broker outage)", &log);
    assert!(cuts > 0, "the proxy cut nothing");
    assert!(peak < 256 << 20, "peak RSS {peak} during the outage");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_share_a_group_and_the_survivor_takes_over() {
    let (topic, group) = (unique("shared"), unique("g"));
    create_topic(&topic, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(format!("{name}.out"));
    let pipeline = |name: &str| {
        format!(
            "channels:
  mem: {{ type: memory }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{topic}]
    batch_size: 50
    channels: [mem]
sinks:
  out:
    type: file
    channel: mem
    path: \"{path}\"
    format: lines
",
            broker = broker(),
            path = out(name).display()
        )
    };
    let mut one = Agent::start(dir.path(), "one", &pipeline("one"));
    let mut two = Agent::start(dir.path(), "two", &pipeline("two"));
    let union = || -> HashSet<String> {
        let mut all: HashSet<String> = complete_lines(&out("one")).into_iter().collect();
        all.extend(complete_lines(&out("two")));
        all
    };

    // Produce in rounds until both agents have delivered something: the group has split the
    // partitions between them.
    let mut produced = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let round: Vec<Rec> = (produced..produced + 40)
            .map(|i| Rec::body(format!("s-{i}")))
            .collect();
        produce(&topic, &round, |i| (i % 4) as i32).await;
        produced += round.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !complete_lines(&out("one")).is_empty() && !complete_lines(&out("two")).is_empty() {
            break;
        }
        one.assert_running();
        two.assert_running();
        assert!(
            Instant::now() < deadline,
            "the agents did not both receive records:\n--- one:\n{}\n--- two:\n{}",
            one.log(),
            two.log()
        );
    }
    let first_part: HashSet<String> = (0..produced).map(|i| format!("s-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !union().is_superset(&first_part) {
        one.assert_running();
        two.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} of {produced} records delivered by the pair",
            union().intersection(&first_part).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (n_one, n_two) = (
        complete_lines(&out("one")).len(),
        complete_lines(&out("two")).len(),
    );
    eprintln!("split between the agents: {n_one} + {n_two} lines for {produced} records");

    // One agent dies; once the group notices, the survivor consumes every partition.
    two.kill();
    const M: usize = 200;
    let more: Vec<Rec> = (produced..produced + M)
        .map(|i| Rec::body(format!("s-{i}")))
        .collect();
    produce(&topic, &more, |i| (i % 4) as i32).await;
    let second_part: HashSet<String> = more.iter().map(|r| r.body.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let survivor: HashSet<String> = complete_lines(&out("one")).into_iter().collect();
        if survivor.is_superset(&second_part) {
            break;
        }
        one.assert_running();
        assert!(
            Instant::now() < deadline,
            "the survivor delivered {} of {M} records after the other agent died:\n{}",
            survivor.intersection(&second_part).count(),
            one.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let everything: HashSet<String> = first_part.union(&second_part).cloned().collect();
    let all = union();
    assert!(
        all.is_superset(&everything),
        "lost: {:?}",
        everything.difference(&all).take(5).collect::<Vec<_>>()
    );
}

fn channel_config(topic: &str, group: &str) -> KafkaChannelConfig {
    KafkaChannelConfig {
        bootstrap_servers: broker(),
        topic: topic.to_owned(),
        group_id: Some(group.to_owned()),
        key: None,
        security: Default::default(),
        consumer: Default::default(),
        producer: Default::default(),
    }
}

/// Takes until a lease comes back (the first take joins the group, which takes a while).
async fn take_some(ch: &KafkaChannel, within: Duration) -> Box<dyn Lease> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(lease) = ch.take(10, Duration::from_secs(1)).await.expect("take") {
            return lease;
        }
        assert!(
            Instant::now() < deadline,
            "nothing to take within {within:?}"
        );
    }
}

/// A sink that lingers to fill its batches (S3) takes with `take_batch`; the Kafka channel
/// cannot see its backlog (it is in the broker), so it must read to fill the batch rather
/// than wait for events it will never see — before, such a sink never took anything.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_channel_fills_batches_for_lingering_sinks() {
    let (topic, group) = (unique("chan-batch"), unique("g"));
    create_topic(&topic, 2).await;
    let ch = std::sync::Arc::new(
        KafkaChannel::open("ch", &channel_config(&topic, &group)).expect("open"),
    );
    let events: Vec<Event> = (0..300).map(|i| Event::new(format!("e{i}"))).collect();
    ch.put(events[..200].to_vec()).await.expect("put");
    assert_eq!(
        ch.stats().events,
        0,
        "the backlog is in Kafka, not visible here"
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 200 {
        assert!(Instant::now() < deadline, "took {} of 200", got.len());
        // Up to 30 s for a first record (the group joins), then 500 ms to reach 150.
        let lease = ch
            .take_batch(
                1000,
                150,
                Duration::from_millis(500),
                Duration::from_secs(30),
            )
            .await
            .expect("take_batch");
        if let Some(lease) = lease {
            got.extend(lease.events().iter().map(|e| e.body.clone()));
            lease.commit().await.expect("commit");
        }
    }
    // With the group joined, more events arriving during the linger join the same batch.
    let (ch2, rest) = (std::sync::Arc::clone(&ch), events[200..].to_vec());
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ch2.put(rest).await.expect("put")
    });
    let lease = ch
        .take_batch(1000, 100, Duration::from_secs(10), Duration::from_secs(30))
        .await
        .expect("take_batch")
        .expect("the late events");
    late.await.unwrap();
    assert!(
        lease.events().len() >= 100,
        "filled to min: {}",
        lease.events().len()
    );
    got.extend(lease.events().iter().map(|e| e.body.clone()));
    lease.commit().await.expect("commit");
    let mut want: Vec<_> = events.iter().map(|e| e.body.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every event once");
}

/// A sink that stops (drain, reload) while its take is still filling a batch drops the take:
/// the records it had read must come back to the next take, not vanish behind later commits.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_channel_cancelled_fill_loses_nothing() {
    let (topic, group) = (unique("chan-cancel"), unique("g"));
    create_topic(&topic, 1).await;
    let ch = KafkaChannel::open("ch", &channel_config(&topic, &group)).expect("open");
    let events: Vec<Event> = (0..50).map(|i| Event::new(format!("c{i}"))).collect();
    ch.put(events.clone()).await.expect("put");
    // Waits for 1000 that never come: cancelled while holding the 50 it read.
    let cancelled = tokio::time::timeout(
        Duration::from_secs(15),
        ch.take_batch(1000, 1000, Duration::from_secs(60), Duration::from_secs(60)),
    )
    .await;
    assert!(cancelled.is_err(), "the take was still filling");
    let mut got = Vec::new();
    while got.len() < 50 {
        let lease = take_some(&ch, Duration::from_secs(10)).await;
        got.extend(lease.events().iter().map(|e| e.body.clone()));
        lease.commit().await.expect("commit");
    }
    let want: Vec<_> = events.iter().map(|e| e.body.clone()).collect();
    assert_eq!(got, want, "every record, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_channel_rolls_back_in_order_and_survives_reopening() {
    let (topic, group) = (unique("chan"), unique("g"));
    create_topic(&topic, 1).await;
    let cfg = channel_config(&topic, &group);
    let events: Vec<Event> = (0..10)
        .map(|i| Event::new(format!("e{i}")).with_header("n", i.to_string()))
        .collect();

    let ch = KafkaChannel::open("ch", &cfg).expect("open");
    ch.put(events.clone()).await.expect("put");
    let first = take_some(&ch, Duration::from_secs(60)).await;
    let taken = first.events().to_vec();
    assert_eq!(taken[..], events[..taken.len()], "in order, headers kept");
    first.rollback().await.unwrap();
    let again = ch
        .take(10, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the rolled-back events are taken again");
    assert_eq!(again.events(), &taken[..], "same events, same order");
    again.commit().await.expect("commit");
    let mut all = taken;
    while all.len() < events.len() {
        let lease = take_some(&ch, Duration::from_secs(30)).await;
        all.extend(lease.events().iter().cloned());
        lease.commit().await.expect("commit");
    }
    assert_eq!(all, events);
    drop(ch);

    // Reopened (same group) to put more: the state is in Kafka, not in the process.
    let more: Vec<Event> = (0..5).map(|i| Event::new(format!("f{i}"))).collect();
    let ch = KafkaChannel::open("ch", &cfg).expect("reopen");
    ch.put(more.clone()).await.expect("put");
    drop(ch);

    // Reopened again: exactly the new events; the committed ones are not redelivered.
    let ch = KafkaChannel::open("ch", &cfg).expect("reopen");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < more.len() {
        assert!(Instant::now() < deadline, "took only {got:?}");
        if let Some(lease) = ch.take(10, Duration::from_secs(1)).await.expect("take") {
            got.extend(lease.events().iter().cloned());
            lease.commit().await.expect("commit");
        }
    }
    assert_eq!(got, more);
    assert!(
        ch.take(10, Duration::from_secs(2))
            .await
            .expect("take")
            .is_none(),
        "nothing else is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_sink_topic_holds_events_until_it_exists() {
    const N: usize = 100;
    let (a, b, group) = (unique("wait-in"), unique("wait-out"), unique("g"));
    create_topic(&a, 2).await;
    let input: Vec<Rec> = (0..N).map(|i| Rec::body(format!("w-{i}"))).collect();
    produce(&a, &input, |i| (i % 2) as i32).await;

    // The broker would create the topic on first use; the sink's producer is told not to
    // ask, so deliveries time out (retriable) until the test creates it.
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(
        dir.path(),
        "agent",
        &format!(
            "channels:
  mem: {{ type: memory }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{a}]
    channels: [mem]
sinks:
  out:
    type: kafka
    channel: mem
    bootstrap_servers: \"{broker}\"
    topic: {b}
    retry: {{ max_attempts: 1000, initial_backoff: 100ms, max_backoff: 1s }}
    producer:
      allow.auto.create.topics: false
      message.timeout.ms: 2000
",
            broker = broker()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while !agent.log().contains("delivery failed; will retry") {
        agent.assert_running();
        assert!(
            Instant::now() < deadline,
            "the sink never failed a delivery:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    create_topic(&b, 2).await;
    let want: HashSet<String> = input.iter().map(|r| r.body.clone()).collect();
    let mut distinct = HashSet::new();
    let (out, done) = read_until(&b, 2, Duration::from_secs(90), |r| {
        distinct.insert(r.body.clone());
        distinct.len() >= N
    })
    .await;
    agent.assert_running();
    let got: HashSet<String> = out.iter().map(|r| r.body.clone()).collect();
    assert!(
        done && got == want,
        "{} of {N} records delivered after the topic appeared:\n{}",
        got.intersection(&want).count(),
        agent.log()
    );
    eprintln!(
        "outage test: {} records out for {N} in ({} duplicates)",
        out.len(),
        out.len() - got.len()
    );
}

/// Every object's lines under `prefix`, read with the S3 SDK (the key and size of each object
/// read before are remembered, so an unchanged object is not read again).
async fn s3_lines(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    seen: &mut BTreeMap<String, (i64, Vec<String>)>,
) -> Vec<String> {
    let listed = crate::common::aws::list_objects(c, bucket, prefix).await;
    seen.retain(|k, _| listed.contains_key(k));
    for (key, size) in listed {
        if seen.get(&key).is_some_and(|(s, _)| *s == size) {
            continue;
        }
        let o = c
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {}", sluice::connectors::aws::describe(&e)));
        let bytes = o.body.collect().await.unwrap().into_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        seen.insert(key, (size, text.lines().map(str::to_owned).collect()));
    }
    seen.values().flat_map(|(_, l)| l.iter().cloned()).collect()
}

/// Kafka → (event ids from topic/partition/offset, `dedup`) → rocksdb → s3, with
/// `delivery: exactly_once`: the agent is SIGKILLed five times at random moments and
/// restarted; the objects, read back with the S3 SDK, hold every record exactly once. A record
/// read again after a kill (committed to the channel, offset not yet committed) is dropped by
/// the dedup window stored with the channel; a batch uploaded again (uploaded, not yet
/// committed) overwrites its own objects, named by channel position.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_s3_is_exactly_once_across_kills() {
    const N: usize = 20_000;
    let (topic, group) = (unique("eo-in"), unique("g"));
    create_topic(&topic, 2).await;
    let input: Vec<Rec> = (0..N).map(|i| Rec::body(format!("r-{i:05}"))).collect();
    produce(&topic, &input, |i| (i % 2) as i32).await;
    let s3 = crate::common::aws::s3(Duration::from_secs(30)).await;
    let bucket = crate::common::aws::create_bucket(&s3, "sluice-eo").await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "channels:
  disk: {{ type: rocksdb, path: \"{dir}/channel\" }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{topic}]
    batch_size: 50
    channels: [disk]
    event_id: {{ from: [kafka.topic, kafka.partition, kafka.offset] }}
    interceptors: [ {{ type: dedup }} ]
sinks:
  out:
    type: s3
    channel: disk
    delivery: exactly_once
    bucket: {bucket}
    key: eo/
    batch_size: 100
    roll_count: 20
    region: us-east-1
    endpoint: \"{endpoint}\"
    access_key_id: test
    secret_access_key: test
    force_path_style: true
",
        dir = dir.path().display(),
        broker = broker(),
        endpoint = crate::common::aws::endpoint(),
    );
    let file = dir.path().join("check.yaml");
    std::fs::write(&file, &pipeline).unwrap();
    let o = crate::common::sluice()
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && said.contains("in → disk → out: exactly-once"),
        "{said}{}",
        crate::common::stderr(&o)
    );

    let mut seen = BTreeMap::new();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut logs = String::new();
    for run in 0..5 {
        let mut agent = Agent::start(dir.path(), &format!("run{run}"), &pipeline);
        // Some progress first (unless everything is there), then a random moment within
        // the next second.
        let before = s3_lines(&s3, &bucket, "eo/", &mut seen).await.len();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let now = s3_lines(&s3, &bucket, "eo/", &mut seen).await.len();
            if now != before || now >= N {
                break;
            }
            agent.assert_running();
            assert!(Instant::now() < deadline, "no progress:\n{}", agent.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis((rng >> 33) % 1000)).await;
        agent.kill();
        let lines = s3_lines(&s3, &bucket, "eo/", &mut seen).await.len();
        eprintln!("kill {}: {lines} lines in S3", run + 1);
        logs += &agent.log();
    }
    let agent = Agent::start(dir.path(), "last", &pipeline);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let distinct: HashSet<String> = s3_lines(&s3, &bucket, "eo/", &mut seen)
            .await
            .into_iter()
            .collect();
        if distinct.len() >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} records in S3:\n{}",
            distinct.len(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Stopped once it runs (its signal handlers are installed by then).
    while !agent.log().contains("pipeline running") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
    let all = s3_lines(&s3, &bucket, "eo/", &mut BTreeMap::new()).await;
    let by_record = counts(&all);
    let want: HashSet<String> = input.iter().map(|r| r.body.clone()).collect();
    let unexpected: Vec<_> = by_record
        .keys()
        .filter(|r| !want.contains(*r))
        .take(5)
        .collect();
    let twice: Vec<_> = by_record.iter().filter(|(_, n)| **n > 1).take(5).collect();
    eprintln!(
        "kafka → s3 exactly-once: {N} records, 5 kills, {} objects, {} lines, {} distinct",
        seen.len(),
        all.len(),
        by_record.len()
    );
    assert!(
        unexpected.is_empty(),
        "records nobody produced: {unexpected:?}"
    );
    assert!(
        twice.is_empty(),
        "records in S3 more than once: {twice:?}\n{logs}"
    );
    assert_eq!(by_record.len(), N, "every record");
}

/// One record as the independent reader saw it.
#[derive(serde::Deserialize, Debug)]
struct Committed {
    partition: i32,
    offset: i64,
    key: Option<String>,
    body: String,
}

/// Every record of `topic` a `read_committed` confluent-kafka consumer sees (until `want`
/// distinct bodies or `seconds`).
fn read_committed(topic: &str, partitions: i32, want: usize, seconds: u64) -> Vec<Committed> {
    let o = std::process::Command::new(python())
        .arg(crate::common::repo_root().join("tests/kafka/read_committed.py"))
        .args([
            broker(),
            topic.to_owned(),
            partitions.to_string(),
            want.to_string(),
            seconds.to_string(),
        ])
        .output()
        .expect("python with confluent-kafka (scripts/test installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether the broker hides aborted transactions from `read_committed` consumers, asked with
/// an independent client (`tests/kafka/isolation_probe.py`).
fn broker_hides_aborted_records() -> bool {
    let o = std::process::Command::new(python())
        .arg(crate::common::repo_root().join("tests/kafka/isolation_probe.py"))
        .arg(broker())
        .output()
        .expect("python with confluent-kafka");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["committed_visible"], true, "{v}");
    !v["aborted_visible"].as_bool().unwrap()
}

/// Kafka → memory → Kafka with `delivery: exactly_once` (small batches: one transaction per
/// 20 records, so the copy lasts long enough to be killed), SIGKILLed 5 times at random moments:
/// a `read_committed` consumer of another client library sees every input record, in each
/// input partition's order, and none that was never produced; the consumer group's offsets
/// are committed only by the sink's transactions and end at the input's end. On a broker that
/// hides aborted transactions (checked first with an independent client) there is no
/// duplicate; tansu 0.6 shows aborted records to `read_committed` readers, so there the
/// duplicates — each one a record of a transaction a kill aborted — are reported.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_kafka_exactly_once_across_kills() {
    const N: usize = 20_000;
    let isolating = broker_hides_aborted_records();
    let (a, b, group) = (unique("txn-in"), unique("txn-out"), unique("g"));
    create_topic(&a, 2).await;
    create_topic(&b, 2).await;
    let input: Vec<Rec> = (0..N).map(|i| Rec::body(format!("t-{i:05}"))).collect();
    produce(&a, &input, |i| (i % 2) as i32).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 2000 }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{a}]
    batch_size: 20
    channels: [mem]
sinks:
  out:
    type: kafka
    channel: mem
    delivery: exactly_once
    bootstrap_servers: \"{broker}\"
    topic: {b}
    key: \"%{{kafka.partition}}\"
    exclude_headers: [\"kafka.*\"]
    batch_size: 20
",
        broker = broker()
    );
    let file = dir.path().join("check.yaml");
    std::fs::write(&file, &pipeline).unwrap();
    let o = crate::common::sluice()
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && said.contains("in → mem → out: exactly-once"),
        "{said}{}",
        crate::common::stderr(&o)
    );

    let marks = Watermarks::new();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for run in 0..5 {
        let mut agent = Agent::start(dir.path(), &format!("run{run}"), &pipeline);
        let before = marks.count(&b, 2);
        let deadline = Instant::now() + Duration::from_secs(90);
        while marks.count(&b, 2) == before {
            agent.assert_running();
            assert!(Instant::now() < deadline, "no progress:\n{}", agent.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis((rng >> 33) % 1500)).await;
        agent.kill();
        eprintln!(
            "kill {}: output high watermarks {}",
            run + 1,
            marks.count(&b, 2)
        );
    }
    let agent = Agent::start(dir.path(), "last", &pipeline);
    let out = tokio::task::spawn_blocking({
        let b = b.clone();
        move || read_committed(&b, 2, N, 240)
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log().contains("pipeline running") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = agent.log();
    agent.stop().await;

    let want: HashSet<String> = input.iter().map(|r| r.body.clone()).collect();
    let by_body = counts(&out.iter().map(|r| r.body.clone()).collect::<Vec<_>>());
    let unexpected: Vec<_> = by_body
        .keys()
        .filter(|b| !want.contains(*b))
        .take(5)
        .collect();
    assert!(
        unexpected.is_empty(),
        "records nobody produced: {unexpected:?}"
    );
    let missing: Vec<_> = want
        .iter()
        .filter(|b| !by_body.contains_key(*b))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {N} records arrived; missing e.g. {missing:?}\n{log}",
        by_body.len()
    );
    // Per input partition (the record's key), first appearances keep the input order.
    for (p, key) in [(0, "0"), (1, "1")] {
        let firsts: Vec<usize> = {
            let mut seen = HashSet::new();
            out.iter()
                .filter(|r| r.key.as_deref() == Some(key))
                .filter(|r| seen.insert(r.body.clone()))
                .map(|r| r.body[2..].parse().unwrap())
                .collect()
        };
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]) && firsts.iter().all(|i| i % 2 == p),
            "input partition {p} out of order"
        );
    }
    let partitions: HashSet<i32> = out.iter().map(|r| r.partition).collect();
    assert!(!partitions.is_empty() && out.iter().all(|r| r.offset >= 0));
    // Only the sink's transactions commit the group's offsets: they end at the input's end.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&a, 0);
    tpl.add_partition(&a, 1);
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let ends: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(
        ends,
        [Offset::Offset(N as i64 / 2), Offset::Offset(N as i64 / 2)]
    );
    std::thread::spawn(move || drop(c));
    let duplicates = out.len() - by_body.len();
    eprintln!(
        "kafka → kafka exactly-once: {N} records, 5 kills, {} read committed, {} distinct, {duplicates} duplicates (broker hides aborted transactions: {isolating})",
        out.len(),
        by_body.len()
    );
    if isolating {
        assert_eq!(duplicates, 0, "a read_committed reader saw records twice");
    }
}

/// `delivery: exactly_once` into a `kafka` sink is refused where the path cannot hold it: a
/// durable channel in between (the source would commit its own offsets), or a source that is
/// not Kafka.
#[test]
fn exactly_once_into_kafka_is_refused_where_it_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, channel: &str, source: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &f,
            format!(
                "channels:
  ch: {channel}
sources:
  in: {source}
sinks:
  out: {{ type: kafka, channel: ch, delivery: exactly_once, bootstrap_servers: 127.0.0.1:9, topic: t }}
"
            ),
        )
        .unwrap();
        let o = crate::common::sluice()
            .arg("validate")
            .arg(&f)
            .output()
            .unwrap();
        (o.status.code(), crate::common::stderr(&o))
    };
    let kafka =
        "{ type: kafka, bootstrap_servers: 127.0.0.1:9, group_id: g, topics: [t], channels: [ch] }";
    let (code, err) = check(
        "durable",
        &format!("{{ type: rocksdb, path: '{}/ch' }}", dir.path().display()),
        kafka,
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("a durable channel between them") && err.contains("sinks.out"),
        "{err}"
    );
    let (code, err) = check(
        "http",
        "{ type: memory }",
        "{ type: http, listen: '127.0.0.1:9', channels: [ch] }",
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("sinks.out"), "{err}");
    let (code, err) = check("ok", "{ type: memory }", kafka);
    assert_eq!(code, Some(0), "{err}");
}
