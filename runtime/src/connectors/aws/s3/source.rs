//! The `s3` source: lists a bucket's keys under a prefix and reads every object once, in key
//! order — lines, NDJSON, JSON arrays, CSV or Parquet, plain, gzip or zstd (see
//! [`records`](super::records)) — then ends: a batch job over an export (Spark's part files).
//!
//! An object is read whole and handed to the channels in batches; only when its last batch is
//! committed are its key and ETag added to `position_file`, so a re-run skips it, and an
//! object overwritten since (a new ETag) is read again. A run stopped or killed in the middle
//! of an object reads that object again from its start (at least once: keyed sinks such as
//! DynamoDB's make the repeat harmless). Records that cannot be read go to the dead-letter
//! channel with the key and the reason; an object that cannot be read at all stops the run
//! with its reason. With `run_to_completion: false` it lists again every `poll_interval`.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use sluice_core::{
    dlq::DeadLetter,
    event::{Event, HeaderText},
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec},
    source::{
        Commit, Source, SourceContext, SourceError,
        supervisor::{Backoff, sleep_or_cancelled},
    },
};

use super::{config::S3SourceConfig, records};
use crate::connectors::aws;

/// `type: s3` sources.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    aws::read_with_connection(cx, |c: &mut S3SourceConfig| &mut c.aws)
        .map(|c| Arc::new(c) as Arc<dyn SourceSpec>)
}

impl SourceSpec for S3SourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        if self.bucket.is_empty() {
            return Err("`bucket`: required".into());
        }
        Ok(Box::new(S3Source {
            cfg: self.clone(),
            name: cx.name.to_owned(),
            batch_size: cx.batch_size.max(1),
        }))
    }

    fn exclusive_paths(&self) -> Vec<(&'static str, &Path)> {
        vec![("position_file", &self.position_file)]
    }

    fn upstream(&self) -> Upstream {
        Upstream::AckAfterCommit("an object is marked read only after its last batch is committed")
    }
}

struct S3Source {
    cfg: S3SourceConfig,
    name: String,
    batch_size: usize,
}

/// The objects read to the end: key → ETag.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Done {
    objects: BTreeMap<String, String>,
}

/// Why a step failed.
enum Step {
    /// The agent is stopping.
    Stopped,
    Failed(SourceError),
}

impl From<SourceError> for Step {
    fn from(e: SourceError) -> Self {
        Step::Failed(e)
    }
}

fn io(what: String) -> SourceError {
    SourceError::Io(std::io::Error::other(what))
}

impl S3Source {
    fn load(&self) -> Result<Done, SourceError> {
        match std::fs::read(&self.cfg.position_file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io(format!(
                    "{} is not a position file of an s3 source: {e}",
                    self.cfg.position_file.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Done::default()),
            Err(e) => Err(io(format!(
                "reading {}: {e}",
                self.cfg.position_file.display()
            ))),
        }
    }

    /// Written to a new file, synced and renamed over the old one.
    fn save(&self, done: &Done) -> Result<(), SourceError> {
        use std::io::Write;
        let path = &self.cfg.position_file;
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(done).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| io(format!("saving {}: {e}", path.display())))
    }

    /// Every key under the prefix with its ETag, in key order; retried while S3 fails.
    async fn list(
        &self,
        client: &Client,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(String, String)>, Step> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let mut keys = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .prefix(&self.cfg.prefix)
                .into_paginator()
                .send();
            let mut failed = None;
            while let Some(page) = pages.next().await {
                match page {
                    Ok(p) => {
                        for o in p.contents() {
                            if let Some(k) = o.key() {
                                // Directory markers hold nothing to read.
                                if !k.ends_with('/') {
                                    keys.push((
                                        k.to_owned(),
                                        o.e_tag().unwrap_or_default().to_owned(),
                                    ));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        failed = Some(aws::describe(&e));
                        break;
                    }
                }
            }
            let Some(error) = failed else {
                keys.sort();
                return Ok(keys);
            };
            if error.starts_with("NoSuchBucket") {
                return Err(Step::Failed(io(format!(
                    "bucket `{}`: {error}",
                    self.cfg.bucket
                ))));
            }
            let pause = backoff.next_delay();
            tracing::warn!(source = %self.name, bucket = %self.cfg.bucket, error = %error, retry_in = ?pause, "listing failed; retrying");
            if sleep_or_cancelled(shutdown, pause).await {
                return Err(Step::Stopped);
            }
        }
    }

    /// The object's bytes; retried while S3 fails.
    async fn get(
        &self,
        client: &Client,
        key: &str,
        shutdown: &CancellationToken,
    ) -> Result<bytes::Bytes, Step> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let error = match client
                .get_object()
                .bucket(&self.cfg.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => match o.body.collect().await {
                    Ok(b) => return Ok(b.into_bytes()),
                    Err(e) => e.to_string(),
                },
                Err(e) => aws::describe(&e),
            };
            if error.starts_with("NoSuchKey") {
                // Deleted since the listing: nothing to read.
                return Ok(bytes::Bytes::new());
            }
            let pause = backoff.next_delay();
            tracing::warn!(source = %self.name, key = %key, error = %error, retry_in = ?pause, "reading an object failed; retrying");
            if sleep_or_cancelled(shutdown, pause).await {
                return Err(Step::Stopped);
            }
        }
    }

    /// Reads one object and commits its records batch by batch.
    async fn object(
        &self,
        client: &Client,
        key: &str,
        cx: &mut SourceContext,
    ) -> Result<u64, Step> {
        let shutdown = cx.shutdown.clone();
        let data = self.get(client, key, &shutdown).await?;
        let mut out = Vec::new();
        records::records(
            key,
            data,
            self.cfg.format,
            self.cfg.compression,
            self.cfg.max_object_size.0 as usize,
            &mut out,
        )
        .map_err(|e| Step::Failed(io(format!("object `{key}` cannot be read: {e}"))))?;
        let header = self
            .cfg
            .key_header
            .as_deref()
            .map(|h| (HeaderText::new(h), HeaderText::new(key)));
        let total = out.len() as u64;
        let mut records = out.into_iter().peekable();
        while records.peek().is_some() {
            let mut batch = Vec::with_capacity(self.batch_size);
            let mut malformed = Vec::new();
            for r in records.by_ref().take(self.batch_size) {
                match r {
                    Ok(mut e) => {
                        if let Some((k, v)) = &header {
                            e.headers.insert(k.clone(), v.clone());
                        }
                        batch.push(e);
                    }
                    Err((body, reason)) => malformed.push(DeadLetter {
                        event: Event::new(body),
                        reason,
                    }),
                }
            }
            if !malformed.is_empty() {
                cx.out
                    .reject_malformed(malformed)
                    .await
                    .map_err(|e| Step::Failed(e.into()))?;
            }
            match cx.commit_or_stop(batch).await {
                Ok(Commit::Done) => {}
                Ok(Commit::Stopped) => return Err(Step::Stopped),
                Err(e) => return Err(Step::Failed(e)),
            }
            if cx.shutdown.is_cancelled() && records.peek().is_some() {
                return Err(Step::Stopped);
            }
        }
        Ok(total)
    }

    async fn run_steps(&self, cx: &mut SourceContext) -> Result<(), Step> {
        let sdk = aws::sdk_config(&self.cfg.aws, self.cfg.timeout.0).await;
        let client = Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(self.cfg.aws.force_path_style)
                .build(),
        );
        let mut done = self.load()?;
        let started = Instant::now();
        let (mut objects, mut rows) = (0u64, 0u64);
        loop {
            let shutdown = cx.shutdown.clone();
            let keys = self.list(&client, &shutdown).await?;
            let todo: Vec<(String, String)> = keys
                .into_iter()
                .filter(|(k, etag)| done.objects.get(k) != Some(etag))
                .collect();
            if !todo.is_empty() {
                tracing::info!(source = %self.name, bucket = %self.cfg.bucket, prefix = %self.cfg.prefix, objects = todo.len(), "objects to read");
            }
            for (key, etag) in todo {
                if cx.shutdown.is_cancelled() {
                    return Err(Step::Stopped);
                }
                let n = self.object(&client, &key, cx).await?;
                done.objects.insert(key.clone(), etag);
                self.save(&done)?;
                objects += 1;
                rows += n;
                tracing::info!(source = %self.name, key = %key, records = n, "object read");
            }
            if self.cfg.run_to_completion {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    source = %self.name,
                    objects,
                    records = rows,
                    seconds = format!("{secs:.1}"),
                    records_per_second = format!("{:.0}", rows as f64 / secs.max(1e-9)),
                    "every object read; done"
                );
                return Ok(());
            }
            if sleep_or_cancelled(&cx.shutdown, self.cfg.poll_interval.0).await {
                return Err(Step::Stopped);
            }
        }
    }
}

#[async_trait]
impl Source for S3Source {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        match self.run_steps(&mut cx).await {
            Ok(()) | Err(Step::Stopped) => Ok(()),
            Err(Step::Failed(e)) => Err(e),
        }
    }
}
