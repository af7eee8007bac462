//! RabbitMQ → spillable channel → Kafka through faults, in Jepsen's terms
//! (`common::jepsen`). A publisher sends self-checking messages (with confirms) all along; the
//! agent reads them through a TCP proxy to RabbitMQ and writes them to a Kafka topic, which is
//! read back from the start afterwards.
//!
//! - Cuts and clean restarts: the proxy cuts every AMQP connection every 300–900 ms and the
//!   agent is stopped (SIGTERM) and started again 3 times. Nothing may be lost: a clean stop
//!   delivers what the memory tier holds.
//! - SIGKILLs: the agent is killed 3 times. The spillable channel's memory tier is lost at a
//!   crash, like a memory channel (it is acknowledged upstream once stored there), so the run
//!   reports what was lost and checks it is no more than the memory tier can hold per kill;
//!   what had spilled to disk survives.
//!
//! Unexpected and corrupted events must be 0 in both; duplicates are reported.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    common::{
        Agent,
        faults::Proxy,
        jepsen::{Report, body, parse},
        unique,
    },
    kafka::{create_topic, read_until},
    rabbitmq::{amqp, cleanup, connect, declare_queue, plain, publish, publisher, ready},
};

/// Events the spillable channel keeps in memory before it spills to disk.
const MEMORY: usize = 500;
const PARTITIONS: i32 = 2;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// SIGTERM, then a clean start.
    Restart,
    /// SIGKILL, then a start.
    Kill,
}

/// Runs the path through `fault` 3 times (with proxy cuts in between for `Restart`) while
/// messages are published; returns the report and the logs.
async fn run(fault: Fault) -> (Report, String) {
    let conn = connect().await;
    let ch = publisher(&conn).await;
    let qin = unique("sluice-chaos-in");
    declare_queue(&ch, &qin).await;
    let topic = unique("sluice-chaos-out");
    create_topic(&topic, PARTITIONS).await;
    let broker_port: u16 = amqp()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .unwrap_or(5672);
    let proxy = Proxy::start(broker_port);
    let via_proxy = with_port(&amqp(), broker_port, proxy.port).expect("an amqp:// URI");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"
channels:
  buf: {{ type: spillable, memory_capacity: {MEMORY}, path: '{disk}' }}
sources:
  in:
    type: rabbitmq
    uri: '{via_proxy}'
    queue: '{qin}'
    batch_size: 100
    prefetch: 400
    linger: 5ms
    channels: [buf]
sinks:
  out:
    type: kafka
    channel: buf
    bootstrap_servers: '{kafka}'
    topic: '{topic}'
    batch_size: 500
"#,
        disk = dir.path().join("disk").display(),
        kafka = crate::kafka::broker(),
    );

    // The publisher: 100 messages every 20 ms until told to stop; `sent` holds the confirmed.
    let sent: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (sent, stop, ch, qin) = (sent.clone(), stop.clone(), ch.clone(), qin.clone());
        tokio::spawn(async move {
            let mut next = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let seqs = next..next + 100;
                next += 100;
                publish(&ch, &qin, plain(seqs.clone().map(body))).await;
                sent.lock().unwrap().extend(seqs);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut agent = Agent::start(dir.path(), "run0", &pipeline);
    let mut logs = String::new();
    let started = Instant::now();
    let mut next_cut = started + Duration::from_millis(500);
    let mut rng = started.elapsed().subsec_nanos() as u64 | 1;
    for k in 1..=3 {
        let until = started + Duration::from_secs(3 * k);
        while Instant::now() < until {
            if fault == Fault::Restart && Instant::now() >= next_cut {
                proxy.cut();
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                next_cut = Instant::now() + Duration::from_millis(300 + (rng >> 33) % 600);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match fault {
            Fault::Restart => logs += &agent.stop().await,
            Fault::Kill => {
                agent.kill();
                logs += &agent.log();
            }
        }
        agent = Agent::start(dir.path(), &format!("run{k}"), &pipeline);
    }
    stop.store(true, Ordering::SeqCst);
    publishing.await.unwrap();
    let (chan, input) = (&ch, qin.as_str());
    agent
        .wait_until(
            Duration::from_secs(90),
            Duration::from_millis(200),
            async || match ready(chan, input).await {
                0 => Ok(()),
                left => Err(format!("{left} messages still ready in {input}")),
            },
        )
        .await;
    let sent = sent.lock().unwrap().clone();
    let mut distinct = BTreeSet::new();
    let (records, _) = read_until(&topic, PARTITIONS, Duration::from_secs(40), |r| {
        if let Some(seq) = parse(&r.body) {
            distinct.insert(seq);
        }
        distinct.len() >= sent.len()
    })
    .await;
    logs += &agent.stop().await;
    // Everything was taken from the queue and acknowledged (ready is 0 and the agent stopped
    // cleanly, so nothing is unacknowledged either).
    let acked = sent.clone();
    let out: Vec<String> = records.into_iter().map(|r| r.body).collect();
    cleanup(&ch, &[qin.as_str()], &[]).await;
    (Report::check(3, &sent, &acked, &out), logs)
}

/// `uri` with its port `from` replaced by `to` (the host becomes 127.0.0.1).
fn with_port(uri: &str, from: u16, to: u16) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let port = hostport
        .rsplit_once(':')
        .map_or(Some(5672), |(_, p)| p.parse().ok())?;
    (port == from).then(|| format!("{scheme}://{user}127.0.0.1:{to}/{path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_spillable_to_kafka_through_cuts_and_clean_restarts() {
    let (report, logs) = run(Fault::Restart).await;
    let path = "rabbitmq → spillable → kafka (cuts, clean restarts)";
    report.assert_safe(path, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_spillable_to_kafka_through_sigkills() {
    let (report, logs) = run(Fault::Kill).await;
    let line = report.line("rabbitmq → spillable → kafka (SIGKILLs)");
    eprintln!("{line}");
    assert!(
        report.unexpected == 0 && report.corrupted == 0,
        "{line}\n{logs}"
    );
    assert!(report.acknowledged > 0, "{line}");
    // At-most-once for the memory tier: a kill loses at most what it holds.
    assert!(
        report.lost <= report.kills * MEMORY,
        "more lost than the memory tier holds: {line}\n{logs}"
    );
}
