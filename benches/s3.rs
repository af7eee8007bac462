//! S3 sink throughput: generator → memory channel → `s3` sink, 256-byte events into 8 MiB
//! objects, against the S3 API at `SLUICE_TEST_AWS` (default http://127.0.0.1:4566, the
//! moto_server `scripts/test` starts), beside a raw loop of the SDK's PutObject on the same
//! bytes.
//!
//! - raw: `SLUICE_BENCH_S3_EVENTS` (default 400,000) generator-style lines built in memory
//!   first, then uploaded as 8 MiB objects with PutObject, 4 at a time (what the sink does);
//! - sluice, lines: the binary with a generator of as many 256-byte events, a memory channel
//!   and the `s3` sink with `batch_size: 32640` (32,640 lines of 257 bytes are just under
//!   8 MiB: an object never spans two takes, so a take is one object), `roll_size: 8MiB` and
//!   `roll_interval: 1s`;
//! - sluice, lines + zstd: the same with `compression: zstd`.
//!
//! Sluice runs are timed from the agent's start to its exit (it exits once the generator is
//! done and the channel drained), so they include start-up (a fraction of a second). MiB/s
//! counts event bodies. The uncompressed run is checked: its objects hold every line.
//! Without `--bench` (under `cargo test`) a 20,000-event smoke run checks that every case
//! still completes.

use std::{
    io::Write,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use aws_sdk_s3::{Client, primitives::ByteStream};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

/// Helpers shared by the benches.
#[path = "common/mod.rs"]
mod common;
/// The tests' helpers: the test server's endpoint, clients, bucket set-up and listing
/// (`tests/common/aws.rs`), shared with the tests.
#[path = "../tests/common/mod.rs"]
mod test_support;
use common::{Measure, agent, agent_log, env_or};
use test_support::aws::{self, create_bucket, endpoint, list_objects};

const BODY: usize = 256;
/// Lines per object (and per take): 32,640 × 257 bytes is just under 8 MiB.
const PER_OBJECT: usize = 32_640;
/// A run that has not finished after this long is reported as failed.
const RUN_LIMIT: Duration = Duration::from_secs(600);

async fn client() -> Client {
    aws::s3(Duration::from_secs(120)).await
}

/// Deletes every object and the bucket (moto keeps objects in memory).
async fn remove(c: &Client, bucket: &str) {
    // Bounded: a delete that keeps failing must not spin forever.
    for _ in 0..1000 {
        let page = match c.list_objects_v2().bucket(bucket).send().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        if keys.is_empty() {
            break;
        }
        for k in keys {
            let _ = c.delete_object().bucket(bucket).key(k).send().await;
        }
    }
    let _ = c.delete_bucket().bucket(bucket).send().await;
}

/// The raw loop: the generator's lines, built up front, PutObject'ed 4 at a time; the run
/// and the number of objects written.
async fn raw_puts(c: &Client, bucket: &str, n: u64) -> (Measure, usize) {
    let mut payloads = Vec::new();
    let mut seq = 0u64;
    while seq < n {
        let k = (n - seq).min(PER_OBJECT as u64);
        let mut buf = Vec::with_capacity(k as usize * (BODY + 1));
        for s in seq..seq + k {
            writeln!(buf, "{s:.<BODY$}").unwrap();
        }
        payloads.push(Bytes::from(buf));
        seq += k;
    }
    let t0 = Instant::now();
    let results: Vec<_> = stream::iter(payloads.iter().enumerate())
        .map(|(i, p)| {
            c.put_object()
                .bucket(bucket)
                .key(format!("raw/{i:06}"))
                .body(ByteStream::from(p.clone()))
                .send()
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let elapsed = t0.elapsed();
    for r in results {
        if let Err(e) = r {
            panic!("raw PutObject: {}", sluice::connectors::aws::describe(&e));
        }
    }
    (Measure { count: n, elapsed }, payloads.len())
}

/// The agent writing `n` events under `<label>/`: the run and the number of objects it wrote;
/// `None` when it failed or ran too long.
async fn sluice_run(
    dir: &Path,
    c: &Client,
    bucket: &str,
    label: &str,
    n: u64,
    compression: &str,
) -> Option<(Measure, usize)> {
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 100000 }}
sources:
  gen: {{ type: generator, count: {n}, body_size: {BODY}, channels: [mem] }}
sinks:
  s3:
    type: s3
    channel: mem
    bucket: {bucket}
    key: {label}/
    compression: {compression}
    roll_size: 8MiB
    batch_size: {PER_OBJECT}
    roll_interval: 1s
    region: us-east-1
    endpoint: \"{endpoint}\"
    access_key_id: test
    secret_access_key: test
    force_path_style: true
",
        endpoint = endpoint(),
    );
    let mut cmd = agent(dir, label, &pipeline);
    let t0 = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).spawn().expect("start sluice");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "{label}: still running after {RUN_LIMIT:?}:\n{}",
                agent_log(dir, label)
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = t0.elapsed();
    if !status.success() {
        eprintln!(
            "{label}: sluice failed ({status}):\n{}",
            agent_log(dir, label)
        );
        return None;
    }
    let listed = list_objects(c, bucket, &format!("{label}/")).await;
    let (objects, bytes) = (listed.len(), listed.values().sum::<i64>());
    if compression == "none" {
        let want = n as i64 * (BODY as i64 + 1);
        assert_eq!(bytes, want, "{label}: bytes stored");
    }
    Some((Measure { count: n, elapsed }, objects))
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a small smoke run checks that every
    // case still completes.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = env_or(
        "SLUICE_BENCH_S3_EVENTS",
        if benching { 400_000 } else { 20_000 },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let c = client().await;
        let bucket = create_bucket(&c, "sluice-bench").await;
        println!(
            "s3: {n} events of {BODY} bytes into 8 MiB objects ({PER_OBJECT} per object) at {}",
            endpoint()
        );
        let raw = raw_puts(&c, &bucket, n).await;
        let plain = sluice_run(dir.path(), &c, &bucket, "lines", n, "none").await;
        let zstd = sluice_run(dir.path(), &c, &bucket, "zstd", n, "zstd").await;
        let rows = [
            ("raw SDK PutObject x4", Some(raw)),
            ("sluice, lines", plain),
            ("sluice, lines + zstd", zstd),
        ];

        let raw = rows[0].1.as_ref().map(|(x, _)| x.per_second());
        println!(
            "  {:<22} {:>12} {:>9} {:>8} {:>8}",
            "case", "events/s", "MiB/s", "objects", "vs raw"
        );
        for (label, m) in &rows {
            match m {
                Some((x, objects)) => {
                    let rate = x.per_second();
                    let ratio = raw.map_or(String::from("-"), |r| format!("{:.0}%", rate / r * 100.0));
                    println!(
                        "  {label:<22} {rate:>12.0} {:>9.1} {:>8} {ratio:>8}   ({} events in {:.2?})",
                        rate * BODY as f64 / (1 << 20) as f64,
                        objects,
                        x.count,
                        x.elapsed
                    );
                }
                None => println!("  {label:<22} {:>12}", "failed"),
            }
        }
        remove(&c, &bucket).await;
        assert!(
            rows.iter().all(|(_, m)| m.is_some()),
            "a case failed (see above)"
        );
    });
}
