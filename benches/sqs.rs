//! SQS → null: messages per second drained from a pre-filled queue.
//!
//! Fills a fresh queue with `SLUICE_BENCH_SQS_MESSAGES` (default 20,000) messages of 256
//! bytes (`SendMessageBatch`, eight calls in flight), then empties it three ways:
//! - raw: four loops in this process, each `ReceiveMessage` (10) → `DeleteMessageBatch`;
//! - sluice, `batch_size: 100`: the binary running sqs source → memory channel → null sink;
//! - sluice, `batch_size: 1000`, `linger: 500ms`: larger batches per channel commit.
//!
//! Each run is timed from the first message taken (the queue's visible plus in-flight count
//! below the total) to the queue holding none, polled every 50 ms, so start-up does not
//! count. The server is `SLUICE_TEST_AWS` (default http://127.0.0.1:4566: moto, whose own
//! speed bounds every case; the ratio column says how close Sluice gets to the raw loop).
//! Without `--bench` (under `cargo test`) a small smoke run checks that every case completes.

use std::{
    process::Child,
    time::{Duration, Instant},
};

use aws_sdk_sqs::{
    Client,
    types::{DeleteMessageBatchRequestEntry, QueueAttributeName, SendMessageBatchRequestEntry},
};

/// Helpers shared by the benches.
#[path = "common/mod.rs"]
mod common;
/// The tests' helpers: unique names, the test server's endpoint and clients
/// (`tests/common/aws.rs`), shared with the tests.
#[path = "../tests/common/mod.rs"]
mod test_support;
use common::{Measure, agent_log, env_or, spawn_agent};
use test_support::{
    aws::{self, endpoint},
    unique,
};

const BODY: usize = 256;
/// A run that has not finished after this long is reported as failed.
const RUN_LIMIT: Duration = Duration::from_secs(300);

async fn client() -> Client {
    Client::new(&aws::sdk(Duration::from_secs(60)).await)
}

/// A fresh queue holding `m` numbered messages of [`BODY`] bytes; its URL.
async fn prefill(sqs: &Client, m: usize) -> String {
    let out = sqs
        .create_queue()
        .queue_name(unique("bench-sqs"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating a queue at {}: {e:?}", endpoint()));
    let url = out.queue_url.expect("queue url");
    let calls: Vec<Vec<usize>> = (0..m)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(<[usize]>::to_vec)
        .collect();
    let mut in_flight = tokio::task::JoinSet::new();
    for ids in calls {
        if in_flight.len() == 8 {
            in_flight.join_next().await.unwrap().unwrap();
        }
        let (sqs, url) = (sqs.clone(), url.clone());
        in_flight.spawn(async move {
            let entries = ids
                .iter()
                .map(|i| {
                    let mut body = format!("{i:>12}");
                    body.extend(std::iter::repeat_n('x', BODY - body.len()));
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .unwrap()
                })
                .collect();
            let out = sqs
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("SendMessageBatch");
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        });
    }
    while let Some(r) = in_flight.join_next().await {
        r.unwrap();
    }
    url
}

/// Visible plus in-flight messages.
async fn remaining(sqs: &Client, url: &str) -> u64 {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("GetQueueAttributes");
    out.attributes
        .unwrap_or_default()
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Polls the queue until it is empty; the rate from the first message taken to the end.
async fn watch(sqs: &Client, url: &str, m: u64) -> Option<Measure> {
    let limit = Instant::now() + RUN_LIMIT;
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let left = remaining(sqs, url).await;
        let now = Instant::now();
        if left < m && first.is_none() {
            first = Some((now, left));
        }
        if left == 0 {
            let (t0, left0) = first.unwrap_or((now, 0));
            return Some(Measure::between(left0, t0, now));
        }
        if now > limit {
            eprintln!("gave up: {left} of {m} messages still in {url} after {RUN_LIMIT:?}");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The raw loop: `ReceiveMessage` (10, 1 s long poll) then `DeleteMessageBatch`, until a
/// receive comes back empty.
async fn raw_loop(sqs: Client, url: String) {
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return;
        }
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
                    .ok()
            })
            .collect();
        sqs.delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("DeleteMessageBatch");
    }
}

/// The `sluice` binary draining `url` into a null sink, its log in `<dir>/<label>.log`.
fn start_agent(dir: &std::path::Path, label: &str, url: &str, source_extra: &str) -> Child {
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 20000 }}
sources:
  in:
    type: sqs
    channels: [mem]
    queue_url: '{url}'
    wait_time: 1s
{source_extra}    region: us-east-1
    endpoint: \"{endpoint}\"
    access_key_id: test
    secret_access_key: test
sinks:
  out: {{ type: null, channel: mem, batch_size: 1000 }}
",
        endpoint = endpoint()
    );
    spawn_agent(dir, label, &pipeline)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a small smoke run checks that every
    // case still completes.
    let benching = std::env::args().any(|a| a == "--bench");
    let m: usize = env_or(
        "SLUICE_BENCH_SQS_MESSAGES",
        if benching { 20_000 } else { 300 },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let sqs = client().await;
        let mut rows: Vec<(&str, Option<Measure>)> = Vec::new();

        let t0 = Instant::now();
        let url = prefill(&sqs, m).await;
        println!(
            "sqs: {m} messages of {BODY} bytes at {} (pre-filled at {:.0}/s)",
            endpoint(),
            m as f64 / t0.elapsed().as_secs_f64()
        );
        let loops: Vec<_> = (0..4)
            .map(|_| tokio::spawn(raw_loop(sqs.clone(), url.clone())))
            .collect();
        rows.push(("raw SDK loops (4)", watch(&sqs, &url, m as u64).await));
        for l in loops {
            l.await.unwrap();
        }
        let _ = sqs.delete_queue().queue_url(&url).send().await;

        for (label, extra) in [
            ("sluice, batch_size 100", "    batch_size: 100\n"),
            (
                "sluice, batch_size 1000",
                "    batch_size: 1000\n    linger: 500ms\n",
            ),
        ] {
            let url = prefill(&sqs, m).await;
            let name = unique("bench");
            let mut agent = start_agent(dir.path(), &name, &url, extra);
            let measured = watch(&sqs, &url, m as u64).await;
            let _ = agent.kill();
            let _ = agent.wait();
            if measured.is_none() {
                eprintln!("{label} log:\n{}", agent_log(dir.path(), &name));
            }
            rows.push((label, measured));
            let _ = sqs.delete_queue().queue_url(&url).send().await;
        }

        let raw = rows[0].1.as_ref().map(Measure::per_second);
        println!("  {:<26} {:>12} {:>8}", "case", "messages/s", "vs raw");
        for (label, measure) in &rows {
            match measure {
                Some(x) => {
                    let rate = x.per_second();
                    let ratio =
                        raw.map_or(String::from("-"), |r| format!("{:.0}%", rate / r * 100.0));
                    println!(
                        "  {label:<26} {rate:>12.0} {ratio:>8}   ({} messages in {:.2?})",
                        x.count, x.elapsed
                    );
                }
                None => println!("  {label:<26} {:>12}", "failed"),
            }
        }
        if !benching && rows.iter().any(|(_, x)| x.is_none()) {
            panic!("a case did not complete");
        }
    });
}
