//! The channel processor: interceptors, then the selector, then the puts — one batch at a time.
//!
//! `process` returns Ok only when the batch is committed to every required channel and its
//! rejected events are in the dead-letter channel; only then may a source acknowledge upstream.

use std::sync::Arc;

use crate::{
    channel::{Channel, ChannelError},
    dlq::{DeadLetter, DeadLetters},
    event::Event,
    interceptor::{InterceptError, Interceptor},
    metrics::SourceMetrics,
    selector::{Routed, Selector},
};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Intercept(#[from] InterceptError),
    #[error("put into channel `{channel}` failed: {error}")]
    Channel {
        channel: String,
        error: ChannelError,
    },
    #[error("put into the dead-letter channel failed: {0}")]
    DeadLetter(ChannelError),
}

impl ProcessError {
    /// True when retrying the same batch later cannot succeed (e.g. the agent is stopping).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ProcessError::Channel {
                error: ChannelError::Closed | ChannelError::BatchTooLarge { .. },
                ..
            } | ProcessError::DeadLetter(ChannelError::Closed)
        )
    }
}

pub struct ChannelProcessor {
    interceptors: Vec<Box<dyn Interceptor>>,
    selector: Box<dyn Selector>,
    channels: Vec<(String, Arc<dyn Channel>)>,
    routed: Routed,
    dead: DeadLetters,
    metrics: SourceMetrics,
}

impl ChannelProcessor {
    pub fn new(
        interceptors: Vec<Box<dyn Interceptor>>,
        selector: Box<dyn Selector>,
        channels: Vec<(String, Arc<dyn Channel>)>,
        dead: DeadLetters,
        metrics: SourceMetrics,
    ) -> Self {
        let routed = Routed::new(channels.len());
        ChannelProcessor {
            interceptors,
            selector,
            channels,
            routed,
            dead,
            metrics,
        }
    }

    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    /// Sends events the source itself found malformed to the dead-letter channel.
    pub async fn reject_malformed(&mut self, letters: Vec<DeadLetter>) -> Result<(), ProcessError> {
        let n = letters.len() as u64;
        self.metrics.received.inc_by(n);
        self.dead
            .send("source", "malformed", 1, letters)
            .await
            .map_err(ProcessError::DeadLetter)?;
        Ok(())
    }

    /// Runs the batch through interceptors and selector and commits it to its channels.
    pub async fn process(&mut self, mut batch: Vec<Event>) -> Result<(), ProcessError> {
        let received = batch.len();
        let mut rejected = Vec::new();
        for i in &mut self.interceptors {
            i.intercept(&mut batch, &mut rejected)?;
        }
        let kept = batch.len();
        let mut unroutable = Vec::new();
        self.routed.clear();
        self.selector
            .select(batch, &mut self.routed, &mut unroutable);
        let (n_rejected, n_unroutable) = (rejected.len(), unroutable.len());

        // Dead letters first: the batch counts as handled only when they are safe too.
        self.dead
            .send("interceptor", "rejected", 1, rejected)
            .await
            .map_err(ProcessError::DeadLetter)?;
        self.dead
            .send("source", "rejected", 1, unroutable)
            .await
            .map_err(ProcessError::DeadLetter)?;

        for (i, (name, channel)) in self.channels.iter().enumerate() {
            let sub = std::mem::take(&mut self.routed.required[i]);
            if !sub.is_empty() {
                channel
                    .put(sub)
                    .await
                    .map_err(|error| ProcessError::Channel {
                        channel: name.clone(),
                        error,
                    })?;
            }
        }
        for (i, (name, channel)) in self.channels.iter().enumerate() {
            let sub = std::mem::take(&mut self.routed.optional[i]);
            if !sub.is_empty() {
                if let Err(e) = channel.try_put(sub) {
                    self.metrics.rejected("optional_channel");
                    tracing::debug!(source = %self.metrics.component, channel = %name, error = %e, "optional channel refused a batch");
                }
            }
        }
        self.metrics.received.inc_by(received as u64);
        self.metrics.accepted.inc_by((kept - n_unroutable) as u64);
        self.metrics
            .dropped
            .inc_by(received.saturating_sub(kept + n_rejected) as u64);
        Ok(())
    }
}
