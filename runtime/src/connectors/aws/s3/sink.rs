//! The `s3` sink: each batch becomes objects, one or more per resolved key prefix.
//!
//! Events are grouped by the rendering of the `key` template (groups keep the order in which
//! their first event appears, events keep their order within a group), each group is split
//! into objects by `roll_count` and `roll_size`, encoded with the codec and optionally
//! compressed. Objects never span two batches: `roll_interval` (the runner's linger) and the
//! sink's `batch_size` are what make objects large.
//!
//! Object names are derived from the batch, never from a clock or a counter, so a batch that
//! is delivered again (after a failed upload, or after a crash between the upload and the
//! channel commit) overwrites its own objects instead of adding new ones:
//!
//! `<prefix><position:020>-<chunk:04>-<fingerprint:08x><ext>`
//!
//! - `position`: the channel position of the batch (the sequence number of its first event;
//!   stable across restarts for the `rocksdb` channel). A channel that gives none gets a
//!   number derived from a SHA-256 of the whole batch, so identical batches get identical
//!   names (and names are then not in time order).
//! - `chunk`: the object's index within its prefix's group in this batch.
//! - `fingerprint`: the first 32 bits of a SHA-256 of the object's first event (headers and
//!   body). A channel whose numbering restarts (the memory channel in a new process, a drained
//!   `rocksdb` channel reopened) reuses positions; the fingerprint keeps a new batch from
//!   overwriting an old batch's objects under the same prefix.
//!
//! A batch delivered again after a restart starts at the same event and holds the same events
//! or more (everything after them stays queued), and grouping and rolling are prefix-stable,
//! so it produces the same names, each with the same content or, for each group's last
//! object, a superset of it: no duplicates. This needs the same settings and a `key` that
//! renders the same for the same event (time escapes read the `timestamp` header when there
//! is one; without it they read the clock at delivery, which may differ on a retry).
//!
//! Delivery is all or nothing per batch: everything is encoded (and compressed) before
//! anything is sent, and a codec error makes those objects' events poison (to the DLQ) while
//! the rest is retried without anything having been uploaded, so the retry plans the same
//! objects over the remaining events. Once uploads have started, any retriable failure makes
//! the whole batch retriable: a retry of a subset would re-chunk it and overwrite completed
//! objects with different content. An object the service refuses for good (a key that is too
//! long, say) sends its own events to the DLQ once every other object is written. The take
//! commits only after every object is complete (a multipart upload completed).

use std::{collections::HashMap, fmt::Write as _, io::Write as _, ops::Range, time::Duration};

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use sluice_core::{
    event::{
        Event,
        codec::{self, Codec, CodecName},
        template::Template,
    },
    sink::{Batch, DeliveryError, Sink},
};

use super::config::{Compression, MAX_PART_SIZE, MIN_PART_SIZE, S3SinkConfig};
use crate::connectors::aws::{self, AwsConnection, ErrorClass};

/// Objects of one batch uploaded at once.
const OBJECT_CONCURRENCY: usize = 4;
/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 4;
/// S3's most parts per upload; larger payloads get larger parts.
const MAX_PARTS: u64 = 10_000;
/// Encode buffers kept between batches (each up to about `roll_size`).
const MAX_SPARE: usize = 4;
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// When an object is complete.
#[derive(Debug, Clone, Copy)]
struct Roll {
    count: Option<u64>,
    size: u64,
}

impl Roll {
    /// True once an object holding `events` events of `bytes` bytes must not grow: the event
    /// that reaches a limit is the object's last, so a single large event still gets an object.
    fn full(self, events: u64, bytes: u64) -> bool {
        self.count.is_some_and(|c| events >= c) || bytes >= self.size
    }
}

/// Splits items of the given sizes into consecutive runs, each closed by [`Roll::full`].
fn split(sizes: impl IntoIterator<Item = u64>, roll: Roll) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut end, mut n, mut bytes) = (0, 0, 0, 0);
    for (i, size) in sizes.into_iter().enumerate() {
        n += 1;
        bytes += size;
        end = i + 1;
        if roll.full(n, bytes) {
            out.push(start..end);
            (start, n, bytes) = (end, 0, 0);
        }
    }
    if start < end {
        out.push(start..end);
    }
    out
}

/// The events of a batch that share a key prefix, by index, in batch order.
#[derive(Debug)]
struct Group {
    prefix: String,
    events: Vec<usize>,
}

/// One object to write: its full key, its events (`groups[group].events[range]`) and its
/// payload (encoded, then compressed).
#[derive(Debug)]
struct Object {
    key: String,
    group: usize,
    range: Range<usize>,
    body: Vec<u8>,
}

/// What an upload needs besides the key and the payload.
struct Target<'a> {
    bucket: &'a str,
    content_type: &'a str,
    content_encoding: Option<&'static str>,
    part_size: u64,
}

/// Why an object was not written, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    class: ErrorClass,
    reason: String,
}

pub struct S3Sink {
    name: String,
    bucket: String,
    key: Template,
    /// The rendered prefix when the template cannot vary between events.
    constant_prefix: Option<String>,
    codec: Box<dyn Codec>,
    compression: Compression,
    /// Appended to object names: the compression's, or `.parquet`.
    extension: &'static str,
    roll: Roll,
    part_size: u64,
    content_type: String,
    timeout: Duration,
    aws: AwsConnection,
    /// Made on the first delivery.
    client: Option<Client>,
    groups: Vec<Group>,
    /// Prefix → index into `groups`.
    index: HashMap<String, usize>,
    /// The current event's rendered prefix (reused to avoid an allocation per event).
    prefix_buf: String,
    /// Encode buffers handed back after upload, reused by the next batch.
    spare: Vec<Vec<u8>>,
}

impl S3Sink {
    /// Checks the settings; the client is made on the first delivery (nothing is contacted
    /// here, so an agent starts while S3 is unreachable).
    pub fn new(name: &str, cfg: &S3SinkConfig, codec: Box<dyn Codec>) -> Result<Self, String> {
        if cfg.bucket.trim().is_empty() {
            return Err("`bucket` must not be empty".into());
        }
        let key = Template::parse(&cfg.key).map_err(|e| format!("`key`: {e}"))?;
        let constant_prefix = key.is_constant().then(|| {
            let mut p = String::new();
            key.render(&Event::default(), &mut p);
            p
        });
        if cfg.roll_count == Some(0) {
            return Err("`roll_count` must be at least 1".into());
        }
        if cfg.roll_size.0 == 0 {
            return Err("`roll_size` must be at least 1 byte".into());
        }
        if cfg.part_size.0 < MIN_PART_SIZE {
            return Err(format!(
                "`part_size` must be at least 5MiB (S3's smallest part), not {} bytes",
                cfg.part_size.0
            ));
        }
        if cfg.part_size.0 > MAX_PART_SIZE {
            return Err(format!(
                "`part_size` must be at most 5GiB (S3's largest part), not {} bytes",
                cfg.part_size.0
            ));
        }
        if cfg.roll_interval.is_some_and(|d| d.0.is_zero()) {
            return Err("`roll_interval` must be more than 0".into());
        }
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        let content_type = match (&cfg.content_type, codec.builtin()) {
            (Some(t), _) if t.trim().is_empty() => {
                return Err("`content_type` must not be empty".into());
            }
            (Some(t), _) => t.clone(),
            (None, None) if cfg.is_parquet() => "application/vnd.apache.parquet".into(),
            (None, Some(CodecName::Lines)) => "text/plain".into(),
            (None, Some(CodecName::Ndjson)) => "application/x-ndjson".into(),
            (None, None) => "application/octet-stream".into(),
        };
        Ok(S3Sink {
            name: name.to_owned(),
            bucket: cfg.bucket.clone(),
            key,
            constant_prefix,
            codec,
            compression: cfg.compression,
            extension: if cfg.is_parquet() {
                ".parquet"
            } else {
                cfg.compression.extension()
            },
            roll: Roll {
                count: cfg.roll_count,
                size: cfg.roll_size.0,
            },
            part_size: cfg.part_size.0,
            content_type,
            timeout: cfg.timeout.0,
            aws: cfg.aws.clone(),
            client: None,
            groups: Vec::new(),
            index: HashMap::new(),
            prefix_buf: String::new(),
            spare: Vec::new(),
        })
    }

    /// The client in hand, or a new one.
    async fn client(&mut self) -> Client {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let sdk = aws::sdk_config(&self.aws, self.timeout).await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(self.aws.force_path_style)
            .build();
        tracing::info!(
            sink = %self.name,
            bucket = %self.bucket,
            region = aws::region_name(&sdk),
            endpoint = self.aws.endpoint.as_deref().unwrap_or("default"),
            "s3 client configured"
        );
        let client = Client::from_conf(conf);
        self.client = Some(client.clone());
        client
    }

    /// Fills `groups` with the batch's events by rendered prefix, in first-seen order.
    fn group(&mut self, batch: &[Event]) {
        self.groups.clear();
        self.index.clear();
        if let Some(p) = &self.constant_prefix {
            self.groups.push(Group {
                prefix: p.clone(),
                events: (0..batch.len()).collect(),
            });
            return;
        }
        for (i, e) in batch.iter().enumerate() {
            self.key.render(e, &mut self.prefix_buf);
            match self.index.get(self.prefix_buf.as_str()) {
                Some(&g) => self.groups[g].events.push(i),
                None => {
                    self.index
                        .insert(self.prefix_buf.clone(), self.groups.len());
                    self.groups.push(Group {
                        prefix: self.prefix_buf.clone(),
                        events: vec![i],
                    });
                }
            }
        }
    }

    /// Groups, splits, names and encodes `batch`; nothing is sent. On codec errors: the
    /// events of every object that could not be encoded, each with the reason.
    fn plan(
        &mut self,
        position: Option<u64>,
        batch: &[Event],
    ) -> Result<Vec<Object>, Vec<(usize, String)>> {
        self.group(batch);
        let base = position.unwrap_or_else(|| batch_digest(batch));
        let ext = self.extension;
        let roll = self.roll;
        let builtin = self.codec.builtin();
        let mut objects = Vec::new();
        let mut failed = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let object = |chunk: usize, range: Range<usize>, body: Vec<u8>| Object {
                key: object_key(
                    &group.prefix,
                    base,
                    chunk,
                    &batch[group.events[range.start]],
                    ext,
                ),
                group: g,
                range,
                body,
            };
            match builtin {
                // Encoded event by event straight into the object's buffer, so `roll_size`
                // counts the exact payload.
                Some(c) => {
                    let mut left: u64 = group
                        .events
                        .iter()
                        .map(|&i| batch[i].body.len() as u64 + 1)
                        .sum();
                    let (mut chunk, mut start) = (0, 0);
                    let mut buf = take_spare(&mut self.spare, left.min(roll.size));
                    for (j, &i) in group.events.iter().enumerate() {
                        let e = &batch[i];
                        codec::encode_into(c, e, &mut buf);
                        left = left.saturating_sub(e.body.len() as u64 + 1);
                        if roll.full((j + 1 - start) as u64, buf.len() as u64) {
                            let next = take_spare(&mut self.spare, left.min(roll.size));
                            let body = std::mem::replace(&mut buf, next);
                            objects.push(object(chunk, start..j + 1, body));
                            (chunk, start) = (chunk + 1, j + 1);
                        }
                    }
                    if start < group.events.len() {
                        objects.push(object(chunk, start..group.events.len(), buf));
                    } else {
                        give_back(&mut self.spare, buf);
                    }
                }
                // A plugin encodes an object in one call; sizes are estimated from the events.
                None => {
                    let sizes = group.events.iter().map(|&i| batch[i].size() as u64);
                    for (chunk, range) in split(sizes, roll).into_iter().enumerate() {
                        let idx = &group.events[range.clone()];
                        let mut body = take_spare(&mut self.spare, 0);
                        let first = idx[0];
                        let encoded = if idx[idx.len() - 1] + 1 - first == idx.len() {
                            self.codec
                                .encode(&batch[first..first + idx.len()], &mut body)
                        } else {
                            let events: Vec<Event> =
                                idx.iter().map(|&i| batch[i].clone()).collect();
                            self.codec.encode(&events, &mut body)
                        };
                        match encoded {
                            Ok(()) => objects.push(object(chunk, range, body)),
                            Err(why) => {
                                failed.extend(idx.iter().map(|&i| (i, why.clone())));
                                give_back(&mut self.spare, body);
                            }
                        }
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(objects)
        } else {
            for o in objects {
                give_back(&mut self.spare, o.body);
            }
            Err(failed)
        }
    }

    /// Compresses every object's payload off the async threads; the encode buffers go back
    /// to the spares.
    async fn compress_all(&mut self, objects: Vec<Object>) -> Result<Vec<Object>, DeliveryError> {
        let c = self.compression;
        let outs: Vec<Vec<u8>> = objects
            .iter()
            .map(|o| take_spare(&mut self.spare, o.body.len() as u64 / 4))
            .collect();
        let (objects, encoded) = tokio::task::spawn_blocking(move || {
            let mut objects = objects;
            let mut freed = Vec::with_capacity(objects.len());
            for (o, mut out) in objects.iter_mut().zip(outs) {
                compress(c, &o.body, &mut out)?;
                freed.push(std::mem::replace(&mut o.body, out));
            }
            Ok::<_, std::io::Error>((objects, freed))
        })
        .await
        .map_err(|e| DeliveryError::retriable(format!("compression task failed: {e}")))??;
        for b in encoded {
            give_back(&mut self.spare, b);
        }
        Ok(objects)
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut objects = match self.plan(batch.position, batch) {
            Ok(o) => o,
            Err(rejected) => {
                let mut poison = vec![false; batch.len()];
                for (i, _) in &rejected {
                    poison[*i] = true;
                }
                let retriable = (0..batch.len()).filter(|&i| !poison[i]).collect();
                return Err(DeliveryError::Partial {
                    rejected,
                    retriable,
                });
            }
        };
        if self.compression != Compression::None {
            objects = self.compress_all(objects).await?;
        }
        let client = self.client().await;
        let bodies: Vec<Bytes> = objects
            .iter_mut()
            .map(|o| Bytes::from(std::mem::take(&mut o.body)))
            .collect();
        let bytes: usize = bodies.iter().map(Bytes::len).sum();
        let target = Target {
            bucket: &self.bucket,
            content_type: &self.content_type,
            content_encoding: self.compression.content_encoding(),
            part_size: self.part_size,
        };
        let results: Vec<(usize, Result<(), Failure>)> = stream::iter(0..objects.len())
            .map(|k| {
                let sent = upload(&client, &target, &objects[k].key, bodies[k].clone());
                async move { (k, sent.await) }
            })
            .buffer_unordered(OBJECT_CONCURRENCY)
            .collect()
            .await;
        // The SDK has dropped its handles on the payloads: reuse their memory.
        for b in bodies {
            if let Ok(m) = b.try_into_mut() {
                give_back(&mut self.spare, Vec::from(m));
            }
        }

        let (mut failures, mut retry, mut rejected) = (0usize, None, Vec::new());
        for (k, result) in results {
            let Err(f) = result else { continue };
            failures += 1;
            let o = &objects[k];
            match f.class {
                ErrorClass::Retriable => {
                    retry.get_or_insert_with(|| format!("{}: {}", o.key, f.reason));
                }
                ErrorClass::Permanent => {
                    tracing::warn!(
                        sink = %self.name, key = %o.key, error = %f.reason,
                        "object refused; its events go to the dead-letter queue"
                    );
                    let why = format!("s3://{}/{}: {}", self.bucket, o.key, f.reason);
                    let events = &self.groups[o.group].events[o.range.clone()];
                    rejected.extend(events.iter().map(|&i| (i, why.clone())));
                }
            }
        }
        if let Some(first) = retry {
            return Err(DeliveryError::retriable(format!(
                "{failures} of {} objects not written (first: {first})",
                objects.len()
            )));
        }
        if !rejected.is_empty() {
            return Err(DeliveryError::Partial {
                rejected,
                retriable: Vec::new(),
            });
        }
        tracing::debug!(
            sink = %self.name, events = batch.len(), objects = objects.len(), bytes,
            "batch written"
        );
        Ok(())
    }
}

/// Writes one object: PutObject up to `part_size`, a multipart upload beyond.
async fn upload(client: &Client, t: &Target<'_>, key: &str, body: Bytes) -> Result<(), Failure> {
    if body.len() as u64 > t.part_size {
        return multipart(client, t, key, body).await;
    }
    client
        .put_object()
        .bucket(t.bucket)
        .key(key)
        .content_type(t.content_type)
        .set_content_encoding(t.content_encoding.map(str::to_owned))
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| failure("PutObject", &e))?;
    Ok(())
}

/// A multipart upload, aborted (best effort) when any step fails: the object appears only
/// when the upload completes, so a failed one leaves nothing readable behind.
async fn multipart(client: &Client, t: &Target<'_>, key: &str, body: Bytes) -> Result<(), Failure> {
    let created = client
        .create_multipart_upload()
        .bucket(t.bucket)
        .key(key)
        .content_type(t.content_type)
        .set_content_encoding(t.content_encoding.map(str::to_owned))
        .send()
        .await
        .map_err(|e| failure("CreateMultipartUpload", &e))?;
    let Some(upload_id) = created.upload_id().map(str::to_owned) else {
        return Err(Failure {
            class: ErrorClass::Retriable,
            reason: "CreateMultipartUpload returned no upload id".into(),
        });
    };
    let result = upload_parts(client, t, key, &upload_id, &body).await;
    if result.is_err()
        && let Err(e) = client
            .abort_multipart_upload()
            .bucket(t.bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await
    {
        tracing::warn!(
            key, upload_id = %upload_id, error = %aws::describe(&e),
            "could not abort a failed multipart upload (a bucket lifecycle rule removes such leftovers)"
        );
    }
    result
}

/// Uploads the parts, a few at a time, then completes the upload.
async fn upload_parts(
    client: &Client,
    t: &Target<'_>,
    key: &str,
    upload_id: &str,
    body: &Bytes,
) -> Result<(), Failure> {
    let ranges = part_ranges(body.len() as u64, t.part_size);
    let mut parts = Vec::with_capacity(ranges.len());
    let mut uploads = stream::iter(ranges.into_iter().enumerate())
        .map(|(i, r)| {
            // S3 part numbers start at 1; at most MAX_PARTS of them.
            let number = i as i32 + 1;
            let send = client
                .upload_part()
                .bucket(t.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(
                    body.slice(r.start as usize..r.end as usize),
                ))
                .send();
            async move { (number, send.await) }
        })
        .buffer_unordered(PART_CONCURRENCY);
    while let Some((number, result)) = uploads.next().await {
        let out = result.map_err(|e| failure("UploadPart", &e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(t.bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| failure("CompleteMultipartUpload", &e))?;
    Ok(())
}

/// Byte ranges of the parts: `part_size` each (the last one shorter), larger when the payload
/// would otherwise need more than [`MAX_PARTS`].
fn part_ranges(len: u64, part_size: u64) -> Vec<Range<u64>> {
    let size = part_size.max(len.div_ceil(MAX_PARTS)).max(1);
    (0..len.div_ceil(size))
        .map(|i| i * size..((i + 1) * size).min(len))
        .collect()
}

/// Classifies an SDK error (see [`aws::classify`]) and describes it with the operation.
fn failure<E>(op: &str, e: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    Failure {
        class: aws::classify(e),
        reason: format!("{op}: {}", aws::describe(e)),
    }
}

/// `<prefix><position:020>-<chunk:04>-<fingerprint of the first event:08x><ext>`.
fn object_key(prefix: &str, position: u64, chunk: usize, first: &Event, ext: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + 40 + ext.len());
    let _ = write!(
        key,
        "{prefix}{position:020}-{chunk:04}-{:08x}{ext}",
        fingerprint(first)
    );
    key
}

/// Feeds an event to a hash, every field length-prefixed so no two events hash alike by
/// shifting bytes between fields.
fn hash_event(h: &mut Sha256, e: &Event) {
    h.update((e.headers.len() as u64).to_le_bytes());
    for (k, v) in e.headers.iter() {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    h.update((e.body.len() as u64).to_le_bytes());
    h.update(&e.body[..]);
}

/// The first 32 bits of the SHA-256 of one event.
fn fingerprint(e: &Event) -> u32 {
    let mut h = Sha256::new();
    hash_event(&mut h, e);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Stands in for the channel position when there is none: the first 64 bits of the SHA-256
/// of the whole batch.
fn batch_digest(batch: &[Event]) -> u64 {
    let mut h = Sha256::new();
    h.update((batch.len() as u64).to_le_bytes());
    for e in batch {
        hash_event(&mut h, e);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// Compresses `input` into `out` (cleared first). Both encoders are deterministic (gzip's
/// header carries no time), so a retried batch writes the same bytes.
fn compress(c: Compression, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    match c {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            e.write_all(input)?;
            e.finish()?;
        }
        Compression::Zstd => zstd::stream::copy_encode(input, out, ZSTD_LEVEL)?,
    }
    Ok(())
}

/// A cleared buffer (a spare one when there is one) with room for about `want` bytes.
fn take_spare(spare: &mut Vec<Vec<u8>>, want: u64) -> Vec<u8> {
    let mut b = spare.pop().unwrap_or_default();
    b.reserve(usize::try_from(want).unwrap_or(0));
    b
}

fn give_back(spare: &mut Vec<Vec<u8>>, mut b: Vec<u8>) {
    if spare.len() < MAX_SPARE && b.capacity() > 0 {
        b.clear();
        spare.push(b);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use sluice_core::{
        config::units::{ByteSize, HumanDuration},
        event::codec::CodecRef,
    };

    fn cfg(key: &str) -> S3SinkConfig {
        S3SinkConfig {
            aws: AwsConnection::default(),
            bucket: "b".into(),
            key: key.into(),
            format: CodecRef::Builtin(CodecName::Lines),
            parquet: None,
            compression: Compression::None,
            roll_count: None,
            roll_size: ByteSize(8 << 20),
            roll_interval: None,
            part_size: ByteSize(8 << 20),
            content_type: None,
            timeout: HumanDuration(Duration::from_secs(30)),
        }
    }

    fn sink(c: &S3SinkConfig) -> S3Sink {
        S3Sink::new("s", c, Box::new(CodecName::Lines)).unwrap()
    }

    fn ev(topic: &str, body: &str) -> Event {
        Event::new(body.to_owned()).with_header("topic", topic)
    }

    /// `(prefix, position, chunk, fingerprint)` of a key made by [`object_key`] (no `ext`).
    fn parts(key: &str) -> (&str, &str, &str, &str) {
        let (rest, fp) = key.rsplit_once('-').unwrap();
        let (rest, chunk) = rest.rsplit_once('-').unwrap();
        let (prefix, pos) = rest.split_at(rest.len() - 20);
        (prefix, pos, chunk, fp)
    }

    /// `(key, payload as text)` of each planned object.
    fn plan(s: &mut S3Sink, position: Option<u64>, batch: &[Event]) -> Vec<(String, String)> {
        s.plan(position, batch)
            .unwrap()
            .into_iter()
            .map(|o| (o.key, String::from_utf8(o.body).unwrap()))
            .collect()
    }

    #[test]
    fn settings_are_checked_by_field() {
        let err = |f: &dyn Fn(&mut S3SinkConfig)| {
            let mut c = cfg("k/");
            f(&mut c);
            S3Sink::new("s", &c, Box::new(CodecName::Lines))
                .err()
                .unwrap_or_default()
        };
        assert_eq!(err(&|_| {}), "");
        assert!(err(&|c| c.bucket = " ".into()).starts_with("`bucket`"));
        assert!(err(&|c| c.key = "a/%".into()).starts_with("`key`:"));
        assert!(err(&|c| c.roll_count = Some(0)).starts_with("`roll_count`"));
        assert!(err(&|c| c.roll_size = ByteSize(0)).starts_with("`roll_size`"));
        assert!(err(&|c| c.part_size = ByteSize((5 << 20) - 1)).starts_with("`part_size`"));
        assert!(err(&|c| c.part_size = ByteSize((5 << 30) + 1)).starts_with("`part_size`"));
        assert_eq!(err(&|c| c.part_size = ByteSize(5 << 20)), "");
        assert!(
            err(&|c| c.roll_interval = Some(HumanDuration(Duration::ZERO)))
                .starts_with("`roll_interval`")
        );
        assert!(err(&|c| c.timeout = HumanDuration(Duration::ZERO)).starts_with("`timeout`"));
        assert!(err(&|c| c.content_type = Some(String::new())).starts_with("`content_type`"));
        // The interval is the runner's linger.
        let mut c = cfg("k/");
        c.roll_interval = Some(HumanDuration(Duration::from_secs(3)));
        assert_eq!(
            sluice_core::registry::SinkSpec::linger(&c),
            Some(Duration::from_secs(3))
        );
        assert_eq!(sluice_core::registry::SinkSpec::linger(&cfg("k/")), None);
        assert_eq!(sink(&cfg("k/")).content_type, "text/plain");
    }

    #[test]
    fn events_group_by_prefix_in_first_seen_order_and_roll_by_count() {
        let mut c = cfg("e/%{topic}/");
        c.roll_count = Some(2);
        let mut s = sink(&c);
        let batch = [
            ev("a", "a0"),
            ev("b", "b0"),
            ev("a", "a1"),
            ev("a", "a2"),
            ev("b", "b1"),
            ev("c", "c0"),
            ev("a", "a3"),
            ev("a", "a4"),
        ];
        let got = plan(&mut s, Some(7), &batch);
        let summary: Vec<(&str, &str, &str, &str)> = got
            .iter()
            .map(|(k, text)| {
                let (prefix, pos, chunk, _) = parts(k);
                (prefix, pos, chunk, text.as_str())
            })
            .collect();
        let pos = "00000000000000000007";
        assert_eq!(
            summary,
            [
                ("e/a/", pos, "0000", "a0\na1\n"),
                ("e/a/", pos, "0001", "a2\na3\n"),
                ("e/a/", pos, "0002", "a4\n"),
                ("e/b/", pos, "0000", "b0\nb1\n"),
                ("e/c/", pos, "0000", "c0\n"),
            ]
        );
        let groups: Vec<(&str, &[usize])> = s
            .groups
            .iter()
            .map(|g| (g.prefix.as_str(), &g.events[..]))
            .collect();
        assert_eq!(
            groups,
            [
                ("e/a/", &[0, 2, 3, 6, 7][..]),
                ("e/b/", &[1, 4][..]),
                ("e/c/", &[5][..])
            ]
        );
        for (k, _) in &got {
            let fp = parts(k).3;
            assert_eq!(fp.len(), 8);
            assert!(fp.chars().all(|c| c.is_ascii_hexdigit()), "{k}");
        }
    }

    #[test]
    fn rolls_by_size_on_the_encoded_payload() {
        let mut c = cfg("k/");
        c.roll_size = ByteSize(6);
        let mut s = sink(&c);
        let batch = [
            ev("t", "aa"),
            ev("t", "bb"),
            ev("t", "a very long line"),
            ev("t", "cc"),
            ev("t", "d"),
            ev("t", "e"),
        ];
        let texts: Vec<String> = plan(&mut s, Some(0), &batch)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        // The event that reaches the size is an object's last; a large one gets its own.
        assert_eq!(texts, ["aa\nbb\n", "a very long line\n", "cc\nd\ne\n"]);
        // The same rule over sizes (a plugin codec's estimate), with a count limit too.
        let roll = Roll {
            count: Some(3),
            size: 10,
        };
        assert_eq!(split([3, 3, 3, 20, 1], roll), [0..3, 3..4, 4..5]);
        assert_eq!(split([4, 7, 1], roll), [0..2, 2..3]);
        assert!(split(std::iter::empty(), roll).is_empty());
    }

    #[test]
    fn a_batch_retried_with_more_events_rewrites_the_same_names() {
        let mut c = cfg("e/%{topic}/");
        c.roll_count = Some(2);
        let mut s = sink(&c);
        let first: Vec<Event> = (0..5)
            .map(|i| ev(if i % 2 == 0 { "x" } else { "y" }, &format!("m{i}")))
            .collect();
        let mut more = first.clone();
        more.extend((5..9).map(|i| ev("x", &format!("m{i}"))));
        let a = plan(&mut s, Some(40), &first);
        let b = plan(&mut s, Some(40), &more);
        // Every object of the first try is rewritten by the second, with the same or more
        // content; nothing of the first is left under another name.
        for (key, text) in &a {
            let (_, again) = b
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} not rewritten: {b:?}"));
            assert!(
                again.starts_with(text.as_str()),
                "{key}: {text:?} vs {again:?}"
            );
        }
        // The same batch again: the same objects, byte for byte.
        assert_eq!(plan(&mut s, Some(40), &first), a);
    }

    #[test]
    fn a_channel_restarting_its_numbering_does_not_overwrite_older_objects() {
        let mut s = sink(&cfg("k/"));
        let old = plan(&mut s, Some(0), &[ev("t", "old")]);
        let new = plan(&mut s, Some(0), &[ev("t", "new")]);
        assert_ne!(old[0].0, new[0].0);
        assert_eq!(parts(&old[0].0).1, parts(&new[0].0).1, "same position");
    }

    #[test]
    fn without_a_position_names_come_from_the_batch() {
        let mut s = sink(&cfg("k/"));
        let batch = [ev("t", "a"), ev("t", "b")];
        let one = plan(&mut s, None, &batch);
        assert_eq!(plan(&mut s, None, &batch), one);
        let other = plan(&mut s, None, &[ev("t", "a"), ev("t", "c")]);
        assert_ne!(one[0].0, other[0].0);
        assert_eq!(parts(&one[0].0).1.len(), 20);
        // Header changes count too.
        let headed = plan(&mut s, None, &[ev("u", "a"), ev("t", "b")]);
        assert_ne!(one[0].0, headed[0].0);
    }

    #[test]
    fn ndjson_objects_keep_headers() {
        let c = cfg("k/");
        let mut s = S3Sink::new("s", &c, Box::new(CodecName::Ndjson)).unwrap();
        assert_eq!(s.content_type, "application/x-ndjson");
        let batch = [ev("t", "one"), ev("u", "two")];
        let (_, text) = plan(&mut s, Some(1), &batch).remove(0);
        let back: Vec<Event> = text
            .lines()
            .map(|l| codec::decode_line(CodecName::Ndjson, l.as_bytes()).unwrap())
            .collect();
        assert_eq!(back, batch);
    }

    #[tokio::test]
    async fn compressed_objects_round_trip_and_are_deterministic() {
        for (compression, ext) in [(Compression::Gzip, ".gz"), (Compression::Zstd, ".zst")] {
            let mut c = cfg("k/");
            c.compression = compression;
            c.roll_count = Some(100);
            let mut s = sink(&c);
            let batch: Vec<Event> = (0..250).map(|i| ev("t", &format!("line {i}"))).collect();
            let objects = s.plan(Some(3), &batch).unwrap();
            let plain: Vec<Vec<u8>> = objects.iter().map(|o| o.body.clone()).collect();
            let objects = s.compress_all(objects).await.unwrap();
            assert_eq!(objects.len(), 3);
            for (o, want) in objects.iter().zip(&plain) {
                assert!(o.key.ends_with(ext), "{}", o.key);
                let mut got = Vec::new();
                match compression {
                    Compression::Gzip => {
                        flate2::read::GzDecoder::new(&o.body[..])
                            .read_to_end(&mut got)
                            .unwrap();
                    }
                    _ => got = zstd::stream::decode_all(&o.body[..]).unwrap(),
                }
                assert_eq!(&got, want);
                let mut again = Vec::new();
                compress(compression, want, &mut again).unwrap();
                assert_eq!(again, o.body, "same input, same bytes");
            }
        }
    }

    #[test]
    fn parts_cover_the_payload() {
        let mib = 1u64 << 20;
        assert_eq!(
            part_ranges(12 * mib, 5 * mib),
            [0..5 * mib, 5 * mib..10 * mib, 10 * mib..12 * mib]
        );
        assert_eq!(part_ranges(10 * mib, 5 * mib).len(), 2);
        // Never more than S3's 10,000 parts.
        let huge = part_ranges(100_000 * mib, 5 * mib);
        assert!(huge.len() <= MAX_PARTS as usize);
        assert_eq!(huge.last().unwrap().end, 100_000 * mib);
        assert!(huge.windows(2).all(|w| w[0].end == w[1].start));
    }
}
