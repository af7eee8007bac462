//! Console sinks: `stdout` (encoded events) and `logger` (Flume's LoggerSink: a log line each).

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{DeliveryError, Sink};
use crate::event::{Event, codec::Codec};

pub struct StdoutSink {
    codec: Codec,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(codec: Codec) -> Self {
        StdoutSink {
            codec,
            buf: Vec::new(),
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn deliver(&mut self, batch: &[Event]) -> Result<(), DeliveryError> {
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
    async fn deliver(&mut self, batch: &[Event]) -> Result<(), DeliveryError> {
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
