//! The generator source: numbered (or fixed) events for demos, tests and benchmarks.

use std::{collections::BTreeMap, time::Duration};

/// How long a put waits for room in a full channel before the stop signal is looked at again.
const FULL_RECHECK: Duration = Duration::from_millis(250);

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};

use serde::Deserialize;

use super::{ProcessError, Source, SourceContext, SourceError};
use crate::{
    channel::ChannelError,
    config::units::ByteSize,
    event::{Event, Headers},
    registry::{BuildCx, SourceSpec},
};

/// `type: generator`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Events to emit before ending; runs forever when absent.
    pub count: Option<u64>,
    /// Events per second; as fast as the channel accepts when absent.
    pub rate: Option<f64>,
    /// Body length in bytes; the body starts with the sequence number.
    #[serde(default = "default_body_size")]
    pub body_size: ByteSize,
    /// A fixed body for every event instead of the numbered one.
    pub body: Option<String>,
    /// Static headers on every event.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A header whose value cycles through a list, event by event (for routing demos).
    pub cycle: Option<CycleHeader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleHeader {
    pub header: String,
    pub values: Vec<String>,
}

fn default_body_size() -> ByteSize {
    ByteSize(256)
}

impl SourceSpec for GeneratorConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(Generator::new(self.clone(), cx.batch_size)))
    }

    fn expected_events(&self) -> Option<u64> {
        self.count
    }

    fn upstream(&self) -> crate::guarantee::Upstream {
        crate::guarantee::Upstream::NoReplay(
            "a generator has nothing upstream to send events again",
        )
    }
}

pub struct Generator {
    cfg: GeneratorConfig,
    batch_size: usize,
}

impl Generator {
    pub fn new(cfg: GeneratorConfig, batch_size: usize) -> Self {
        Generator { cfg, batch_size }
    }

    /// Event `seq`: its body starts with the decimal sequence number, padded with `.` to
    /// `body_size`, so every event is distinct and checkable downstream.
    fn fill(
        &self,
        seq: u64,
        n: usize,
        headers: &Headers,
        fixed: Option<&Bytes>,
        buf: &mut BytesMut,
    ) -> Vec<Event> {
        let size = self.cfg.body_size.0 as usize;
        let mut batch = Vec::with_capacity(n);
        for s in seq..seq + n as u64 {
            let body = match fixed {
                Some(b) => b.clone(),
                None => {
                    // One shared buffer per batch: bodies are slices of it, not separate allocations.
                    let mut num = itoa::Buffer::new();
                    let digits = num.format(s).as_bytes();
                    buf.put_slice(digits);
                    buf.put_bytes(b'.', size.saturating_sub(digits.len()));
                    buf.split().freeze()
                }
            };
            // No call at all for the common header-less event.
            let mut headers = if headers.is_empty() {
                Headers::default()
            } else {
                headers.clone()
            };
            if let Some(c) = self.cfg.cycle.as_ref().filter(|c| !c.values.is_empty()) {
                headers.insert(
                    c.header.as_str(),
                    c.values[(s % c.values.len() as u64) as usize].as_str(),
                );
            }
            batch.push(Event { headers, body });
        }
        batch
    }
}

#[async_trait]
impl Source for Generator {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let headers: Headers = self
            .cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let fixed = self.cfg.body.as_ref().map(|b| Bytes::from(b.clone()));
        let mut buf = BytesMut::new();
        let mut seq = 0u64;
        let start = tokio::time::Instant::now();
        while !cx.shutdown.is_cancelled() {
            let remaining = self.cfg.count.map_or(u64::MAX, |c| c - seq);
            if remaining == 0 {
                break;
            }
            let n = (self.batch_size as u64).min(remaining) as usize;
            if let Some(rate) = self.cfg.rate.filter(|r| *r > 0.0) {
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = cx.shutdown.cancelled() => break,
                }
            }
            buf.reserve(n * self.cfg.body_size.0 as usize);
            let batch = self.fill(seq, n, &headers, fixed.as_ref(), &mut buf);
            // While a channel stays full, look at the stop signal every so often (a reload or
            // a stop must not wait for room that may never come); nothing was put then, and
            // the same batch is made again.
            let patience = tokio::time::Instant::now() + FULL_RECHECK;
            match cx.out.process_until(batch, Some(patience)).await {
                Ok(()) => seq += n as u64,
                Err(ProcessError::Channel {
                    error: ChannelError::Full,
                    ..
                }) => {}
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    // Regenerating the same sequence numbers makes the retry exact.
                    tracing::warn!(source = %cx.name, error = %e, "batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    }
}
