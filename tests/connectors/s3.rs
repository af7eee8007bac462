//! The `s3` sink against a real S3 API (`SLUICE_TEST_AWS`, default http://127.0.0.1:4566;
//! `scripts/test` starts moto_server there), through the binary: objects listed and read back
//! byte for byte with their keys and roll boundaries, gzip and zstd, multipart uploads, and a
//! kill -9 between the upload of a batch's objects and the channel commit followed by a
//! restart that rewrites the same objects (no duplicates).
//!
//! Buckets are created (and checked) with the AWS SDK for Rust, one per test with a unique
//! name, so tests run in parallel and reruns do not interfere. A missing server fails the
//! tests: creating the bucket is the first thing each one does.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use aws_sdk_s3::Client;

use crate::common::{
    self, Agent,
    aws::{create_bucket, endpoint, list_objects},
};

const COLORS: [&str; 3] = ["red", "green", "blue"];

/// A client for the test server, built the way the agent builds its own.
async fn client() -> Client {
    common::aws::s3(Duration::from_secs(60)).await
}

/// An object's bytes, `Content-Encoding` and ETag.
async fn get(c: &Client, bucket: &str, key: &str) -> (Vec<u8>, Option<String>, String) {
    let o = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("getting {key}: {}", sluice::connectors::aws::describe(&e)));
    let encoding = o.content_encoding().map(str::to_owned);
    let etag = o.e_tag().unwrap_or_default().to_owned();
    let bytes = o.body.collect().await.expect("object body").into_bytes();
    (bytes.to_vec(), encoding, etag)
}

/// Deletes what a test wrote (moto keeps objects in memory).
async fn remove(c: &Client, bucket: &str) {
    for key in list_objects(c, bucket, "").await.keys() {
        let _ = c.delete_object().bucket(bucket).key(key).send().await;
    }
    let _ = c.delete_bucket().bucket(bucket).send().await;
}

/// The connection keys of an `s3` sink block, indented for a sink's settings.
fn connection() -> String {
    format!(
        "    region: us-east-1
    endpoint: \"{}\"
    access_key_id: test
    secret_access_key: test
    force_path_style: true
",
        endpoint()
    )
}

/// The generator's body for event `seq`: the number padded with dots to `size` bytes.
fn gen_body(seq: u64, size: usize) -> String {
    // By hand: format widths stop at 65535, below the multipart test's 64 KiB bodies.
    let mut s = seq.to_string();
    let pad = size.saturating_sub(s.len());
    s.extend(std::iter::repeat_n('.', pad));
    s
}

/// `(prefix, position, chunk)` of an object name `<prefix><position:020>-<chunk:04>-<8 hex><ext>`.
fn name_parts<'a>(key: &'a str, ext: &str) -> (&'a str, u64, usize) {
    let stem = key
        .strip_suffix(ext)
        .unwrap_or_else(|| panic!("{key} does not end with {ext:?}"));
    let (rest, fp) = stem.rsplit_once('-').expect("fingerprint");
    assert!(
        fp.len() == 8 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
        "fingerprint of {key}"
    );
    let (rest, chunk) = rest.rsplit_once('-').expect("chunk");
    assert_eq!(chunk.len(), 4, "chunk of {key}");
    let (prefix, position) = rest.split_at(rest.len() - 20);
    (
        prefix,
        position.parse().expect("position"),
        chunk.parse().expect("chunk"),
    )
}

/// Runs the agent on `pipeline` until it exits by itself (its sources ended and its channels
/// drained); returns its log. Panics if it fails or is still running after `limit`.
async fn run_to_end(dir: &Path, name: &str, pipeline: &str, limit: Duration) -> String {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, pipeline).unwrap();
    let log_path = dir.join(format!("{name}.log"));
    let mut child = common::sluice()
        .arg("-p")
        .arg(&file)
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start sluice");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice still running after {limit:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "sluice exited with {status}:\n{log}");
    log
}

/// Splits `items` the way the sink rolls: an object ends with the event that reaches
/// `roll_count` events or `roll_size` bytes (of `item + "\n"` lines).
fn roll<T: AsRef<str>>(items: &[T], roll_count: Option<usize>, roll_size: u64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, item) in items.iter().enumerate() {
        bytes += item.as_ref().len() as u64 + 1;
        if roll_count.is_some_and(|c| i + 1 - start >= c) || bytes >= roll_size {
            out.push(&items[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

fn lines_of<T: AsRef<str>>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(i.as_ref().as_bytes());
        out.push(b'\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_objects_by_key_and_roll_count() {
    const N: u64 = 1000;
    const BATCH: u64 = 500;
    const ROLL: usize = 100;
    const BODY: usize = 24;
    let c = client().await;
    let bucket = create_bucket(&c, "sluice-test").await;
    let dir = tempfile::tempdir().unwrap();
    // One put of N events; the sink lingers until it holds a full batch, so it takes exactly
    // two batches, at positions 0 and BATCH.
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 10000 }}
sources:
  gen:
    type: generator
    count: {N}
    body_size: {BODY}
    cycle: {{ header: topic, values: [{colors}] }}
    channels: [mem]
sinks:
  s3:
    type: s3
    channel: mem
    bucket: {bucket}
    key: \"events/%{{topic}}/\"
    roll_count: {ROLL}
    batch_size: {BATCH}
    roll_interval: 30s
{conn}",
        colors = COLORS.join(", "),
        conn = connection(),
    );
    run_to_end(dir.path(), "agent", &pipeline, Duration::from_secs(120)).await;

    // What each object must hold: per batch, per topic in first-seen order, ROLL at a time.
    let mut want: BTreeMap<(String, u64, usize), Vec<u8>> = BTreeMap::new();
    for start in (0..N).step_by(BATCH as usize) {
        let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
        for seq in start..start + BATCH {
            let topic = COLORS[(seq % 3) as usize];
            let body = gen_body(seq, BODY);
            match groups.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, bodies)) => bodies.push(body),
                None => groups.push((topic, vec![body])),
            }
        }
        for (topic, bodies) in groups {
            for (chunk, part) in roll(&bodies, Some(ROLL), u64::MAX).into_iter().enumerate() {
                want.insert((format!("events/{topic}/"), start, chunk), lines_of(part));
            }
        }
    }

    let listed = list_objects(&c, &bucket, "").await;
    // A memory channel numbers from the clock: positions are compared relative to the first.
    let base = listed
        .keys()
        .map(|k| name_parts(k, "").1)
        .min()
        .expect("objects");
    let mut got: BTreeMap<(String, u64, usize), Vec<u8>> = BTreeMap::new();
    for (key, size) in &listed {
        let (prefix, position, chunk) = name_parts(key, "");
        let position = position - base;
        let (bytes, encoding, _) = get(&c, &bucket, key).await;
        assert_eq!(bytes.len() as i64, *size, "{key}: listed size");
        assert_eq!(
            encoding, None,
            "{key}: no Content-Encoding without compression"
        );
        got.insert((prefix.to_owned(), position, chunk), bytes);
    }
    let want_keys: Vec<_> = want.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(got_keys, want_keys, "objects (prefix, position, chunk)");
    for (k, bytes) in &want {
        assert!(
            got[k] == *bytes,
            "{k:?}: content differs:\n got {:?}\nwant {:?}",
            String::from_utf8_lossy(&got[k]),
            String::from_utf8_lossy(bytes)
        );
    }
    // Each topic's events in order, each exactly once.
    for (t, topic) in COLORS.iter().enumerate() {
        let topic_prefix = format!("events/{topic}/");
        let mut seen = Vec::new();
        for ((prefix, _, _), bytes) in &got {
            if *prefix == topic_prefix {
                seen.extend(String::from_utf8_lossy(bytes).lines().map(common::seq));
            }
        }
        let expected: Vec<u64> = (0..N).filter(|s| s % 3 == t as u64).collect();
        assert_eq!(seen, expected, "events of {topic}");
    }
    let head = c
        .head_object()
        .bucket(&bucket)
        .key(listed.keys().next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    remove(&c, &bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_compression_gzip_and_zstd() {
    const N: u64 = 600;
    const ROLL: usize = 250;
    const BODY: usize = 40;
    let c = client().await;
    let bucket = create_bucket(&c, "sluice-test").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = |name: &str, channel: &str, compression: &str| {
        format!(
            "  {name}:
    type: s3
    channel: {channel}
    bucket: {bucket}
    key: {name}/
    compression: {compression}
    roll_count: {ROLL}
    batch_size: {N}
    roll_interval: 30s
{conn}",
            conn = connection()
        )
    };
    let pipeline = format!(
        "channels:
  gzc: {{ type: memory, capacity: 10000 }}
  zsc: {{ type: memory, capacity: 10000 }}
sources:
  gen:
    type: generator
    count: {N}
    body_size: {BODY}
    channels: [gzc, zsc]
sinks:
{}{}",
        sink("gz", "gzc", "gzip"),
        sink("zs", "zsc", "zstd"),
    );
    run_to_end(dir.path(), "agent", &pipeline, Duration::from_secs(120)).await;

    let bodies: Vec<String> = (0..N).map(|s| gen_body(s, BODY)).collect();
    let want: Vec<Vec<u8>> = roll(&bodies, Some(ROLL), u64::MAX)
        .into_iter()
        .map(lines_of)
        .collect();
    assert_eq!(want.len(), 3);
    for (prefix, ext, encoding) in [("gz/", ".gz", "gzip"), ("zs/", ".zst", "zstd")] {
        let listed = list_objects(&c, &bucket, prefix).await;
        assert_eq!(
            listed.len(),
            want.len(),
            "objects under {prefix}: {listed:?}"
        );
        // One take: every object carries the position of its first event.
        let base = name_parts(listed.keys().next().expect("objects"), ext).1;
        for (chunk, key) in listed.keys().enumerate() {
            let (p, position, n) = name_parts(key, ext);
            assert_eq!((p, position, n), (prefix, base, chunk), "{key}");
            let (bytes, enc, _) = get(&c, &bucket, key).await;
            assert_eq!(enc.as_deref(), Some(encoding), "{key}: Content-Encoding");
            let plain = match encoding {
                "gzip" => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .unwrap_or_else(|e| panic!("{key} is not gzip: {e}"));
                    out
                }
                _ => zstd::stream::decode_all(&bytes[..])
                    .unwrap_or_else(|e| panic!("{key} is not zstd: {e}")),
            };
            assert!(
                bytes.len() < plain.len(),
                "{key}: {} compressed bytes for {} plain ones",
                bytes.len(),
                plain.len()
            );
            assert!(plain == want[chunk], "{key}: content differs");
        }
    }
    remove(&c, &bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_multipart_large_objects() {
    const N: u64 = 400;
    const BODY: usize = 64 << 10;
    const ROLL_SIZE: u64 = 12 << 20;
    let c = client().await;
    let bucket = create_bucket(&c, "sluice-test").await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "channels:
  mem: {{ type: memory, capacity: 10000 }}
sources:
  gen:
    type: generator
    count: {N}
    body_size: 64KiB
    channels: [mem]
sinks:
  s3:
    type: s3
    channel: mem
    bucket: {bucket}
    key: big/
    roll_size: 12MiB
    part_size: 5MiB
    batch_size: {N}
    roll_interval: 30s
{conn}",
        conn = connection()
    );
    run_to_end(dir.path(), "agent", &pipeline, Duration::from_secs(180)).await;

    let bodies: Vec<String> = (0..N).map(|s| gen_body(s, BODY)).collect();
    let want = roll(&bodies, None, ROLL_SIZE);
    // 192 events of 64 KiB reach 12 MiB: two multipart objects of three parts, then the rest.
    assert_eq!(
        want.iter().map(|w| w.len()).collect::<Vec<_>>(),
        [192, 192, 16]
    );
    let listed = list_objects(&c, &bucket, "big/").await;
    assert_eq!(listed.len(), want.len(), "{listed:?}");
    let base = name_parts(listed.keys().next().expect("objects"), "").1;
    for (chunk, key) in listed.keys().enumerate() {
        let (_, position, n) = name_parts(key, "");
        assert_eq!((position, n), (base, chunk), "{key}");
        let (bytes, _, etag) = get(&c, &bucket, key).await;
        let expected = lines_of(want[chunk]);
        assert_eq!(bytes.len(), expected.len(), "{key}: size");
        assert!(bytes == expected, "{key}: content differs");
        // A multipart object's ETag ends with the number of its parts.
        let parts = expected.len().div_ceil(5 << 20);
        if expected.len() > 5 << 20 {
            assert!(
                etag.trim_matches('"').ends_with(&format!("-{parts}")),
                "{key}: ETag {etag} of a {parts}-part upload"
            );
        } else {
            assert!(!etag.contains('-'), "{key}: ETag {etag} of a single PUT");
        }
    }
    remove(&c, &bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_crash_between_upload_and_commit_leaves_no_duplicates() {
    const N: u64 = 3000;
    const ROLL: usize = 5;
    const BODY: usize = 100;
    let objects = N as usize / ROLL;
    let c = client().await;
    let bucket = create_bucket(&c, "sluice-test").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "sinks:
  s3:
    type: s3
    channel: disk
    bucket: {bucket}
    key: crash/
    roll_count: {ROLL}
    batch_size: {N}
    roll_interval: 60s
{conn}",
        conn = connection()
    );
    let channel = format!(
        "channels:
  disk: {{ type: rocksdb, path: \"{}\" }}
",
        dir.path().join("channel").display()
    );
    // First run: the generator fills the durable channel and the sink takes all N events as
    // one batch of N / ROLL objects, uploaded a few at a time. The agent is killed as soon as
    // the first object exists: the batch is then partly uploaded and not committed.
    let first = format!(
        "{channel}sources:
  gen:
    type: generator
    count: {N}
    body_size: {BODY}
    channels: [disk]
{sink}"
    );
    let mut agent = Agent::start(dir.path(), "first", &first);
    let (limit, poll) = (Duration::from_secs(120), Duration::from_millis(5));
    agent
        .wait_until(limit, poll, async || {
            if list_objects(&c, &bucket, "crash/").await.is_empty() {
                Err("no object yet".to_owned())
            } else {
                Ok(())
            }
        })
        .await;
    agent.kill();
    // Requests the server had already received may still complete.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_kill = list_objects(&c, &bucket, "crash/").await;
    assert!(
        !at_kill.is_empty() && at_kill.len() < objects,
        "the kill was meant to land while the batch was uploading, but {} of {objects} objects exist:\n{}",
        at_kill.len(),
        agent.log()
    );
    eprintln!(
        "killed the agent (SIGKILL) with {} of {objects} objects uploaded",
        at_kill.len()
    );

    // Second run: no source, the same channel: the uncommitted batch is taken again from the
    // same position and rewritten under the same names; the agent exits once drained.
    let second = format!("{channel}{sink}");
    run_to_end(dir.path(), "second", &second, Duration::from_secs(180)).await;

    let listed = list_objects(&c, &bucket, "crash/").await;
    for key in at_kill.keys() {
        assert!(listed.contains_key(key), "{key} from the first run is gone");
    }
    assert_eq!(
        listed.len(),
        objects,
        "one object per {ROLL} events, none duplicated"
    );
    let mut seen: Vec<u64> = Vec::with_capacity(N as usize);
    for (chunk, key) in listed.keys().enumerate() {
        let (_, position, n) = name_parts(key, "");
        assert_eq!((position, n), (0, chunk), "{key}");
        let (bytes, _, _) = get(&c, &bucket, key).await;
        let text = String::from_utf8(bytes).unwrap();
        let seqs: Vec<u64> = text.lines().map(common::seq).collect();
        let first = (chunk * ROLL) as u64;
        let expected: Vec<u64> = (first..first + ROLL as u64).collect();
        assert_eq!(seqs, expected, "{key}");
        for line in text.lines() {
            assert_eq!(line, gen_body(common::seq(line), BODY), "{key}: body");
        }
        seen.extend(seqs);
    }
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), N as usize, "events across all objects");
    assert_eq!(distinct.len(), N as usize, "each event exactly once");
    remove(&c, &bucket).await;
}

/// `format: parquet`: 600 JSON events become Parquet objects of 250 rows (row groups of 100),
/// read by pyarrow with the inferred schema (and a declared one with a timestamp column),
/// every row's values as sent.
#[tokio::test(flavor = "multi_thread")]
async fn s3_parquet_objects_read_by_pyarrow() {
    const N: usize = 600;
    let c = client().await;
    let bucket = create_bucket(&c, "sluice-test").await;
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 0..N {
        input.push_str(
            &serde_json::json!({
                "id": i, "name": format!("n{i}"), "score": i as f64 + 0.25, "ok": i % 2 == 0,
                "tags": [i, "x"], "note": if i % 3 == 0 { serde_json::Value::Null } else { format!("k{i}").into() },
                "at": format!("2026-12-07T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
            })
            .to_string(),
        );
        input.push('\n');
    }
    let sink = |name: &str, channel: &str, parquet: &str| {
        format!(
            "  {name}:
    type: s3
    channel: {channel}
    bucket: {bucket}
    key: {name}/
    format: parquet
    parquet: {parquet}
    roll_count: 250
    batch_size: {N}
    roll_interval: 30s
{conn}",
            conn = connection()
        )
    };
    let pipeline = format!(
        "channels:\n  a: {{ type: memory, capacity: 10000 }}\n  b: {{ type: memory, capacity: 10000 }}\n\
         sources:\n  in: {{ type: stdin, codec: ndjson, channels: [a, b] }}\n\
         sinks:\n{}{}",
        sink(
            "inferred",
            "a",
            "{ row_group_size: 100, compression: zstd }"
        ),
        sink(
            "declared",
            "b",
            "{ columns: { id: int64, name: string, at: timestamp_ms, tags: json } }"
        ),
    );
    let d = dir.path().to_owned();
    tokio::task::spawn_blocking(move || common::run_stdin(&d, &pipeline, input))
        .await
        .unwrap();
    let objects = list_objects(&c, &bucket, "").await;
    let keys: Vec<&String> = objects.keys().collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for (i, key) in keys.iter().enumerate() {
        assert!(key.ends_with(".parquet"), "{key}");
        let (bytes, _, _) = get(&c, &bucket, key).await;
        std::fs::write(
            dir.path().join(format!("{i}-{}", key.replace('/', "_"))),
            bytes,
        )
        .unwrap();
    }
    let out = std::process::Command::new(common::python())
        .current_dir(dir.path())
        .arg("-c")
        .arg(
            r#"
import glob, pyarrow.parquet as pq, pyarrow as pa
for kind in ("inferred", "declared"):
    files = sorted(glob.glob("*%s_*.parquet" % kind))
    rows = []
    for f in files:
        pf = pq.ParquetFile(f)
        t = pf.read()
        assert 0 < t.num_rows <= 250, (f, t.num_rows)
        if kind == "inferred":
            assert pf.metadata.num_row_groups == -(-t.num_rows // 100), pf.metadata
            assert t.schema.field("id").type == pa.int64()
            assert t.schema.field("score").type == pa.float64()
            assert t.schema.field("ok").type == pa.bool_()
            assert t.schema.field("name").type == pa.string()
            assert t.schema.field("tags").type == pa.string()
        else:
            assert t.schema.names == ["id", "name", "at", "tags"], t.schema
            assert t.schema.field("at").type == pa.timestamp("ms", tz="UTC") or str(t.schema.field("at").type).startswith("timestamp[ms"), t.schema
        rows.extend(t.to_pylist())
    rows.sort(key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(600)), kind
    r = rows[7]
    assert r["name"] == "n7" and r["tags"] == "[7,\"x\"]", r
    if kind == "inferred":
        assert r["score"] == 7.25 and r["ok"] is False and r["note"] == "k7" and rows[6]["note"] is None, r
    else:
        assert r["at"].isoformat().startswith("2026-12-07T10:00:07"), r
    print(kind, "ok", len(rows))
"#,
        )
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("inferred ok 600") && said.contains("declared ok 600"),
        "{said}"
    );
    remove(&c, &bucket).await;
}
