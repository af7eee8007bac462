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

use super::{
    Batch, DeliveryError,
    group::{Attempt, SinkSet},
};
use crate::{
    channel::{Channel, Lease},
    config::RetryConfig,
    dlq::{Class, DeadLetter, DeadLetters, Disposition, Stage},
    event::Event,
};

/// How long a take waits before the runner does idle housekeeping and checks for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Signals from the agent to a runner.
#[derive(Clone, Default)]
pub struct RunnerControl {
    /// Finish once the channel is empty.
    pub drain: CancellationToken,
    /// Stop now: roll back the lease in hand and return.
    pub abort: CancellationToken,
    /// Finish the lease in hand (commit or roll back as usual), take no other, and return:
    /// the sink is being replaced by a live reload while its channel keeps its events.
    pub retire: CancellationToken,
}

pub struct SinkRunner {
    pub name: String,
    channel: Arc<dyn Channel>,
    sinks: SinkSet,
    dead: DeadLetters,
    batch_size: usize,
    retry: RetryConfig,
    /// See [`crate::registry::SinkSpec::linger`].
    linger: Option<Duration>,
}

/// What became of one lease.
enum Outcome {
    Committed,
    /// Aborted or the DLQ failed: the lease was rolled back.
    RolledBack,
}

/// Poison found while delivering a lease: the event, why, and the member that refused it
/// (`None`: no member was asked).
type Poison = (Option<usize>, DeadLetter);

impl SinkRunner {
    /// Offers what member `m` delivered to its tap: all of `events`, or (after a partial
    /// delivery) those `kept` by index.
    fn tap_delivered(&self, m: usize, events: &[Event], kept: Option<&dyn Fn(usize) -> bool>) {
        let Some(member) = self.sinks.members().get(m) else {
            return;
        };
        let tap = &member.metrics.tap;
        match kept {
            None => tap.offer(events),
            Some(kept) if tap.active() => {
                let some: Vec<Event> = (0..events.len())
                    .filter(|&k| kept(k))
                    .map(|k| events[k].clone())
                    .collect();
                tap.offer(&some);
            }
            Some(_) => {}
        }
    }

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
            sinks,
            dead,
            batch_size,
            retry,
            linger: None,
        }
    }

    /// Lets the channel fill up to the batch size for up to `linger` before each take.
    pub fn with_linger(mut self, linger: Option<Duration>) -> Self {
        self.linger = linger;
        self
    }

    pub async fn run(mut self, ctl: RunnerControl) {
        loop {
            if ctl.abort.is_cancelled() || ctl.retire.is_cancelled() {
                break;
            }
            let take = async {
                match self.linger {
                    // Once the agent drains, whatever is there goes at once. An empty channel
                    // is looked at again after the linger: such a sink has no idle work, and
                    // the drain wakes it anyway.
                    Some(linger) if !ctl.drain.is_cancelled() => {
                        let idle = linger.max(IDLE_WAIT);
                        tokio::select! {
                            r = self.channel.take_batch(self.batch_size, self.batch_size, linger, idle) => r,
                            _ = ctl.drain.cancelled() => self.channel.take(self.batch_size, Duration::ZERO).await,
                        }
                    }
                    _ => self.channel.take(self.batch_size, IDLE_WAIT).await,
                }
            };
            let lease = tokio::select! {
                r = take => r,
                _ = ctl.abort.cancelled() => break,
                _ = ctl.retire.cancelled() => break,
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

    async fn handle(&mut self, mut lease: Box<dyn Lease>, ctl: &RunnerControl) -> Outcome {
        let started = Instant::now();
        let position = lease.position();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial_backoff.0)
            .with_max_delay(self.retry.max_backoff.0)
            .with_jitter()
            .without_max_times()
            .build();

        // The events still to deliver are the lease's first `pending`: after a partial
        // failure the ones to retry are moved to the front in place (`order` undoes that
        // before the lease is committed or rolled back), so a retry copies nothing.
        let mut pending = lease.events().len();
        let mut order = Reorder::default();
        let mut poison: Vec<Poison> = Vec::new();
        let mut dead_class = Class::Permanent;
        let mut attempts = 0u32;
        // Consecutive failures to reach the destination at all (they spend no attempts).
        let mut outage = 0u64;
        let mut delivered = Credits::default();
        loop {
            attempts += 1;
            let batch = Batch {
                events: &lease.events()[..pending],
                position,
            };
            let Attempt { member, result } = self.sinks.deliver(&batch).await;
            let retry_after = match result {
                Ok(()) => {
                    if let Some(m) = member {
                        delivered.add(m, pending as u64);
                        self.tap_delivered(m, batch.events, None);
                    }
                    break;
                }
                Err(DeliveryError::Permanent(reason)) => {
                    poison.extend(batch.iter().map(|e| (member, letter(e, reason.clone()))));
                    break;
                }
                Err(DeliveryError::Partial {
                    mut rejected,
                    mut retriable,
                }) => {
                    rejected.sort_by_key(|(k, _)| *k);
                    rejected.dedup_by_key(|(k, _)| *k);
                    // Never trust indices blindly: out-of-range and repeated ones are ignored.
                    retriable.retain(|&k| k < pending);
                    retriable.sort_unstable();
                    retriable.dedup();
                    let mut refused = Vec::new();
                    for (k, reason) in rejected {
                        if k < pending && retriable.binary_search(&k).is_err() {
                            poison.push((member, letter(&batch[k], reason)));
                            refused.push(k);
                        }
                    }
                    if let Some(m) = member {
                        delivered.add(
                            m,
                            pending.saturating_sub(refused.len() + retriable.len()) as u64,
                        );
                        self.tap_delivered(
                            m,
                            batch.events,
                            Some(&|k| {
                                retriable.binary_search(&k).is_err()
                                    && refused.binary_search(&k).is_err()
                            }),
                        );
                    }
                    if retriable.is_empty() {
                        break;
                    }
                    pending = order.bring_forward(lease.events_mut(), &retriable);
                    None
                }
                Err(DeliveryError::Unreachable(reason)) => {
                    // Not an attempt on these events: they never left.
                    attempts -= 1;
                    outage += 1;
                    if outage == 1 || outage.is_power_of_two() {
                        tracing::warn!(sink = %self.name, failures = outage, error = %reason, "destination unreachable; retrying until it is back (the batch's attempts are not spent)");
                    }
                    None
                }
                Err(DeliveryError::Retriable {
                    reason,
                    retry_after,
                }) => {
                    if attempts >= self.retry.max_attempts {
                        let why = format!("gave up after {attempts} attempts: {reason}");
                        poison.extend(batch.iter().map(|e| (member, letter(e, why.clone()))));
                        dead_class = Class::AttemptsExhausted;
                        break;
                    }
                    tracing::warn!(sink = %self.name, attempt = attempts, error = %reason, "delivery failed; will retry");
                    retry_after
                }
            };
            if attempts >= self.retry.max_attempts {
                // Partial results with retriable leftovers also respect the budget.
                let why = format!("gave up after {attempts} attempts");
                poison.extend(
                    lease.events()[..pending]
                        .iter()
                        .map(|e| (member, letter(e, why.clone()))),
                );
                dead_class = Class::AttemptsExhausted;
                break;
            }
            let delay = backoff
                .next()
                .unwrap_or(self.retry.max_backoff.0)
                .max(retry_after.unwrap_or_default());
            // A retiring runner does not wait out a failing delivery: the replacement
            // takes the events again.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctl.abort.cancelled() => {
                    order.restore(lease.events_mut());
                    let _ = lease.rollback().await;
                    return Outcome::RolledBack;
                }
                _ = ctl.retire.cancelled() => {
                    order.restore(lease.events_mut());
                    let _ = lease.rollback().await;
                    return Outcome::RolledBack;
                }
            }
        }
        order.restore(lease.events_mut());

        if !poison.is_empty() {
            let members = self.sinks.members().len();
            let mut refused_by = vec![0u64; members];
            for (m, _) in &poison {
                refused_by[m.unwrap_or(0).min(members.saturating_sub(1))] += 1;
            }
            let letters = poison.into_iter().map(|(_, l)| l).collect();
            match self
                .dead
                .send(Stage::Sink, dead_class, attempts, letters)
                .await
            {
                Ok(Disposition::Sent) => {}
                Ok(Disposition::Discarded) => {
                    for (m, n) in self.sinks.members().iter().zip(refused_by) {
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
        let took = started.elapsed().as_secs_f64();
        let members = self.sinks.members();
        for (m, n) in delivered.iter() {
            if let Some(m) = members.get(m) {
                m.metrics.drained.inc_by(n);
                m.metrics.batch_duration.observe(took);
            }
        }
        Outcome::Committed
    }
}

fn letter(event: &crate::event::Event, reason: String) -> DeadLetter {
    DeadLetter {
        event: event.clone(),
        reason,
    }
}

/// Events delivered per group member within one lease. Most leases are delivered whole by one
/// member: that case is kept inline, without an allocation per lease.
#[derive(Default)]
struct Credits {
    first: Option<(usize, u64)>,
    more: Vec<(usize, u64)>,
}

impl Credits {
    fn add(&mut self, member: usize, n: u64) {
        if n == 0 {
            return;
        }
        match &mut self.first {
            None => self.first = Some((member, n)),
            Some((m, total)) if *m == member => *total += n,
            Some(_) => match self.more.iter_mut().find(|(m, _)| *m == member) {
                Some((_, total)) => *total += n,
                None => self.more.push((member, n)),
            },
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

/// The swaps that moved a lease's events to retry to its front, to undo them (a rollback puts
/// events back in their original order; a commit does not care, but gets it anyway).
#[derive(Default)]
struct Reorder {
    swaps: Vec<(usize, usize)>,
}

impl Reorder {
    /// Moves `events[keep[j]]` to `events[j]` for each `j`, keeping their relative order;
    /// `keep` is ascending and in range. Returns how many are at the front now.
    fn bring_forward<T>(&mut self, events: &mut [T], keep: &[usize]) -> usize {
        // keep[j] >= j, and the slot keep[j] is untouched by earlier swaps (those touched
        // slots below j and keep[..j], all smaller), so it still holds the event wanted.
        for (j, &k) in keep.iter().enumerate() {
            if j != k {
                events.swap(j, k);
                self.swaps.push((j, k));
            }
        }
        keep.len()
    }

    fn restore<T>(&mut self, events: &mut [T]) {
        for (j, k) in self.swaps.drain(..).rev() {
            events.swap(j, k);
        }
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
        event::Event,
        metrics::Metrics,
        sink::{
            Sink,
            group::{Member, Policy},
        },
    };

    /// Fails `fail_first` calls retriably (or as unreachable), rejects bodies starting with
    /// "bad", records the rest.
    struct Scripted {
        fail_first: u32,
        unreachable: bool,
        calls: u32,
        got: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Sink for Scripted {
        async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
            self.calls += 1;
            if self.calls <= self.fail_first {
                return Err(if self.unreachable {
                    DeliveryError::Unreachable("connection refused".into())
                } else {
                    DeliveryError::retriable("flaky")
                });
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
        run_with(fail_first, false, attempts, bodies).await
    }

    async fn run_with(
        fail_first: u32,
        unreachable: bool,
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
            unreachable,
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
    async fn an_unreachable_destination_spends_no_attempts() {
        // 50 failures to connect against a budget of 4 attempts: an outage, not poison.
        let (got, dead, ch) = run_with(50, true, 4, &["a", "b"]).await;
        assert_eq!(got, ["a", "b"]);
        assert!(dead.is_empty());
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
            unreachable: false,
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

    /// Records each batch's size and position.
    struct Lingering {
        batches: Batches,
    }

    #[async_trait]
    impl Sink for Lingering {
        async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
            self.batches
                .lock()
                .unwrap()
                .push((batch.len(), batch.position));
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
        };
        let set = SinkSet::single(Member::new("s", Box::new(sink), m.sink("s"), 0));
        let runner = SinkRunner::new(
            "s",
            ch.clone(),
            set,
            DeadLetters::new(None, m.dlq(), "s"),
            4,
            retry(3),
        )
        .with_linger(Some(Duration::from_millis(400)));
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

    /// Fails its first `fail_calls` deliveries retriably; then refuses bodies starting with
    /// "bad" for good, asks for "flaky" to be retried the first time it sees it, and delivers
    /// the rest. Members of one group share `seen_flaky`.
    #[derive(Default)]
    struct Picky {
        fail_calls: u32,
        seen_flaky: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait]
    impl Sink for Picky {
        async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
            if self.fail_calls > 0 {
                self.fail_calls -= 1;
                return Err(DeliveryError::retriable("down"));
            }
            let (mut rejected, mut retriable) = (Vec::new(), Vec::new());
            for (i, e) in batch.iter().enumerate() {
                if e.body.starts_with(b"bad") {
                    rejected.push((i, "refused".to_string()));
                } else if &e.body[..] == b"flaky"
                    && !self
                        .seen_flaky
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    retriable.push(i);
                }
            }
            DeliveryError::outcome(batch.len(), rejected, retriable, None)
        }
    }

    /// Runs `set` over `leases` (one lease each, in order) with no DLQ, so refused events are
    /// discarded and counted on the sink that refused them.
    async fn run_group(m: &Metrics, set: SinkSet, leases: &[&[&str]]) {
        let ch = Arc::new(MemoryChannel::new(100, None));
        let runner = SinkRunner::new(
            "g",
            ch.clone(),
            set,
            DeadLetters::new(None, m.dlq(), "g"),
            4,
            retry(10),
        );
        let ctl = RunnerControl::default();
        let task = tokio::spawn(runner.run(ctl.clone()));
        for lease in leases {
            ch.put(lease.iter().map(|b| Event::new(b.to_string())).collect())
                .await
                .unwrap();
            while ch.stats().events > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ctl.drain.cancel();
        task.await.unwrap();
    }

    /// `(delivered, retries, discarded)` of sink `name`.
    fn counts(m: &Metrics, name: &str) -> (u64, u64, u64) {
        let s = m.sink(name);
        (s.drained.get(), s.retries.get(), s.discarded.get())
    }

    #[tokio::test]
    async fn load_balanced_members_are_credited_with_what_each_did() {
        let m = Metrics::new();
        let seen = Arc::default();
        let picky = || {
            Box::new(Picky {
                fail_calls: 0,
                seen_flaky: Arc::clone(&seen),
            })
        };
        let set = SinkSet::group(
            vec![
                Member::new("a", picky(), m.sink("a"), 0),
                Member::new("b", picky(), m.sink("b"), 0),
            ],
            Policy::RoundRobin,
            true,
            Duration::from_secs(1),
        );
        // a takes the first lease whole; b delivers two of the second, refuses one and asks
        // for one to be retried, which the rotation hands to a.
        run_group(
            &m,
            set,
            &[&["1", "2", "3", "4"], &["5", "bad", "flaky", "6"]],
        )
        .await;
        assert_eq!(counts(&m, "a"), (5, 0, 0));
        assert_eq!(counts(&m, "b"), (2, 1, 1));
    }

    #[tokio::test]
    async fn a_failover_member_that_partly_delivers_is_credited_not_the_primary() {
        let m = Metrics::new();
        let primary = Picky {
            fail_calls: 1,
            ..Picky::default()
        };
        let set = SinkSet::group(
            vec![
                Member::new("backup", Box::new(Picky::default()), m.sink("backup"), 1),
                Member::new("primary", Box::new(primary), m.sink("primary"), 10),
            ],
            Policy::Failover,
            true,
            Duration::from_secs(1),
        );
        run_group(&m, set, &[&["1", "bad", "2", "3"]]).await;
        assert_eq!(counts(&m, "primary"), (0, 1, 0));
        assert_eq!(counts(&m, "backup"), (3, 0, 1));
    }

    #[test]
    fn reordering_for_a_retry_is_undone_exactly() {
        let original: Vec<u32> = (0..10).collect();
        let mut v = original.clone();
        let mut order = Reorder::default();
        assert_eq!(order.bring_forward(&mut v, &[1, 4, 5, 9]), 4);
        assert_eq!(v[..4], [1, 4, 5, 9]);
        assert_eq!(order.bring_forward(&mut v[..4], &[0, 3]), 2);
        assert_eq!(v[..2], [1, 9]);
        order.restore(&mut v);
        assert_eq!(v, original);
    }
}
