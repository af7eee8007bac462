//! The `sqs` source and the `dynamodb` and `kinesis` sinks through the real binary, against
//! moto (`SLUICE_TEST_AWS`, default http://127.0.0.1:4566; `scripts/test` starts
//! `moto_server` there), verified with the AWS SDK's own clients.
//!
//! SQS: 200 messages with attributes end to end (bodies, attribute headers, message ids, send
//! times; the queue empty afterwards); SIGKILL while a batch is held up by a full durable
//! channel (its visibility is extended past the timeout while held, and it comes back after
//! the kill), then SIGKILL mid-stream and a restart — every message at least once, duplicates
//! reported; a FIFO queue keeps each group's order. DynamoDB: items scanned and compared
//! attribute by attribute, nested types included, the last of two events with one key wins,
//! and poison (not JSON, not an object, a key of the wrong type, a missing key, an item over
//! 400 KB) in the DLQ while the rest are written. Kinesis: records read back from every shard
//! of a two-shard stream (data, partition keys, per-key order), an empty key in the DLQ.
//!
//! Every test makes its own queue, table or stream (a uuid in the name), so tests run in
//! parallel and reruns do not interfere. Without a server the tests fail, naming it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_smithy_types::{Blob, error::display::DisplayErrorContext};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{
    Agent,
    aws::{self, endpoint},
    envelope, run_stdin, unique, wait_until,
};

async fn sdk() -> aws_config::SdkConfig {
    aws::sdk(Duration::from_secs(30)).await
}

/// The common AWS keys of a connector block (indented for a component's settings).
fn aws_keys() -> String {
    format!(
        "    region: us-east-1\n    endpoint: \"{}\"\n    access_key_id: test\n    secret_access_key: test\n",
        endpoint()
    )
}

/// Panics naming the server: a test must fail loudly when moto is not there.
fn no_server(what: &str, e: impl std::error::Error) -> ! {
    panic!(
        "{what} at {} (is moto_server running?): {}",
        endpoint(),
        DisplayErrorContext(e)
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Complete lines of a file, parsed (a line still being written is not counted; a torn line
/// left by a SIGKILL is reported and skipped).
fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let done = text.rfind('\n').map_or("", |end| &text[..end]);
    done.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("{}: skipping a torn line ({e})", path.display());
                None
            }
        })
        .collect()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.matches('\n').count())
        .unwrap_or(0)
}

fn header<'a>(e: &'a Value, name: &str) -> Option<&'a str> {
    e["headers"][name].as_str()
}

// ---------------------------------------------------------------- SQS

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, fifo: bool) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    if fifo {
        req = req
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
    }
    let out = req
        .send()
        .await
        .unwrap_or_else(|e| no_server("creating an SQS queue", e));
    out.queue_url.expect("a queue URL")
}

/// `(visible, in flight)` messages of a queue.
async fn queue_counts(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap_or_else(|e| no_server("GetQueueAttributes", e));
    let attrs = out.attributes.unwrap_or_default();
    let get = |k: QueueAttributeName| -> u64 {
        attrs
            .get(&k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Waits until the queue holds no message, visible or in flight.
async fn wait_empty(sqs: &aws_sdk_sqs::Client, url: &str, agent_log: impl Fn() -> String) {
    let (limit, poll) = (Duration::from_secs(30), Duration::from_millis(100));
    wait_until(limit, poll, agent_log, async || {
        match queue_counts(sqs, url).await {
            (0, 0) => Ok(()),
            (visible, in_flight) => Err(format!(
                "the queue still holds {visible} visible and {in_flight} in-flight messages"
            )),
        }
    })
    .await
}

/// Waits until `path` has at least `n` lines, polling every `poll`.
async fn wait_lines(agent: &mut Agent, path: &Path, n: usize, limit: Duration, poll: Duration) {
    agent
        .wait_until(limit, poll, async || match count_lines(path) {
            have if have >= n => Ok(()),
            have => Err(format!("{have} of {n} lines written to {}", path.display())),
        })
        .await
}

/// Sends one `SendMessageBatch`; `(entry id, message id)` of each message.
async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Vec<(String, String)> {
    let out = sqs
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap_or_else(|e| no_server("SendMessageBatch", e));
    assert!(out.failed().is_empty(), "refused: {:?}", out.failed());
    out.successful()
        .iter()
        .map(|s| (s.id().to_owned(), s.message_id().to_owned()))
        .collect()
}

fn attr(data_type: &str, text: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(text)
        .build()
        .unwrap()
}

fn binary_attr(bytes: &[u8]) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("Binary")
        .binary_value(Blob::new(bytes.to_vec()))
        .build()
        .unwrap()
}

/// Sends `bodies` as plain messages, ten a call.
async fn send_plain(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect();
        send_batch(sqs, url, entries).await;
    }
}

fn sqs_pipeline(queue: &str, source_extra: &str, sink: &str, channel: &str) -> String {
    format!(
        "channels:
  ch: {channel}
sources:
  in:
    type: sqs
    channels: [ch]
    {queue}
    wait_time: 1s
{source_extra}{aws}sinks:
{sink}",
        aws = aws_keys()
    )
}

/// An agent on `queue` (the source's `queue_name` or `queue_url` key) with `source_extra`
/// writing to a file through a memory channel, until `n` lines are written and the queue is
/// empty; the events written and the agent's log.
async fn drain_to_file(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    queue: &str,
    source_extra: &str,
    n: usize,
) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = sqs_pipeline(
        queue,
        source_extra,
        &format!(
            "  out: {{ type: file, channel: ch, path: '{}', format: ndjson }}\n",
            out.display()
        ),
        "{ type: memory }",
    );
    let mut agent = Agent::start(dir.path(), "agent", &pipeline);
    let (limit, poll) = (Duration::from_secs(90), Duration::from_millis(100));
    wait_lines(&mut agent, &out, n, limit, poll).await;
    wait_empty(sqs, url, || agent.log()).await;
    let log = agent.stop().await;
    (events(&out), log)
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_to_file_end_to_end() {
    // moto spends 15-20 ms per message in a batch call: small counts keep the test short.
    const N: usize = 200;
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let name = unique("sluice-e2e");
    let url = create_queue(&sqs, &name, false).await;

    // Message id → (body, the headers its attributes must become).
    let mut want: HashMap<String, (String, BTreeMap<String, String>)> = HashMap::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    let t0 = now_ms();
    for start in (0..N).step_by(10) {
        let mut entries = Vec::new();
        let mut by_entry = HashMap::new();
        for i in start..start + 10 {
            let body = format!("message {i} ü {{\"n\":{i}}}");
            let bin = [i as u8, 0, 255];
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&body)
                    .message_attributes("kind", attr("String", &format!("k{}", i % 3)))
                    .message_attributes("n", attr("Number", &i.to_string()))
                    .message_attributes("tag", attr("String.custom", &format!("t-{i}")))
                    .message_attributes("bin", binary_attr(&bin))
                    .build()
                    .unwrap(),
            );
            let headers = BTreeMap::from([
                ("kind".to_owned(), format!("k{}", i % 3)),
                ("n".to_owned(), i.to_string()),
                ("tag".to_owned(), format!("t-{i}")),
                ("bin".to_owned(), b64.encode(bin)),
            ]);
            by_entry.insert(i.to_string(), (body, headers));
        }
        for (id, message_id) in send_batch(&sqs, &url, entries).await {
            want.insert(message_id, by_entry.remove(&id).unwrap());
        }
    }
    let t1 = now_ms();

    let queue = format!("queue_name: {name}");
    let (events, log) = drain_to_file(&sqs, &url, &queue, "    batch_size: 100\n", N).await;
    // Message id → the receive counts it arrived with (SQS delivers at least once: a copy
    // beyond the first must be a redelivery, counted as such).
    let mut receives: HashMap<String, Vec<u32>> = HashMap::new();
    for e in &events {
        let id = header(e, "sqs.message_id").expect("sqs.message_id");
        let (body, attrs) = want
            .get(id)
            .unwrap_or_else(|| panic!("a message nobody sent: {e}"));
        assert_eq!(e["body"], body.as_str(), "body of {id}");
        let ts: i64 = header(e, "timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no numeric timestamp on {e}"));
        assert!(
            (t0 - 5_000..=t1 + 5_000).contains(&ts),
            "send time {ts} is not between {t0} and {t1}"
        );
        let count: u32 = header(e, "sqs.receive_count")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no receive count on {e}"));
        receives.entry(id.to_owned()).or_default().push(count);
        let rest: BTreeMap<String, String> = e["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "timestamp" | "sqs.message_id" | "sqs.receive_count"
                )
            })
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        assert_eq!(&rest, attrs, "attribute headers of {id}");
    }
    let missing: Vec<_> = want
        .keys()
        .filter(|id| !receives.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "messages never written, e.g. {missing:?}:\n{log}"
    );
    let mut duplicates = 0;
    for (id, counts) in &mut receives {
        // Every copy beyond the first must be a redelivery (a receive count above 1). The
        // counts need not be 1, 2, 3…: when moto hands one message to two concurrent receives,
        // both answers carry the count after both (seen: [2, 2]). Two copies of count 1 would
        // be one receive written twice.
        counts.sort_unstable();
        assert!(
            counts.iter().skip(1).all(|&c| c > 1),
            "{id} written more often than it was received: receive counts {counts:?}"
        );
        duplicates += counts.len() - 1;
    }
    // moto's threaded server can hand one message to two concurrent receives; real SQS
    // does so only rarely. More than a few means deletes are late or missing.
    assert!(
        duplicates <= N / 20,
        "{duplicates} redeliveries in a run without failures:\n{log}"
    );
    assert!(!log.contains("sqs ReceiveMessage failed"), "{log}");
    let _ = sqs.delete_queue().queue_url(&url).send().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_kill_9_redelivers_none_lost() {
    const N: usize = 300;
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let url = create_queue(&sqs, &unique("sluice-kill"), false).await;
    let bodies: Vec<String> = (0..N).map(|i| format!("m-{i:04}")).collect();
    send_plain(&sqs, &url, &bodies).await;

    let dir = tempfile::tempdir().unwrap();
    // A regular file where the first agent's sink wants a directory: it cannot write.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let channel = format!(
        "{{ type: rocksdb, path: '{}', capacity: 100 }}",
        dir.path().join("channel").display()
    );
    let pipeline = |out: &Path| {
        sqs_pipeline(
            &format!("queue_url: '{url}'"),
            "    visibility_timeout: 2s\n    batch_size: 25\n",
            &format!(
                "  out:
    type: file
    channel: ch
    path: '{}'
    format: ndjson
    batch_size: 25
    retry: {{ max_attempts: 1000000, initial_backoff: 50ms, max_backoff: 200ms }}
",
                out.display()
            ),
            &channel,
        )
    };

    // 1. The sink fails: the channel fills (up to 100 events committed, their messages deleted) and
    //    the source is held up with a batch received but not committed.
    let mut first = Agent::start(dir.path(), "first", &pipeline(&blocker.join("out.ndjson")));
    // Receives give partial batches, so the channel takes a few more small ones before the
    // batch in hand no longer fits: held means the counts stopped moving with messages in
    // flight (moto's counts are approximate, so no exact number is expected).
    let mut last = (0, 0);
    let mut since = Instant::now();
    let (limit, poll) = (Duration::from_secs(60), Duration::from_millis(100));
    first
        .wait_until(limit, poll, async || {
            let now = queue_counts(&sqs, &url).await;
            if now != last {
                (last, since) = (now, Instant::now());
            } else if now.1 > 0 && since.elapsed() >= Duration::from_millis(1500) {
                return Ok(());
            }
            Err(format!(
                "the source never held a batch: (visible, in flight) = {now:?}"
            ))
        })
        .await;
    let held = queue_counts(&sqs, &url).await;
    // Well past the 2 s visibility timeout, the held batch is still hidden: extended.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let later = queue_counts(&sqs, &url).await;
    first.assert_running();
    // Had the extension failed, the held messages would be visible again by now (the source
    // is blocked, so nothing re-receives them). The channel may still have taken a small
    // batch meanwhile, so fewer visible is fine.
    assert!(
        later.0 <= held.0 && later.1 > 0,
        "held messages became visible: (visible, in flight) {held:?} -> {later:?}:\n{}",
        first.log()
    );
    first.kill();
    eprintln!(
        "killed the first agent holding {} messages in flight, {} deleted",
        held.1,
        (N as u64).saturating_sub(held.0 + held.1)
    );

    // 2. A working sink on the same channel, killed mid-stream.
    let out2 = dir.path().join("out-2.ndjson");
    let mut second = Agent::start(dir.path(), "second", &pipeline(&out2));
    let (limit, poll) = (Duration::from_secs(90), Duration::from_millis(20));
    wait_lines(&mut second, &out2, N / 2, limit, poll).await;
    second.kill();
    let at_kill = count_lines(&out2);

    // 3. To the end (a file of its own: a line torn by the kill cannot swallow the next).
    let out3 = dir.path().join("out-3.ndjson");
    let mut third = Agent::start(dir.path(), "third", &pipeline(&out3));
    let want: HashSet<&str> = bodies.iter().map(String::as_str).collect();
    let distinct = || -> usize {
        let mut got = HashSet::new();
        for p in [&out2, &out3] {
            for e in events(p) {
                got.insert(e["body"].as_str().unwrap_or_default().to_owned());
            }
        }
        got.len()
    };
    // The second agent is dead: its log is final.
    let second_log = second.log();
    let (limit, poll) = (Duration::from_secs(120), Duration::from_millis(100));
    third
        .wait_until(limit, poll, async || match distinct() {
            n if n >= N => Ok(()),
            n => Err(format!(
                "{n} of {N} distinct messages arrived:\n--- second:\n{second_log}\n--- third"
            )),
        })
        .await;
    wait_empty(&sqs, &url, || third.log()).await;
    third.stop().await;

    let all: Vec<Value> = [&out2, &out3].iter().flat_map(|p| events(p)).collect();
    let got: HashSet<&str> = all
        .iter()
        .map(|e| e["body"].as_str().unwrap_or_default())
        .collect();
    let unexpected: Vec<_> = got.difference(&want).take(5).collect();
    assert!(unexpected.is_empty(), "events nobody sent: {unexpected:?}");
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let redelivered = all
        .iter()
        .filter(|e| header(e, "sqs.receive_count").is_some_and(|c| c != "1"))
        .count();
    assert!(
        redelivered as u64 >= held.1,
        "the {} messages held at the first kill must come back (receive count above 1); {redelivered} did",
        held.1
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &all {
        *counts
            .entry(e["body"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    eprintln!(
        "sqs kill -9: {N} messages, {} delivered ({} duplicates, e.g. {dups:?}), second agent killed at {at_kill} lines, {redelivered} redelivered by SQS",
        all.len(),
        all.len() - N
    );
    let _ = sqs.delete_queue().queue_url(&url).send().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_fifo_keeps_group_order() {
    const GROUPS: usize = 3;
    const PER_GROUP: usize = 100;
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let url = create_queue(&sqs, &format!("{}.fifo", unique("sluice-fifo")), true).await;
    // Interleaved: g0-000, g1-000, g2-000, g0-001, ...
    let messages: Vec<(String, String)> = (0..PER_GROUP)
        .flat_map(|i| (0..GROUPS).map(move |g| (format!("g{g}"), format!("g{g}-{i:03}"))))
        .collect();
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(k, (g, body))| {
                SendMessageBatchRequestEntry::builder()
                    .id(k.to_string())
                    .message_body(body)
                    .message_group_id(g)
                    .build()
                    .unwrap()
            })
            .collect();
        send_batch(&sqs, &url, entries).await;
    }

    let queue = format!("queue_url: '{url}'");
    let total = GROUPS * PER_GROUP;
    let (events, _) = drain_to_file(&sqs, &url, &queue, "    batch_size: 25\n", total).await;

    let mut per_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for e in events {
        let body = e["body"].as_str().unwrap();
        let (g, i) = body.split_once('-').unwrap();
        assert_eq!(header(&e, "sqs.group_id"), Some(g), "{e}");
        if let Some(seq) = header(&e, "sqs.sequence_number") {
            assert!(seq.bytes().all(|b| b.is_ascii_digit()), "{e}");
        }
        per_group
            .entry(g.to_owned())
            .or_default()
            .push(i.parse().unwrap());
    }
    assert_eq!(per_group.len(), GROUPS);
    for (g, seq) in &per_group {
        let want: Vec<usize> = (0..PER_GROUP).collect();
        assert_eq!(seq, &want, "group {g} out of order");
    }
    let _ = sqs.delete_queue().queue_url(&url).send().await;
}

// ---------------------------------------------------------------- DynamoDB

/// A JSON value as the attribute value the sink must make of it.
fn to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_attr).collect()),
        Value::Object(o) => {
            AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect())
        }
    }
}

/// Equal attribute values, numbers compared by value (stores may normalise their text).
fn same(a: &AttributeValue, b: &AttributeValue) -> bool {
    match (a, b) {
        (AttributeValue::N(x), AttributeValue::N(y)) => {
            match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q)) => p == q,
                _ => x == y,
            }
        }
        (AttributeValue::L(x), AttributeValue::L(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (AttributeValue::M(x), AttributeValue::M(y)) => same_item(x, y),
        _ => a == b,
    }
}

fn same_item(x: &HashMap<String, AttributeValue>, y: &HashMap<String, AttributeValue>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_items_scanned_and_compared() {
    let ddb = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = unique("sluice-ddb");
    let def = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .unwrap()
    };
    ddb.create_table()
        .table_name(&table)
        .attribute_definitions(def("id", ScalarAttributeType::S))
        .attribute_definitions(def("n", ScalarAttributeType::N))
        .key_schema(key("id", KeyType::Hash))
        .key_schema(key("n", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| no_server("creating a DynamoDB table", e));

    // (id, n) → the item the table must end with.
    let mut want: BTreeMap<(String, i64), HashMap<String, AttributeValue>> = BTreeMap::new();
    let mut input = String::new();
    let big = json!({"id": "big", "n": 1, "blob": "x".repeat(450_000)}).to_string();
    let poison: Vec<(usize, String, &str)> = vec![
        (7, "not json".into(), "body is not valid JSON"),
        (19, "[1,2,3]".into(), "body is not a JSON object"),
        (26, r#"{"id":7,"n":1}"#.into(), "ValidationException"),
        (
            33,
            r#"{"n":3,"x":true}"#.into(),
            "the item has no key attribute `id`",
        ),
        (48, big.clone(), "ValidationException"),
    ];
    for i in 0..60i64 {
        let body = json!({
            "id": format!("user-{i}"),
            "n": i,
            "name": format!("name {i} ü"),
            "score": i as f64 + 0.5,
            "active": i % 2 == 0,
            "tags": ["a", i, null],
            "profile": {"age": 20 + i, "nested": {"list": [true, {"x": "y"}], "empty": {}}},
            "blank": "",
        });
        let kind = format!("k{}", i % 3);
        input += &envelope(&[("kind", kind.clone())], &body.to_string());
        let Value::Object(members) = &body else {
            unreachable!()
        };
        let mut item: HashMap<String, AttributeValue> = members
            .iter()
            .map(|(k, v)| (k.clone(), to_attr(v)))
            .collect();
        item.insert("kind".into(), AttributeValue::S(kind));
        want.insert((format!("user-{i}"), i), item);
        for (_, p, _) in poison.iter().filter(|(at, _, _)| *at as i64 == i) {
            input += &envelope(&[("kind", "poison".into())], p);
        }
    }
    // A later event with the key of an earlier one: the later one wins.
    let update = json!({"id": "user-5", "n": 5, "name": "updated"});
    input += &envelope(&[("kind", "new".into())], &update.to_string());
    let Value::Object(members) = &update else {
        unreachable!()
    };
    let mut item: HashMap<String, AttributeValue> = members
        .iter()
        .map(|(k, v)| (k.clone(), to_attr(v)))
        .collect();
    item.insert("kind".into(), AttributeValue::S("new".into()));
    want.insert(("user-5".into(), 5), item);

    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let pipeline = format!(
        "channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem], batch_size: 100 }}
sinks:
  ddb:
    type: dynamodb
    channel: mem
    dlq: dead
    batch_size: 100
    table: {table}
    headers: [kind]
{aws}  dl: {{ type: file, channel: dead, path: '{dead}', format: ndjson }}
",
        aws = aws_keys(),
        dead = dead.display()
    );
    let log = {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || run_stdin(&dir, &pipeline, input.as_bytes()))
            .await
            .unwrap()
    };

    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = ddb
            .scan()
            .table_name(&table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap_or_else(|e| no_server("Scan", e));
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let mut got: BTreeMap<(String, i64), HashMap<String, AttributeValue>> = BTreeMap::new();
    for item in items {
        let id = match item.get("id") {
            Some(AttributeValue::S(s)) => s.clone(),
            other => panic!("an item with key {other:?}: {item:?}"),
        };
        let n = match item.get("n") {
            Some(AttributeValue::N(n)) => n.parse::<i64>().unwrap(),
            other => panic!("an item with sort key {other:?}: {item:?}"),
        };
        assert!(
            got.insert((id.clone(), n), item).is_none(),
            "{id}/{n} twice"
        );
    }
    let keys = |m: &BTreeMap<(String, i64), HashMap<String, AttributeValue>>| {
        m.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(keys(&got), keys(&want), "the table's keys:\n{log}");
    for (k, w) in &want {
        let g = &got[k];
        assert!(same_item(g, w), "item {k:?}:\n got {g:?}\nwant {w:?}");
    }

    let dead = events(&dead);
    assert_eq!(dead.len(), poison.len(), "{dead:#?}");
    for (_, body, reason) in &poison {
        let e = dead
            .iter()
            .find(|e| e["body"].as_str() == Some(body.as_str()))
            .unwrap_or_else(|| panic!("{:.60} is not in the DLQ", body));
        let why = header(e, "sluice.dlq.reason").unwrap_or_default();
        assert!(why.contains(reason), "reason for {:.60}: {why:?}", body);
        assert_eq!(header(e, "sluice.dlq.component"), Some("ddb"));
        assert_eq!(header(e, "sluice.dlq.class"), Some("permanent"));
        assert_eq!(header(e, "kind"), Some("poison"));
    }
    assert!(log.contains("read the table's key"), "{log}");
    let _ = ddb.delete_table().table_name(&table).send().await;
}

// ---------------------------------------------------------------- Kinesis

#[tokio::test(flavor = "multi_thread")]
async fn kinesis_records_read_back_from_shard() {
    const N: usize = 300;
    const USERS: usize = 7;
    let kin = aws_sdk_kinesis::Client::new(&sdk().await);
    let stream = unique("sluice-kin");
    kin.create_stream()
        .stream_name(&stream)
        .shard_count(2)
        .send()
        .await
        .unwrap_or_else(|e| no_server("creating a Kinesis stream", e));
    // No agent yet: no log to show.
    let (limit, poll) = (Duration::from_secs(30), Duration::from_millis(200));
    wait_until(limit, poll, String::new, async || {
        let out = kin
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .unwrap_or_else(|e| no_server("DescribeStreamSummary", e));
        match out
            .stream_description_summary()
            .map(|s| s.stream_status().clone())
        {
            Some(StreamStatus::Active) => Ok(()),
            status => Err(format!("stream still {status:?}")),
        }
    })
    .await;

    // (partition key, data) in input order; every 50th body is binary.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sent: Vec<(String, Vec<u8>)> = Vec::new();
    let mut input = String::new();
    for i in 0..N {
        let user = format!("u{}", i % USERS);
        let data: Vec<u8> = if i % 50 == 0 {
            vec![0, 255, i as u8]
        } else {
            format!("record {i} ü").into_bytes()
        };
        let line = match std::str::from_utf8(&data) {
            Ok(text) => envelope(&[("user", user.clone())], text),
            Err(_) => {
                json!({"headers": {"user": user}, "body_base64": b64.encode(&data)}).to_string()
                    + "\n"
            }
        };
        input += &line;
        sent.push((user, data));
        if i == 123 {
            input += &envelope(&[("other", "x".into())], "no key");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let pipeline = format!(
        "channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem], batch_size: 64 }}
sinks:
  kin:
    type: kinesis
    channel: mem
    dlq: dead
    batch_size: 64
    stream: {stream}
    partition_key: '%{{user}}'
{aws}  dl: {{ type: file, channel: dead, path: '{dead}', format: ndjson }}
",
        aws = aws_keys(),
        dead = dead.display()
    );
    let log = {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || run_stdin(&dir, &pipeline, input.as_bytes()))
            .await
            .unwrap()
    };

    // Every shard from its start.
    let shards = kin
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap_or_else(|e| no_server("ListShards", e));
    let shard_ids: Vec<String> = shards
        .shards()
        .iter()
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert_eq!(shard_ids.len(), 2);
    // (shard, partition key, data) in shard order.
    let mut got: Vec<(String, String, Vec<u8>)> = Vec::new();
    for shard in &shard_ids {
        let it = kin
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| no_server("GetShardIterator", e));
        let mut iterator = it.shard_iterator().map(str::to_owned);
        for _ in 0..100 {
            let Some(i) = iterator.take() else { break };
            let out = kin
                .get_records()
                .shard_iterator(i)
                .limit(1000)
                .send()
                .await
                .unwrap_or_else(|e| no_server("GetRecords", e));
            for r in out.records() {
                got.push((
                    shard.clone(),
                    r.partition_key().unwrap_or_default().to_owned(),
                    r.data().clone().into_inner(),
                ));
            }
            if out.records().is_empty() {
                break;
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
        }
    }

    assert_eq!(got.len(), N, "records in the stream:\n{log}");
    let mut want_sorted: Vec<(String, Vec<u8>)> = sent.clone();
    want_sorted.sort();
    let mut got_sorted: Vec<(String, Vec<u8>)> =
        got.iter().map(|(_, k, d)| (k.clone(), d.clone())).collect();
    got_sorted.sort();
    assert!(
        want_sorted == got_sorted,
        "records differ from the events sent"
    );
    for u in 0..USERS {
        let user = format!("u{u}");
        let shards: HashSet<&str> = got
            .iter()
            .filter(|(_, k, _)| *k == user)
            .map(|(s, _, _)| s.as_str())
            .collect();
        assert_eq!(shards.len(), 1, "{user} spread over {shards:?}");
        let order: Vec<&Vec<u8>> = got
            .iter()
            .filter(|(_, k, _)| *k == user)
            .map(|(_, _, d)| d)
            .collect();
        let want: Vec<&Vec<u8>> = sent
            .iter()
            .filter(|(k, _)| *k == user)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(order, want, "{user}'s records out of order");
    }

    let dead = events(&dead);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["body"], "no key");
    assert_eq!(
        header(&dead[0], "sluice.dlq.reason"),
        Some("the partition key is empty")
    );
    let _ = kin.delete_stream().stream_name(&stream).send().await;
}
