//! The stdin source: one event per line, decoded by a codec; ends at EOF.

use std::{io::BufRead, time::Duration};

use async_trait::async_trait;
use tokio::sync::mpsc;

use serde::Deserialize;

use super::{Source, SourceContext, SourceError};
use crate::{
    config::units::HumanDuration,
    dlq::DeadLetter,
    event::{
        Event,
        codec::{Codec, CodecName, CodecRef},
    },
    registry::{BuildCx, ReadCx, SourceSpec, plain_source},
};

/// `type: stdin`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// `lines`, `ndjson`, or the name of a `serde` plugin (each line is one payload).
    #[serde(default)]
    pub codec: CodecRef,
    /// Hand a partial batch to the channel after this long without a new line.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
}

fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    plain_source::<StdinConfig>(cx)
}

impl SourceSpec for StdinConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let codec = cx.codec(&self.codec)?;
        Ok(Box::new(Stdin::new(self.clone(), cx.batch_size, codec)))
    }

    fn upstream(&self) -> crate::guarantee::Upstream {
        crate::guarantee::Upstream::NoReplay("stdin cannot send again what a crash interrupts")
    }
}

pub struct Stdin {
    cfg: StdinConfig,
    batch_size: usize,
    codec: Box<dyn Codec>,
}

impl Stdin {
    pub fn new(cfg: StdinConfig, batch_size: usize, codec: Box<dyn Codec>) -> Self {
        Stdin {
            cfg,
            batch_size,
            codec,
        }
    }
}

#[async_trait]
impl Source for Stdin {
    async fn run(mut self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        // Blocking reads on a thread of their own; the channel makes the wait cancel-safe.
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(self.batch_size * 2);
        std::thread::Builder::new()
            .name("sluice-stdin".into())
            .spawn(move || {
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                loop {
                    let mut line = Vec::new();
                    match lock.read_until(b'\n', &mut line) {
                        Ok(0) => break,
                        Ok(_) => {
                            if line.last() == Some(&b'\n') {
                                line.pop();
                                if line.last() == Some(&b'\r') {
                                    line.pop();
                                }
                            }
                            if tx.blocking_send(Ok(line)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            break;
                        }
                    }
                }
            })?;

        let linger = self.cfg.linger.0.max(Duration::from_millis(1));
        let mut batch: Vec<Event> = Vec::with_capacity(self.batch_size);
        let mut malformed: Vec<DeadLetter> = Vec::new();
        let mut line_no = 0u64;
        let mut eof = false;
        while !eof {
            let next = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => None,
                r = tokio::time::timeout(linger, rx.recv()) => Some(r),
            };
            match next {
                None => eof = true,
                Some(Ok(Some(Ok(line)))) => {
                    line_no += 1;
                    match self.codec.decode(&line) {
                        Ok(events) => batch.extend(events),
                        Err(reason) => malformed.push(DeadLetter {
                            event: Event::new(line),
                            reason: format!("stdin line {line_no}: {reason}"),
                        }),
                    }
                    if batch.len() + malformed.len() < self.batch_size {
                        continue;
                    }
                }
                Some(Ok(Some(Err(e)))) => return Err(e.into()),
                Some(Ok(None)) => eof = true,
                Some(Err(_linger_elapsed)) => {}
            }
            if !malformed.is_empty() {
                cx.out
                    .reject_malformed(std::mem::take(&mut malformed))
                    .await?;
            }
            if !batch.is_empty() {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_size));
                // stdin cannot rewind, so a retriable failure retries from a copy.
                loop {
                    match cx.out.process(full.clone()).await {
                        Ok(()) => break,
                        Err(e) if e.is_fatal() => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(source = %cx.name, error = %e, "batch failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
