//! Kafka throughput: consume → produce through Sluice against a raw rdkafka loop.
//!
//! Pre-produces `SLUICE_BENCH_KAFKA_MESSAGES` (default 200,000) 256-byte records into an input
//! topic of `SLUICE_BENCH_KAFKA_PARTITIONS` (default 4) partitions, then copies them to a fresh
//! output topic three ways:
//! - raw: a `StreamConsumer` → `FutureProducer` loop in this process, delivery reports awaited
//!   every 1,000 records (Sluice's batch size), offsets committed asynchronously after each;
//! - sluice, `headers: false`: the binary running kafka source → memory channel → kafka sink,
//!   the same work as the raw loop;
//! - sluice, defaults: the same, with the source's headers copied to every record.
//! - sluice, exactly_once: the `headers: false` case with `delivery: exactly_once` on the
//!   sink: one Kafka transaction per batch, holding its records and the source's offsets
//!   (the watcher reads `read_committed`, so only committed records count).
//! - sluice, kafka → redis: the input topic appended to a Redis list (`rpush`), timed by the
//!   list's length (Redis at `SLUICE_TEST_REDIS`);
//! - sluice, rabbitmq → kafka: `m` messages pre-published to a durable queue, copied to a
//!   fresh topic (RabbitMQ at `SLUICE_TEST_AMQP`). The ratio column compares every case with
//!   the raw Kafka loop, so for these two it only says how they stand beside it.
//!
//! Producers use `acks=all` and idempotence (Sluice's defaults) in every case. Each run is
//! timed by reading the output topic from the first record out to the last, so consumer
//! group joins and start-up do not count. Needs a broker at
//! `SLUICE_TEST_KAFKA` (default 127.0.0.1:9092).

use std::{
    process::Child,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer},
    producer::FutureRecord,
};

/// Helpers shared by the benches.
#[path = "common/mod.rs"]
mod common;
/// The broker helpers shared with `side_by_side.rs`.
#[path = "common/kafka.rs"]
mod kafka_support;
/// The tests' helpers (unique names), shared with the benches.
#[path = "../tests/common/mod.rs"]
mod test_support;
use common::{Measure, agent_log, env_or, spawn_agent};
use kafka_support::{broker, create_topic, producer};
use test_support::unique;

const BODY: usize = 256;
/// A run that has not finished after this long is reported as failed.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Watches `topic` on a thread of its own until it holds `m` records, counted by reading
/// them (tansu's high watermarks count record batches, not records); the rate from the first
/// record in it to the last.
fn watch(topic: String, partitions: i32, m: usize) -> std::thread::JoinHandle<Option<Measure>> {
    std::thread::spawn(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker())
            .set("group.id", unique("watch"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("watch consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("partition");
        }
        c.assign(&tpl).expect("assign");
        let limit = Instant::now() + RUN_LIMIT;
        let mut first: Option<Instant> = None;
        let mut n = 0usize;
        loop {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
                n += 1;
                let now = Instant::now();
                let t0 = *first.get_or_insert(now);
                if n >= m {
                    // Keep the first record out of the rate, as it marks the start.
                    return Some(Measure::between((n - 1) as u64, t0, now));
                }
            }
            if Instant::now() > limit {
                eprintln!("gave up: {n} of {m} records in {topic} after {RUN_LIMIT:?}");
                return None;
            }
        }
    })
}

/// The raw loop: consume, produce, await the reports every 1,000 records, commit.
async fn raw_loop(input: &str, output: &str, m: usize) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("raw"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let producer = producer();
    let mut pending = Vec::with_capacity(1000);
    let mut moved = 0;
    while moved < m {
        let msg = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("raw loop: {e}");
                continue;
            }
        };
        let mut rec =
            FutureRecord::<[u8], [u8]>::to(output).payload(msg.payload().unwrap_or_default());
        if let Some(k) = msg.key() {
            rec = rec.key(k);
        }
        pending.push(producer.send_result(rec).map_err(|(e, _)| e).expect("send"));
        moved += 1;
        if pending.len() == 1000 || moved == m {
            for d in pending.drain(..) {
                d.await.expect("report").expect("delivered");
            }
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                eprintln!("raw loop commit: {e}");
            }
        }
    }
    // Closing a consumer can hang on some brokers (rust-rdkafka #509).
    std::thread::spawn(move || drop(consumer));
}

/// The `sluice` binary copying `input` to `output`.
fn start_agent(
    dir: &std::path::Path,
    label: &str,
    input: &str,
    output: &str,
    headers: bool,
    exactly_once: bool,
) -> Child {
    let delivery = if exactly_once {
        "\n    delivery: exactly_once"
    } else {
        ""
    };
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 20000 }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{input}]
    batch_size: 1000
    channels: [mem]
sinks:
  out:
    type: kafka
    channel: mem
    bootstrap_servers: \"{broker}\"
    topic: {output}
    batch_size: 1000
    headers: {headers}{delivery}
",
        broker = broker(),
        group = unique("bench"),
    );
    spawn_agent(dir, label, &pipeline)
}

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn amqp_uri() -> String {
    std::env::var("SLUICE_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Kafka → Redis: the input topic appended to a Redis list (`rpush`), timed by the list's
/// length from its first element to the last.
fn kafka_to_redis(dir: &std::path::Path, input: &str, m: usize) -> Option<Measure> {
    let key = unique("bench-list");
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 20000 }}
sources:
  in:
    type: kafka
    bootstrap_servers: \"{broker}\"
    group_id: {group}
    topics: [{input}]
    batch_size: 1000
    channels: [mem]
sinks:
  out:
    type: redis
    channel: mem
    url: \"{url}\"
    command: rpush
    key: {key}
    batch_size: 1000
",
        broker = broker(),
        group = unique("bench"),
        url = redis_url(),
    );
    let mut agent = spawn_agent(dir, &key, &pipeline);
    let mut con = redis::Client::open(redis_url())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let limit = Instant::now() + RUN_LIMIT;
    let mut first: Option<(Instant, i64)> = None;
    let measured = loop {
        let n: i64 = redis::cmd("LLEN").arg(&key).query(&mut con).unwrap_or(0);
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some((now, n));
        }
        if n >= m as i64 {
            let (t0, n0) = first.unwrap_or((now, n));
            break Some(Measure::between((n - n0) as u64, t0, now));
        }
        if now > limit {
            eprintln!("gave up: {n} of {m} entries in {key} after {RUN_LIMIT:?}");
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = redis::cmd("DEL").arg(&key).query::<()>(&mut con);
    measured
}

/// Publishes `m` persistent messages of [`BODY`] bytes to a fresh durable queue, with
/// publisher confirms; returns the queue's name.
async fn prepublish(m: usize) -> String {
    use lapin::{
        BasicProperties, Connection, ConnectionProperties,
        options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
        types::{FieldTable, ShortString},
    };
    let queue = unique("bench-q");
    let conn = Connection::connect(&amqp_uri(), ConnectionProperties::default())
        .await
        .expect("rabbitmq");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let mut body = vec![b'x'; BODY];
    let mut confirms = Vec::with_capacity(10_000);
    for i in 0..m {
        let n = format!("{i:>12}");
        body[..n.len()].copy_from_slice(n.as_bytes());
        let c = ch
            .basic_publish(
                ShortString::from(""),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        confirms.push(c);
        if confirms.len() == 10_000 || i + 1 == m {
            for c in confirms.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
            }
        }
    }
    let _ = conn.close(0, "done".into()).await;
    queue
}

/// RabbitMQ → Kafka: a pre-filled queue into a fresh topic, timed by reading the topic.
async fn rabbitmq_to_kafka(dir: &std::path::Path, m: usize, partitions: i32) -> Option<Measure> {
    let queue = prepublish(m).await;
    let out = unique("bench-amqp");
    create_topic(&out, partitions).await;
    let watcher = watch(out.clone(), partitions, m);
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 20000 }}
sources:
  in:
    type: rabbitmq
    uri: \"{uri}\"
    queue: {queue}
    prefetch: 2000
    batch_size: 1000
    channels: [mem]
sinks:
  out:
    type: kafka
    channel: mem
    bootstrap_servers: \"{broker}\"
    topic: {out}
    batch_size: 1000
",
        uri = amqp_uri(),
        broker = broker(),
    );
    let mut agent = spawn_agent(dir, &out, &pipeline);
    let measured = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    measured
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a small smoke run checks that every
    // case still completes.
    let benching = std::env::args().any(|a| a == "--bench");
    let m: usize = env_or(
        "SLUICE_BENCH_KAFKA_MESSAGES",
        if benching { 200_000 } else { 2_000 },
    );
    let partitions: i32 = env_or("SLUICE_BENCH_KAFKA_PARTITIONS", 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let input = unique("bench-in");
        create_topic(&input, partitions).await;
        let t0 = Instant::now();
        kafka_support::preproduce(&input, m, partitions, BODY).await;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "kafka: {m} records of {BODY} bytes in {partitions} partitions at {} (pre-produced at {:.0}/s)",
            broker(),
            m as f64 / secs
        );

        let mut rows: Vec<(&str, Option<Measure>)> = Vec::new();

        let out = unique("bench-raw");
        create_topic(&out, partitions).await;
        let watcher = watch(out.clone(), partitions, m);
        raw_loop(&input, &out, m).await;
        rows.push(("raw rdkafka loop", watcher.join().unwrap()));

        for (label, headers, exactly_once) in [
            ("sluice, headers: false", false, false),
            ("sluice, defaults", true, false),
            ("sluice, exactly_once", false, true),
        ] {
            let out = unique("bench-sluice");
            create_topic(&out, partitions).await;
            let watcher = watch(out.clone(), partitions, m);
            let mut agent = start_agent(dir.path(), &out, &input, &out, headers, exactly_once);
            let measured = tokio::task::spawn_blocking(move || watcher.join().unwrap())
                .await
                .unwrap();
            let _ = agent.kill();
            let _ = agent.wait();
            if measured.is_none() {
                eprintln!("{label} log:\n{}", agent_log(dir.path(), &out));
            }
            rows.push((label, measured));
        }

        let to_redis = {
            let dir = dir.path().to_owned();
            let input = input.clone();
            tokio::task::spawn_blocking(move || kafka_to_redis(&dir, &input, m))
                .await
                .unwrap()
        };
        rows.push(("sluice, kafka → redis", to_redis));
        rows.push((
            "sluice, rabbitmq → kafka",
            rabbitmq_to_kafka(dir.path(), m, partitions).await,
        ));

        let at_least_once = rows[1].1.as_ref().map(Measure::per_second);
        let exactly_once = rows[3].1.as_ref().map(Measure::per_second);
        if let (Some(a), Some(e)) = (at_least_once, exactly_once) {
            println!("  exactly_once runs at {:.0}% of at-least-once (headers: false)", e / a * 100.0);
        }
        let raw = rows[0].1.as_ref().map(Measure::per_second);
        println!("  {:<24} {:>12} {:>9} {:>8}", "case", "records/s", "MiB/s", "vs raw");
        for (label, measure) in &rows {
            match measure {
                Some(x) => {
                    let rate = x.per_second();
                    let ratio = raw.map_or(String::from("-"), |r| format!("{:.0}%", rate / r * 100.0));
                    println!(
                        "  {label:<24} {rate:>12.0} {:>9.1} {ratio:>8}   ({} records in {:.2?})",
                        rate * BODY as f64 / (1 << 20) as f64,
                        x.count,
                        x.elapsed
                    );
                }
                None => println!("  {label:<24} {:>12}", "failed"),
            }
        }
    });
}
