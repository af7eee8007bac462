//! Dead letters: poison events leave the flow with a note of why, never silently.
//!
//! A dead-letter queue is an ordinary channel (usually durable) named by `dlq:` on a source or
//! sink, or pipeline-wide. The original body is kept byte for byte; headers say what happened.
//! Without a DLQ, poison events are discarded, counted and logged (rate-limited) — the
//! validator warns about that at start-up.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crate::{
    channel::{Channel, ChannelError},
    event::Event,
    metrics::DlqMetrics,
};

pub const HEADER_REASON: &str = "sluice.dlq.reason";
pub const HEADER_STAGE: &str = "sluice.dlq.stage";
pub const HEADER_COMPONENT: &str = "sluice.dlq.component";
pub const HEADER_ATTEMPTS: &str = "sluice.dlq.attempts";
pub const HEADER_CLASS: &str = "sluice.dlq.class";
/// When the event was dead-lettered (Unix milliseconds), for `sluice dlq … --since`.
pub const HEADER_TIME: &str = "sluice.dlq.time";
/// Every header the DLQ adds starts with this (a replay removes them).
pub const HEADER_PREFIX: &str = "sluice.dlq.";

/// Where in the flow an event was found to be poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Source,
    Interceptor,
    Sink,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Source, Stage::Interceptor, Stage::Sink];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Interceptor => "interceptor",
            Stage::Sink => "sink",
        }
    }
}

/// Why, as a bounded set usable as a metric label (the full text goes in headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The payload could not be decoded.
    Malformed,
    /// An interceptor rejected it, or no channel takes it.
    Rejected,
    /// The destination refused it for good.
    Permanent,
    /// Every delivery attempt failed.
    AttemptsExhausted,
    /// A plugin failed on it.
    PluginTrap,
    /// Larger than the component accepts.
    TooLarge,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Malformed,
        Class::Rejected,
        Class::Permanent,
        Class::AttemptsExhausted,
        Class::PluginTrap,
        Class::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Malformed => "malformed",
            Class::Rejected => "rejected",
            Class::Permanent => "permanent",
            Class::AttemptsExhausted => "attempts_exhausted",
            Class::PluginTrap => "plugin_trap",
            Class::TooLarge => "too_large",
        }
    }
}

/// One poison event and why.
#[derive(Debug)]
pub struct DeadLetter {
    pub event: Event,
    pub reason: String,
}

/// What happened to a batch of dead letters.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Durably put into the dead-letter channel.
    Sent,
    /// No dead-letter channel configured: counted and logged, then dropped.
    Discarded,
}

/// A component's route to its dead-letter channel.
#[derive(Clone)]
pub struct DeadLetters {
    channel: Option<Arc<dyn Channel>>,
    metrics: DlqMetrics,
    component: String,
    discarded: Arc<AtomicU64>,
}

impl DeadLetters {
    pub fn new(channel: Option<Arc<dyn Channel>>, metrics: DlqMetrics, component: &str) -> Self {
        DeadLetters {
            channel,
            metrics,
            component: component.to_owned(),
            discarded: Arc::default(),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.channel.is_some()
    }

    /// Events this component discarded for want of a DLQ.
    pub fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }

    /// Marks and puts `letters`; waits while the DLQ is full. Returns only once they are
    /// committed to the DLQ (or discarded and counted when there is none).
    pub async fn send(
        &self,
        stage: Stage,
        class: Class,
        attempts: u32,
        letters: Vec<DeadLetter>,
    ) -> Result<Disposition, ChannelError> {
        if letters.is_empty() {
            return Ok(Disposition::Sent);
        }
        let n = letters.len() as u64;
        let Some(channel) = &self.channel else {
            let total = self.discarded.fetch_add(n, Ordering::Relaxed) + n;
            // Log the first few and then every 1000th, so a poison flood cannot flood the log.
            if total <= 10 || total % 1000 < n {
                tracing::error!(
                    component = %self.component, stage = stage.as_str(),
                    class = class.as_str(), discarded_total = total,
                    reason = %letters[0].reason,
                    "poison events discarded: no dead-letter channel configured (set `dlq:`)"
                );
            }
            return Ok(Disposition::Discarded);
        };
        let attempts = attempts.to_string();
        let time = chrono::Utc::now().timestamp_millis().to_string();
        let first_reason = letters[0].reason.clone();
        let batch = letters
            .into_iter()
            .map(|DeadLetter { mut event, reason }| {
                event.headers.insert(HEADER_REASON, reason);
                event.headers.insert(HEADER_STAGE, stage.as_str());
                event
                    .headers
                    .insert(HEADER_COMPONENT, self.component.as_str());
                event.headers.insert(HEADER_CLASS, class.as_str());
                event.headers.insert(HEADER_ATTEMPTS, attempts.as_str());
                event.headers.insert(HEADER_TIME, time.as_str());
                event
            })
            .collect::<Vec<_>>();
        let tapped = self.metrics.tap().copy_to_offer(&batch);
        channel.put(batch).await?;
        if let Some(t) = tapped {
            self.metrics.tap().offer(&t);
        }
        self.metrics
            .add(&self.component, stage.as_str(), class.as_str(), n);
        self.metrics.remember(
            &self.component,
            stage.as_str(),
            class.as_str(),
            &first_reason,
            n,
        );
        Ok(Disposition::Sent)
    }
}
