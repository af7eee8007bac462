//! The `sqs` source: one SQS queue, standard or FIFO, read at least once.
//!
//! Each message becomes one event: the message body is the body; every message attribute
//! asked for (`attributes`) becomes a header — `String` and `Number` ones (and their custom
//! `String.x` / `Number.x` types) as their text, `Binary` ones as standard base64 — plus
//! `sqs.message_id`, `sqs.receive_count` (above 1: a redelivery), for FIFO queues
//! `sqs.group_id` and `sqs.sequence_number`, and `timestamp`: the time the message was sent,
//! in epoch milliseconds, unless the message has a `timestamp` attribute of its own.
//!
//! Reading: a long poll (`wait_time`) waits for the first messages of a batch; then more are
//! received without waiting — up to `receivers` receives at once on a standard queue — until
//! the batch has `batch_size` messages, a round of receives comes back empty, or `linger` has
//! passed. A batch is handed to the channel processor in receive order. While it is being
//! processed (a full channel may hold it up for long), a task renews the messages'
//! visibility timeout every half of it, so no other consumer sees them. Messages are deleted
//! (`DeleteMessageBatch`, ten a call, `receivers` calls at once) only after the channel
//! processor committed the batch. A message whose delete fails is logged and left: it comes
//! back after its visibility timeout, a duplicate rather than a loss. When the batch is refused, or the agent stops
//! while it is held up, the messages' visibility is set to zero so they come back at once
//! (for a FIFO queue: in their group's order) instead of after the timeout; a queue's redrive
//! policy counts these returns like any other. A crash leaves them hidden until their
//! visibility timeout ends.
//!
//! FIFO queues: SQS gives out a group's messages in order and no more of a group while some
//! of it is in flight, so batches keep each group's order; they are received one call at a
//! time so calls cannot overtake each other.
//!
//! Errors (the queue missing, credentials, the network) are logged and retried with a growing
//! pause (100 ms up to 5 s) until the agent stops.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use aws_sdk_sqs::{
    Client,
    types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
        MessageAttributeValue, MessageSystemAttributeName,
    },
};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use sluice_core::{
    config::units::HumanDuration,
    event::{Event, Headers},
    source::{ProcessError, Source, SourceContext, SourceError},
};

use super::config::SqsSourceConfig;
use crate::connectors::aws::{self, AwsConnection};

/// Header holding the message id.
pub const HEADER_MESSAGE_ID: &str = "sqs.message_id";
/// Header holding how many times the message has been received (1 on first delivery).
pub const HEADER_RECEIVE_COUNT: &str = "sqs.receive_count";
/// Header holding a FIFO message's group.
pub const HEADER_GROUP_ID: &str = "sqs.group_id";
/// Header holding a FIFO message's sequence number.
pub const HEADER_SEQUENCE_NUMBER: &str = "sqs.sequence_number";

/// Most messages one receive, delete or visibility change may name (an SQS limit).
const PER_CALL: usize = 10;
/// The longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;
/// The longest visibility timeout SQS allows.
const MAX_VISIBILITY_SECS: u64 = 12 * 3600;
/// How long a stopping source spends handing its batch back.
const RELEASE_LIMIT: Duration = Duration::from_secs(5);

const MIN_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The queue as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Queue {
    Url(String),
    Name(String),
}

pub struct SqsSource {
    name: String,
    aws: AwsConnection,
    queue: Queue,
    fifo: bool,
    wait_secs: i32,
    visibility_secs: i32,
    linger: Duration,
    receivers: usize,
    /// Message attribute names asked for; `None`: none.
    attributes: Option<Vec<String>>,
    /// The SDK's per-attempt timeout: `timeout` plus the long poll.
    request_timeout: Duration,
    batch_size: usize,

    // Running state.
    url: Option<String>,
    /// Receipt handles of a committed batch whose delete has not gone through yet.
    to_delete: Option<Arc<Vec<String>>>,
    pause: ExponentialBackoff,
}

/// Why a step did not complete.
enum Failure {
    /// A request failed (`what` names it).
    Aws { what: &'static str, error: String },
    /// The channel processor refused the batch; it may take it later.
    Process(ProcessError),
    /// The agent is stopping (channel closed) or the batch can never fit.
    Fatal(ProcessError),
}

/// Turns an SDK error into a [`Failure`] naming the request.
fn failed<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &'static str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> Failure {
    move |e| Failure::Aws {
        what,
        error: aws::describe(&e),
    }
}

impl SqsSource {
    /// Checks the settings; makes no request (the queue is looked up when run).
    pub fn new(name: &str, cfg: &SqsSourceConfig, batch_size: usize) -> Result<Self, String> {
        cfg.aws.check()?;
        let queue = match (&cfg.queue_url, &cfg.queue_name) {
            (Some(_), Some(_)) => {
                return Err("give one of `queue_url` and `queue_name`, not both".into());
            }
            (None, None) => return Err("`queue_url` or `queue_name` is required".into()),
            (Some(u), None) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(format!(
                        "`queue_url`: {u:?} is not an http:// or https:// URL"
                    ));
                }
                Queue::Url(u.clone())
            }
            (None, Some(n)) => {
                if n.is_empty() {
                    return Err("`queue_name` must not be empty".into());
                }
                Queue::Name(n.clone())
            }
        };
        let fifo = match &queue {
            Queue::Url(s) | Queue::Name(s) => s.ends_with(".fifo"),
        };
        let wait_secs = whole_seconds("wait_time", cfg.wait_time, 0, MAX_WAIT_SECS)?;
        let visibility_secs = whole_seconds(
            "visibility_timeout",
            cfg.visibility_timeout,
            1,
            MAX_VISIBILITY_SECS,
        )?;
        // The batch's visibility is renewed only once it is full: messages received first
        // must stay invisible while the rest arrive.
        if cfg.linger.0 * 2 >= cfg.visibility_timeout.0 {
            return Err(format!(
                "`linger` ({}) must be less than half of `visibility_timeout` ({}), or the first \
                 messages of a batch become visible again while it fills",
                humantime::format_duration(cfg.linger.0),
                humantime::format_duration(cfg.visibility_timeout.0)
            ));
        }
        if cfg.receivers == 0 {
            return Err("`receivers` must be at least 1".into());
        }
        if cfg.attributes.iter().any(String::is_empty) {
            return Err("`attributes`: a name must not be empty".into());
        }
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        let url = match &queue {
            Queue::Url(u) => Some(u.clone()),
            Queue::Name(_) => None,
        };
        Ok(SqsSource {
            name: name.to_owned(),
            aws: cfg.aws.clone(),
            queue,
            fifo,
            wait_secs,
            visibility_secs,
            linger: cfg.linger.0,
            receivers: cfg.receivers,
            attributes: (!cfg.attributes.is_empty()).then(|| cfg.attributes.clone()),
            request_timeout: cfg.timeout.0 + Duration::from_secs(wait_secs.unsigned_abs().into()),
            batch_size: batch_size.max(1),
            url,
            to_delete: None,
            pause: pause(),
        })
    }

    /// True for a FIFO queue (its URL or name ends with `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// The queue for logs: its URL, or its name until resolved.
    fn queue_label(&self) -> &str {
        match (&self.url, &self.queue) {
            (Some(u), _) => u,
            (None, Queue::Url(u) | Queue::Name(u)) => u,
        }
    }

    /// The queue's URL, looked up by name the first time.
    async fn queue_url(&mut self, client: &Client) -> Result<String, Failure> {
        if let Some(u) = &self.url {
            return Ok(u.clone());
        }
        let Queue::Name(name) = &self.queue else {
            unreachable!("a configured URL is set at construction")
        };
        let out = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(failed("GetQueueUrl"))?;
        let url = out.queue_url.ok_or_else(|| Failure::Aws {
            what: "GetQueueUrl",
            error: "the reply has no queue URL".into(),
        })?;
        tracing::info!(source = %self.name, queue = %name, url = %url, "found the queue");
        self.url = Some(url.clone());
        Ok(url)
    }

    /// One receive of up to `max` messages, waiting up to `wait` seconds for the first.
    async fn receive(
        &self,
        client: &Client,
        url: &str,
        max: usize,
        wait: i32,
    ) -> Result<Vec<Message>, Failure> {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, PER_CALL) as i32)
            .wait_time_seconds(wait)
            .visibility_timeout(self.visibility_secs)
            .set_message_attribute_names(self.attributes.clone())
            .set_message_system_attribute_names(Some(vec![
                MessageSystemAttributeName::SentTimestamp,
                MessageSystemAttributeName::ApproximateReceiveCount,
                MessageSystemAttributeName::MessageGroupId,
                MessageSystemAttributeName::SequenceNumber,
            ]))
            .send()
            .await
            .map_err(failed("ReceiveMessage"))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// A batch: one long poll, then receives without waiting while the batch fills.
    /// `Ok(None)`: stopping.
    async fn fill(
        &self,
        client: &Client,
        url: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Vec<Message>, Instant)>, Failure> {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            r = self.receive(client, url, self.batch_size, self.wait_secs) => r?,
        };
        let received = Instant::now();
        let mut messages = first;
        if messages.is_empty() {
            return Ok(Some((messages, received)));
        }
        let deadline = received + self.linger;
        while messages.len() < self.batch_size
            && Instant::now() < deadline
            && !shutdown.is_cancelled()
        {
            let remaining = self.batch_size - messages.len();
            let calls = if self.fifo {
                1
            } else {
                remaining.div_ceil(PER_CALL).min(self.receivers)
            };
            let rounds = futures_util::future::join_all(
                (0..calls).map(|k| self.receive(client, url, remaining - k * PER_CALL, 0)),
            )
            .await;
            let before = messages.len();
            for r in rounds {
                match r {
                    Ok(ms) => messages.extend(ms),
                    // The messages in hand are processed; the next long poll retries.
                    Err(Failure::Aws { what, error }) => {
                        tracing::debug!(source = %self.name, error = %error, "{what} failed while filling a batch");
                    }
                    Err(_) => {}
                }
            }
            if messages.len() == before {
                break;
            }
        }
        Ok(Some((messages, received)))
    }

    /// One batch: received, processed, deleted. `Ok(false)`: stop now.
    async fn step(&mut self, client: &Client, cx: &mut SourceContext) -> Result<bool, Failure> {
        let url = self.queue_url(client).await?;
        if let Some(handles) = self.to_delete.clone() {
            delete(client, &url, &handles, self.receivers, &self.name).await?;
            self.to_delete = None;
        }
        let Some((messages, received)) = self.fill(client, &url, &cx.shutdown).await? else {
            return Ok(false);
        };
        if messages.is_empty() {
            return Ok(true);
        }
        let mut events = Vec::with_capacity(messages.len());
        let mut handles = Vec::with_capacity(messages.len());
        for m in messages {
            let (handle, event) = message_event(m);
            match handle {
                Some(h) => handles.push(h),
                None => {
                    tracing::warn!(source = %self.name, "a message came without a receipt handle; it cannot be deleted")
                }
            }
            events.push(event);
        }
        let handles = Arc::new(handles);

        // Keep the batch hidden for as long as the channel processor holds it.
        let every = Duration::from_secs(self.visibility_secs.unsigned_abs().into()) / 2;
        let extender = tokio::spawn(extend_visibility(
            client.clone(),
            url.clone(),
            Arc::clone(&handles),
            self.visibility_secs,
            received + every,
            every,
            self.name.clone(),
        ));
        let processed = tokio::select! {
            biased;
            r = cx.out.process(events) => Some(r),
            _ = cx.shutdown.cancelled() => None,
        };
        extender.abort();
        let _ = extender.await;

        match processed {
            Some(Ok(())) => {
                self.to_delete = Some(Arc::clone(&handles));
                delete(client, &url, &handles, self.receivers, &self.name).await?;
                self.to_delete = None;
                Ok(true)
            }
            None => {
                // Stopping with the batch held up: hand it back for others to take now.
                let hand_back = release(client, &url, &handles, &self.name);
                let _ = tokio::time::timeout(RELEASE_LIMIT, hand_back).await;
                Ok(false)
            }
            Some(Err(e)) => {
                release(client, &url, &handles, &self.name).await;
                if e.is_fatal() {
                    Err(Failure::Fatal(e))
                } else {
                    Err(Failure::Process(e))
                }
            }
        }
    }
}

#[async_trait]
impl Source for SqsSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let mut this = *self;
        let sdk = aws::sdk_config(&this.aws, this.request_timeout).await;
        let client = Client::new(&sdk);
        tracing::info!(
            source = %this.name,
            queue = %this.queue_label(),
            region = %aws::region_name(&sdk),
            fifo = this.fifo,
            "reading an sqs queue"
        );
        while !cx.shutdown.is_cancelled() {
            let (why, error) = match this.step(&client, &mut cx).await {
                Ok(true) => {
                    this.pause = pause();
                    continue;
                }
                Ok(false) => break,
                Err(Failure::Fatal(e)) => return Err(e.into()),
                Err(Failure::Process(e)) => (
                    "batch not taken; its messages were handed back".to_owned(),
                    e.to_string(),
                ),
                Err(Failure::Aws { what, error }) => (format!("sqs {what} failed"), error),
            };
            let d = this.pause.next().unwrap_or(MAX_PAUSE);
            tracing::warn!(source = %this.name, queue = %this.queue_label(), error = %error, retry_in = ?d, "{why}");
            tokio::select! {
                _ = cx.shutdown.cancelled() => break,
                _ = tokio::time::sleep(d) => {}
            }
        }
        Ok(())
    }
}

/// The source's retry pauses: 100 ms doubling up to 5 s, with jitter.
fn pause() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(MIN_PAUSE)
        .with_max_delay(MAX_PAUSE)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A duration that must be whole seconds within `min..=max`, as SQS takes it.
fn whole_seconds(field: &str, d: HumanDuration, min: u64, max: u64) -> Result<i32, String> {
    let secs = d.0.as_secs();
    if d.0.subsec_nanos() != 0 || secs < min || secs > max {
        return Err(format!(
            "`{field}` must be whole seconds from {min}s to {}, not {d}",
            HumanDuration(Duration::from_secs(max))
        ));
    }
    // At most 12 h: always fits.
    Ok(i32::try_from(secs).unwrap_or(i32::MAX))
}

/// One message as `(receipt handle, event)`.
fn message_event(m: Message) -> (Option<String>, Event) {
    let Message {
        message_id,
        receipt_handle,
        body,
        attributes,
        message_attributes,
        ..
    } = m;
    let mut headers = Headers::default();
    if let Some(attrs) = message_attributes {
        // The SDK hands them over in a hash map: sorted, headers come in a stable order.
        let mut attrs: Vec<(String, MessageAttributeValue)> = attrs.into_iter().collect();
        attrs.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        for (name, value) in attrs {
            if let Some(text) = attribute_text(value) {
                headers.insert(name, text);
            }
        }
    }
    if let Some(mut sys) = attributes {
        if let Some(ts) = sys.remove(&MessageSystemAttributeName::SentTimestamp)
            && !headers.contains("timestamp")
        {
            headers.insert("timestamp", ts);
        }
        for (name, header) in [
            (MessageSystemAttributeName::MessageGroupId, HEADER_GROUP_ID),
            (
                MessageSystemAttributeName::SequenceNumber,
                HEADER_SEQUENCE_NUMBER,
            ),
            (
                MessageSystemAttributeName::ApproximateReceiveCount,
                HEADER_RECEIVE_COUNT,
            ),
        ] {
            if let Some(v) = sys.remove(&name) {
                headers.insert(header, v);
            }
        }
    }
    if let Some(id) = message_id {
        headers.insert(HEADER_MESSAGE_ID, id);
    }
    let body = Bytes::from(body.unwrap_or_default());
    (receipt_handle, Event { headers, body })
}

/// A message attribute's header value: the text of `String` and `Number` attributes (and
/// their custom `String.x` / `Number.x` types), base64 of `Binary` ones; `None` for list
/// types (reserved by SQS, never sent).
fn attribute_text(v: MessageAttributeValue) -> Option<String> {
    let MessageAttributeValue {
        string_value,
        binary_value,
        data_type,
        ..
    } = v;
    if data_type.starts_with("Binary") {
        binary_value.map(|b| base64::engine::general_purpose::STANDARD.encode(b.into_inner()))
    } else {
        string_value
    }
}

/// Deletes a committed batch, ten messages a call, `parallel` calls at once. A failed call
/// is an error (the batch is deleted again later); a message the queue refuses to delete is
/// logged and left.
async fn delete(
    client: &Client,
    url: &str,
    handles: &[String],
    parallel: usize,
    source: &str,
) -> Result<(), Failure> {
    // Collected first: a lazy `map` closure here trips the compiler's `Send` check of the
    // source's future (higher-ranked lifetimes).
    let calls: Vec<_> = handles
        .chunks(PER_CALL)
        .map(|chunk| delete_chunk(client, url, chunk, source))
        .collect();
    let results: Vec<Result<(), Failure>> = futures_util::stream::iter(calls)
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// One `DeleteMessageBatch` of up to ten messages.
async fn delete_chunk(
    client: &Client,
    url: &str,
    chunk: &[String],
    source: &str,
) -> Result<(), Failure> {
    let entries = chunk
        .iter()
        .enumerate()
        .map(|(i, h)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Aws {
            what: "DeleteMessageBatch",
            error: e.to_string(),
        })?;
    let out = client
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(failed("DeleteMessageBatch"))?;
    for f in out.failed() {
        tracing::warn!(
            source = %source,
            code = %f.code(),
            error = %f.message().unwrap_or_default(),
            "a committed message could not be deleted; it will be delivered again"
        );
    }
    Ok(())
}

/// Sets the visibility timeout of every message of a batch to `secs`; the number of messages
/// the queue refused, or the error of a failed call.
async fn change_visibility(
    client: &Client,
    url: &str,
    handles: &[String],
    secs: i32,
) -> Result<usize, String> {
    let mut refused = 0;
    for chunk in handles.chunks(PER_CALL) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, h)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(h)
                    .visibility_timeout(secs)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let out = client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| aws::describe(&e))?;
        refused += out.failed().len();
    }
    Ok(refused)
}

/// Makes a batch visible again at once (best effort: otherwise it comes back after its
/// visibility timeout).
async fn release(client: &Client, url: &str, handles: &[String], source: &str) {
    match change_visibility(client, url, handles, 0).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::debug!(source = %source, messages = n, "messages not handed back; they return after their visibility timeout")
        }
        Err(e) => {
            tracing::warn!(source = %source, error = %e, "could not hand the batch back; it returns after its visibility timeout")
        }
    }
}

/// Renews the batch's visibility timeout at `first`, then every `every`, until aborted.
async fn extend_visibility(
    client: Client,
    url: String,
    handles: Arc<Vec<String>>,
    secs: i32,
    first: Instant,
    every: Duration,
    source: String,
) {
    let mut tick = tokio::time::interval_at(first, every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match change_visibility(&client, &url, &handles, secs).await {
            Ok(0) => {
                tracing::debug!(source = %source, messages = handles.len(), "batch still in progress; visibility extended")
            }
            Ok(n) => tracing::warn!(
                source = %source,
                messages = n,
                "visibility of messages still in progress could not be extended; they may be delivered twice"
            ),
            Err(e) => tracing::warn!(
                source = %source,
                error = %e,
                "extending the visibility of a batch in progress failed; it may be delivered twice"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::Blob;

    use super::*;

    fn cfg() -> SqsSourceConfig {
        SqsSourceConfig {
            aws: AwsConnection::default(),
            queue_url: Some("http://127.0.0.1:5000/123456789012/q".into()),
            queue_name: None,
            wait_time: HumanDuration(Duration::from_secs(20)),
            visibility_timeout: HumanDuration(Duration::from_secs(30)),
            linger: HumanDuration(Duration::from_millis(100)),
            receivers: 4,
            attributes: vec!["All".into()],
            timeout: HumanDuration(Duration::from_secs(10)),
        }
    }

    fn attr(data_type: &str, s: Option<&str>, b: Option<&[u8]>) -> MessageAttributeValue {
        let mut v = MessageAttributeValue::builder().data_type(data_type);
        if let Some(s) = s {
            v = v.string_value(s);
        }
        if let Some(b) = b {
            v = v.binary_value(Blob::new(b.to_vec()));
        }
        v.build().unwrap()
    }

    #[test]
    fn attributes_and_system_attributes_become_headers() {
        let m = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body("hello ü")
            .message_attributes("kind", attr("String", Some("click"), None))
            .message_attributes("n", attr("Number", Some("42.5"), None))
            .message_attributes("custom", attr("Number.int", Some("7"), None))
            .message_attributes("bin", attr("Binary", None, Some(&[0, 255, 1])))
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000123")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::MessageGroupId, "g1")
            .attributes(MessageSystemAttributeName::SequenceNumber, "1000")
            .attributes(MessageSystemAttributeName::SenderId, "not a header")
            .build();
        let (handle, e) = message_event(m);
        assert_eq!(handle.as_deref(), Some("rh-1"));
        assert_eq!(&e.body[..], "hello ü".as_bytes());
        let h: Vec<(&str, &str)> = e.headers.iter().collect();
        assert_eq!(
            h,
            [
                ("bin", "AP8B"),
                ("custom", "7"),
                ("kind", "click"),
                ("n", "42.5"),
                ("timestamp", "1700000000123"),
                (HEADER_GROUP_ID, "g1"),
                (HEADER_SEQUENCE_NUMBER, "1000"),
                (HEADER_RECEIVE_COUNT, "2"),
                (HEADER_MESSAGE_ID, "m-1"),
            ]
        );
    }

    #[test]
    fn a_timestamp_attribute_wins_over_the_send_time() {
        let m = Message::builder()
            .message_id("m")
            .body("")
            .message_attributes("timestamp", attr("Number", Some("5"), None))
            .attributes(MessageSystemAttributeName::SentTimestamp, "9")
            .build();
        let (handle, e) = message_event(m);
        assert!(handle.is_none());
        assert_eq!(e.headers.get("timestamp"), Some("5"));
        assert!(e.body.is_empty());
        let plain = Message::builder().body("x").build();
        let (_, e) = message_event(plain);
        assert!(e.headers.is_empty());
    }

    #[test]
    fn settings_are_checked_by_field() {
        let err = |f: &dyn Fn(&mut SqsSourceConfig)| {
            let mut c = cfg();
            f(&mut c);
            SqsSource::new("s", &c, 100).err().unwrap_or_default()
        };
        assert_eq!(err(&|_| {}), "");
        assert!(err(&|c| c.queue_name = Some("q".into())).contains("not both"));
        assert!(err(&|c| c.queue_url = None).contains("is required"));
        assert!(err(&|c| c.queue_url = Some("sqs://q".into())).starts_with("`queue_url`"));
        assert!(
            err(&|c| c.wait_time = HumanDuration(Duration::from_secs(21)))
                .starts_with("`wait_time`")
        );
        assert!(
            err(&|c| c.wait_time = HumanDuration(Duration::from_millis(1500)))
                .starts_with("`wait_time`")
        );
        assert!(
            err(&|c| c.visibility_timeout = HumanDuration(Duration::ZERO))
                .starts_with("`visibility_timeout`")
        );
        assert!(
            err(&|c| c.visibility_timeout = HumanDuration(Duration::from_secs(13 * 3600)))
                .starts_with("`visibility_timeout`")
        );
        assert!(err(&|c| c.receivers = 0).starts_with("`receivers`"));
        assert!(err(&|c| c.attributes = vec![String::new()]).starts_with("`attributes`"));
        assert!(err(&|c| c.timeout = HumanDuration(Duration::ZERO)).starts_with("`timeout`"));

        let mut c = cfg();
        c.wait_time = HumanDuration(Duration::ZERO);
        c.attributes = Vec::new();
        let s = SqsSource::new("s", &c, 0).unwrap();
        assert_eq!(s.batch_size, 1);
        assert!(s.attributes.is_none());
        assert_eq!(s.request_timeout, Duration::from_secs(10));
        assert!(!s.is_fifo());

        let mut c = cfg();
        c.queue_url = None;
        c.queue_name = Some("orders.fifo".into());
        let s = SqsSource::new("s", &c, 10).unwrap();
        assert!(s.is_fifo());
        assert!(s.url.is_none());
        assert_eq!(s.queue_label(), "orders.fifo");
        assert_eq!(s.request_timeout, Duration::from_secs(30));
    }
}
