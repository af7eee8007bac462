//! The sink runner: the only code that commits or rolls back take transactions.
//!
//! For each lease: deliver through the sink set; retry retriable failures with exponential
//! backoff and jitter; send poison events (permanent errors, or a spent attempt budget) to the
//! dead-letter channel; commit only when every event is delivered or durably dead-lettered.
//! If the DLQ itself refuses, the lease is rolled back — events are never dropped here.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use super::{DeliveryError, group::SinkSet};
use crate::{
    channel::{Channel, Lease},
    config::RetryConfig,
    dlq::{Class, DeadLetter, DeadLetters, Stage},
    event::Event,
};

/// How long a take waits before the runner does idle housekeeping and checks for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// How often a lingering runner looks at the channel's counts.
const LINGER_POLL: Duration = Duration::from_millis(20);

/// Signals from the agent to a runner.
#[derive(Clone, Default)]
pub struct RunnerControl {
    /// Finish once the channel is empty.
    pub drain: CancellationToken,
    /// Stop now: roll back the lease in hand and return.
    pub abort: CancellationToken,
}

pub struct SinkRunner {
    pub name: String,
    channel: Arc<dyn Channel>,
    sinks: SinkSet,
    dead: DeadLetters,
    batch_size: usize,
    retry: RetryConfig,
    /// From the sinks (see [`crate::sink::Sink::linger`]).
    linger: Option<Duration>,
}

/// What became of one lease.
enum Outcome {
    Committed,
    /// Aborted or the DLQ failed: the lease was rolled back.
    RolledBack,
}

impl SinkRunner {
    pub fn new(
        name: &str,
        channel: Arc<dyn Channel>,
        sinks: SinkSet,
        dead: DeadLetters,
        batch_size: usize,
        retry: RetryConfig,
    ) -> Self {
        SinkRunner {
            name: name.to_owned(),
            channel,
            linger: sinks.linger(),
            sinks,
            dead,
            batch_size,
            retry,
        }
    }

    pub async fn run(mut self, ctl: RunnerControl) {
        loop {
            if ctl.abort.is_cancelled() {
                break;
            }
            // A lingering sink takes only what `fill_up` saw queued, without waiting: waiting in
            // `take` would hand it the first event that trickles in as a batch of one.
            let wait = match self.linger {
                Some(linger) => tokio::select! {
                    _ = fill_up(self.channel.as_ref(), self.batch_size, linger, &ctl) => Duration::ZERO,
                    _ = ctl.abort.cancelled() => break,
                },
                None => IDLE_WAIT,
            };
            let lease = tokio::select! {
                r = self.channel.take(self.batch_size, wait) => r,
                _ = ctl.abort.cancelled() => break,
            };
            match lease {
                Ok(Some(lease)) => {
                    if let Outcome::RolledBack = self.handle(lease, &ctl).await {
                        if !ctl.abort.is_cancelled() {
                            tokio::time::sleep(self.retry.initial_backoff.0).await;
                        }
                    }
                }
                Ok(None) => {
                    self.sinks.idle().await;
                    if ctl.drain.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "take failed");
                    tokio::time::sleep(self.retry.initial_backoff.0).await;
                }
            }
        }
        self.sinks.close().await;
    }

    async fn handle(&mut self, lease: Box<dyn Lease>, ctl: &RunnerControl) -> Outcome {
        let started = Instant::now();
        self.sinks.set_position(lease.position());
        let events = lease.events();
        let total = events.len();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial_backoff.0)
            .with_max_delay(self.retry.max_backoff.0)
            .with_jitter()
            .without_max_times()
            .build();

        // Indices still to deliver; `None` means all of them (the common, allocation-free case).
        let mut pending: Option<Vec<usize>> = None;
        let mut dead: Vec<(usize, String)> = Vec::new();
        let mut dead_class = Class::Permanent;
        let mut attempts = 0u32;
        let mut delivered_by: Vec<(usize, usize)> = Vec::new(); // (member, events)
        loop {
            attempts += 1;
            let subset: Option<Vec<Event>> = pending
                .as_ref()
                .map(|idx| idx.iter().map(|&i| events[i].clone()).collect());
            let batch: &[Event] = subset.as_deref().unwrap_or(events);
            let in_batch = |k: usize| pending.as_ref().map_or(k, |idx| idx[k]);
            let result = self.sinks.deliver(batch).await;
            let retry_after = match result {
                Ok(member) => {
                    delivered_by.push((member, batch.len()));
                    break;
                }
                Err(DeliveryError::Permanent(reason)) => {
                    dead.extend((0..batch.len()).map(|k| (in_batch(k), reason.clone())));
                    break;
                }
                Err(DeliveryError::Partial {
                    rejected,
                    retriable,
                }) => {
                    let ok = batch.len().saturating_sub(rejected.len() + retriable.len());
                    delivered_by.push((0, ok));
                    // Never trust indices blindly: out-of-range ones are ignored.
                    dead.extend(
                        rejected
                            .into_iter()
                            .filter(|(k, _)| *k < batch.len())
                            .map(|(k, r)| (in_batch(k), r)),
                    );
                    let next: Vec<usize> = retriable
                        .into_iter()
                        .filter(|&k| k < batch.len())
                        .map(in_batch)
                        .collect();
                    if next.is_empty() {
                        break;
                    }
                    pending = Some(next);
                    None
                }
                Err(DeliveryError::Retriable {
                    reason,
                    retry_after,
                }) => {
                    if attempts >= self.retry.max_attempts {
                        let why = format!("gave up after {attempts} attempts: {reason}");
                        dead.extend((0..batch.len()).map(|k| (in_batch(k), why.clone())));
                        dead_class = Class::AttemptsExhausted;
                        break;
                    }
                    tracing::warn!(sink = %self.name, attempt = attempts, error = %reason, "delivery failed; will retry");
                    retry_after
                }
            };
            if attempts >= self.retry.max_attempts {
                // Partial results with retriable leftovers also respect the budget.
                let idx = pending.take().unwrap_or_default();
                dead.extend(
                    idx.into_iter()
                        .map(|i| (i, format!("gave up after {attempts} attempts"))),
                );
                dead_class = Class::AttemptsExhausted;
                break;
            }
            let delay = backoff
                .next()
                .unwrap_or(self.retry.max_backoff.0)
                .max(retry_after.unwrap_or_default());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctl.abort.cancelled() => {
                    let _ = lease.rollback().await;
                    return Outcome::RolledBack;
                }
            }
        }

        if !dead.is_empty() {
            let letters: Vec<DeadLetter> = dead
                .into_iter()
                .map(|(i, reason)| DeadLetter {
                    event: events[i].clone(),
                    reason,
                })
                .collect();
            let n = letters.len() as u64;
            match self
                .dead
                .send(Stage::Sink, dead_class, attempts, letters)
                .await
            {
                Ok(crate::dlq::Disposition::Sent) => {}
                Ok(crate::dlq::Disposition::Discarded) => {
                    for m in self.sinks.members().iter().take(1) {
                        m.metrics.discarded.inc_by(n);
                    }
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "dead-letter put failed; rolling back to retry");
                    let _ = lease.rollback().await;
                    return Outcome::RolledBack;
                }
            }
        }
        if let Err(e) = lease.commit().await {
            tracing::error!(sink = %self.name, error = %e, "commit failed; events will be redelivered");
            return Outcome::RolledBack;
        }
        let members = self.sinks.members();
        for (member, n) in delivered_by {
            if let Some(m) = members.get(member) {
                m.metrics.drained.inc_by(n as u64);
                m.metrics
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        debug_assert!(total > 0);
        Outcome::Committed
    }
}

/// Waits until the channel holds a full batch, `linger` has passed since the first queued
/// event was seen, the channel stayed empty for [`IDLE_WAIT`] (so idle housekeeping and the
/// drain check still run), or the agent drains: sinks that write one object per batch (S3)
/// get full objects instead of one per trickle. Polls the channel's counts (one lock each).
async fn fill_up(channel: &dyn Channel, batch_size: usize, linger: Duration, ctl: &RunnerControl) {
    let started = Instant::now();
    let mut since: Option<Instant> = None;
    loop {
        let s = channel.stats();
        let n = s.events.saturating_sub(s.in_flight);
        // A channel too small for a whole batch is taken from once it is full, or its sources
        // would wait on it for the whole linger.
        let full = s.capacity_events > 0 && s.events >= s.capacity_events;
        if n >= batch_size || full || ctl.drain.is_cancelled() {
            return;
        }
        if n > 0 {
            if since.get_or_insert_with(Instant::now).elapsed() >= linger {
                return;
            }
        } else if started.elapsed() >= IDLE_WAIT {
            return;
        }
        tokio::time::sleep(LINGER_POLL.min(linger)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::{
        channel::memory::MemoryChannel,
        config::units::HumanDuration,
        dlq::{HEADER_ATTEMPTS, HEADER_CLASS, HEADER_REASON},
        metrics::Metrics,
        sink::{Sink, group::Member},
    };

    /// Fails `fail_first` calls retriably, rejects bodies starting with "bad", records the rest.
    struct Scripted {
        fail_first: u32,
        calls: u32,
        got: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Sink for Scripted {
        async fn deliver(&mut self, batch: &[Event]) -> Result<(), DeliveryError> {
            self.calls += 1;
            if self.calls <= self.fail_first {
                return Err(DeliveryError::retriable("flaky"));
            }
            let mut rejected = Vec::new();
            for (i, e) in batch.iter().enumerate() {
                let b = String::from_utf8_lossy(&e.body).into_owned();
                if b.starts_with("bad") {
                    rejected.push((i, format!("cannot store {b}")));
                } else {
                    self.got.lock().unwrap().push(b);
                }
            }
            if rejected.is_empty() {
                Ok(())
            } else {
                Err(DeliveryError::Partial {
                    rejected,
                    retriable: vec![],
                })
            }
        }
    }

    fn retry(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_backoff: HumanDuration(Duration::from_millis(1)),
            max_backoff: HumanDuration(Duration::from_millis(5)),
        }
    }

    async fn run(
        fail_first: u32,
        attempts: u32,
        bodies: &[&str],
    ) -> (Vec<String>, Vec<Event>, Arc<MemoryChannel>) {
        let m = Metrics::new();
        let ch = Arc::new(MemoryChannel::new(100, None));
        let dlq = Arc::new(MemoryChannel::new(100, None));
        ch.put(bodies.iter().map(|b| Event::new(b.to_string())).collect())
            .await
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            fail_first,
            calls: 0,
            got: got.clone(),
        };
        let set = SinkSet::single(Member::new("s", Box::new(sink), m.sink("s"), 0));
        let dead = DeadLetters::new(Some(dlq.clone() as Arc<dyn Channel>), m.dlq(), "s");
        let runner = SinkRunner::new("s", ch.clone(), set, dead, 10, retry(attempts));
        let ctl = RunnerControl::default();
        ctl.drain.cancel();
        runner.run(ctl).await;
        let dead_events = match dlq.take(100, Duration::ZERO).await.unwrap() {
            Some(l) => l.events().to_vec(),
            None => vec![],
        };
        let out = got.lock().unwrap().clone();
        (out, dead_events, ch)
    }

    #[tokio::test]
    async fn retries_then_delivers_and_commits() {
        let (got, dead, ch) = run(3, 10, &["a", "b"]).await;
        assert_eq!(got, ["a", "b"]);
        assert!(dead.is_empty());
        assert_eq!(ch.stats().events, 0, "lease committed");
    }

    #[tokio::test]
    async fn poison_events_go_to_the_dlq_with_reason_and_the_rest_commit() {
        let (got, dead, ch) = run(0, 10, &["a", "bad1", "b"]).await;
        assert_eq!(got, ["a", "b"]);
        assert_eq!(dead.len(), 1);
        assert_eq!(&dead[0].body[..], b"bad1", "original body intact");
        assert_eq!(
            dead[0].headers.get(HEADER_REASON),
            Some("cannot store bad1")
        );
        assert_eq!(dead[0].headers.get(HEADER_CLASS), Some("permanent"));
        assert_eq!(ch.stats().events, 0);
    }

    #[tokio::test]
    async fn an_exhausted_budget_dead_letters_instead_of_retrying_forever() {
        let (got, dead, ch) = run(100, 4, &["a", "b"]).await;
        assert!(got.is_empty());
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].headers.get(HEADER_ATTEMPTS), Some("4"));
        assert_eq!(
            dead[0].headers.get(HEADER_CLASS),
            Some("attempts_exhausted")
        );
        assert!(
            dead[0]
                .headers
                .get(HEADER_REASON)
                .unwrap()
                .contains("gave up after 4 attempts: flaky")
        );
        assert_eq!(ch.stats().events, 0);
    }

    #[tokio::test]
    async fn abort_rolls_back_the_lease() {
        let m = Metrics::new();
        let ch = Arc::new(MemoryChannel::new(100, None));
        ch.put(vec![Event::new("a")]).await.unwrap();
        let sink = Scripted {
            fail_first: u32::MAX,
            calls: 0,
            got: Arc::default(),
        };
        let set = SinkSet::single(Member::new("s", Box::new(sink), m.sink("s"), 0));
        let runner = SinkRunner::new(
            "s",
            ch.clone(),
            set,
            DeadLetters::new(None, m.dlq(), "s"),
            10,
            retry(1000),
        );
        let ctl = RunnerControl::default();
        let task = tokio::spawn(runner.run(ctl.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        ctl.abort.cancel();
        task.await.unwrap();
        assert_eq!(ch.stats().events, 1);
        assert_eq!(ch.stats().in_flight, 0, "the event is visible again");
    }

    /// Each delivered batch's size and position.
    type Batches = Arc<Mutex<Vec<(usize, Option<u64>)>>>;

    /// Records each batch's size and position; asks the runner to linger.
    struct Lingering {
        batches: Batches,
        position: Option<u64>,
    }

    #[async_trait]
    impl Sink for Lingering {
        fn set_position(&mut self, position: Option<u64>) {
            self.position = position;
        }
        fn linger(&self) -> Option<Duration> {
            Some(Duration::from_millis(400))
        }
        async fn deliver(&mut self, batch: &[Event]) -> Result<(), DeliveryError> {
            self.batches
                .lock()
                .unwrap()
                .push((batch.len(), self.position));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_lingering_sink_gets_a_trickle_as_one_batch_with_its_position() {
        let m = Metrics::new();
        let ch = Arc::new(MemoryChannel::new(100, None));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sink = Lingering {
            batches: batches.clone(),
            position: None,
        };
        let set = SinkSet::single(Member::new("s", Box::new(sink), m.sink("s"), 0));
        let runner = SinkRunner::new(
            "s",
            ch.clone(),
            set,
            DeadLetters::new(None, m.dlq(), "s"),
            4,
            retry(3),
        );
        let ctl = RunnerControl::default();
        let task = tokio::spawn(runner.run(ctl.clone()));
        for i in 0..3 {
            ch.put(vec![Event::new(format!("{i}"))]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        // A full batch is taken at once, without lingering.
        ch.put((3..7).map(|i| Event::new(format!("{i}"))).collect())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        ctl.drain.cancel();
        task.await.unwrap();
        let batches = batches.lock().unwrap().clone();
        let base = batches[0].1.expect("memory leases have positions");
        assert_eq!(
            batches,
            [(3, Some(base)), (4, Some(base + 3))],
            "the trickle is one batch; the full batch did not wait"
        );
    }
}
