//! Console sinks: `stdout` (encoded events) and `logger` (Flume's LoggerSink: a log line each).

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use serde::Deserialize;

use super::{Batch, DeliveryError, Sink};
use crate::{
    event::codec::{Codec, CodecName, CodecRef},
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
};

/// `type: stdout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// `lines`, `ndjson`, or the name of a `serde` plugin (one payload per batch).
    #[serde(default)]
    pub format: CodecRef,
}

/// `type: logger`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerSinkConfig {
    /// Bytes of body shown per event.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
}

fn default_max_body() -> usize {
    16
}

pub(crate) fn read_stdout(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SinkSpec>> {
    cx.codec_field("format", CodecName::NAMES);
    plain_sink::<StdoutSinkConfig>(cx)
}

impl SinkSpec for StdoutSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(StdoutSink::new(cx.codec(&self.format)?)))
    }
}

impl SinkSpec for LoggerSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(LoggerSink::new(cx.name, self.max_body)))
    }
}

pub struct StdoutSink {
    codec: Box<dyn Codec>,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(codec: Box<dyn Codec>) -> Self {
        StdoutSink {
            codec,
            buf: Vec::new(),
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        self.buf.clear();
        // A codec that cannot encode this batch will not later: the events are poison.
        self.codec
            .encode(batch, &mut self.buf)
            .map_err(DeliveryError::Permanent)?;
        let mut out = tokio::io::stdout();
        out.write_all(&self.buf).await?;
        out.flush().await?;
        Ok(())
    }
}

pub struct LoggerSink {
    name: String,
    max_body: usize,
}

impl LoggerSink {
    pub fn new(name: &str, max_body: usize) -> Self {
        LoggerSink {
            name: name.to_owned(),
            max_body,
        }
    }
}

#[async_trait]
impl Sink for LoggerSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        for e in batch {
            let shown = &e.body[..e.body.len().min(self.max_body)];
            let headers: Vec<_> = e.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tracing::info!(
                sink = %self.name,
                headers = %headers.join(","),
                body = %String::from_utf8_lossy(shown),
                body_len = e.body.len(),
                "event"
            );
        }
        Ok(())
    }
}
