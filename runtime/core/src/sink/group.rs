//! Sink sets: one sink, or a group behind one channel — `failover` (priorities, penalty
//! backoff) or `load_balance` (round robin / random, failing sinks backed off).
//!
//! A set delivers a batch through one member and says which member did what, so the runner
//! credits every per-sink counter to the sink that earned it. A retriable failure moves on to
//! the next member and penalises the failed one (exponential backoff with jitter, capped); an
//! event-level failure (permanent, partial) is returned at once, because another sink would
//! refuse the same events.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::{Batch, DeliveryError, Sink};
use crate::{metrics::SinkMetrics, source::supervisor::Backoff};

pub struct Member {
    pub name: String,
    pub sink: Box<dyn Sink>,
    pub metrics: SinkMetrics,
    pub priority: i32,
    /// Out of rotation until this instant.
    penalised_until: Option<Instant>,
    /// The penalties still to come while the member keeps failing; reset by a success.
    penalties: Option<Backoff>,
}

impl Member {
    pub fn new(name: &str, sink: Box<dyn Sink>, metrics: SinkMetrics, priority: i32) -> Self {
        Member {
            name: name.to_owned(),
            sink,
            metrics,
            priority,
            penalised_until: None,
            penalties: None,
        }
    }

    fn available(&self, now: Instant) -> bool {
        self.penalised_until.is_none_or(|t| t <= now)
    }

    /// Takes the member out of rotation for its next penalty: from 1 s, doubling up to `cap`,
    /// with jitter so a fleet of agents does not retry in step — the sources' reconnect policy.
    fn penalise(&mut self, cap: Duration) {
        let next = self
            .penalties
            .get_or_insert_with(|| Backoff::new(FIRST_PENALTY, cap))
            .next_delay();
        self.penalised_until = Some(Instant::now() + next);
    }

    fn forgive(&mut self) {
        self.penalised_until = None;
        self.penalties = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Single,
    Failover,
    RoundRobin,
    Random,
}

/// What one delivery through a set came to.
#[derive(Debug)]
pub struct Attempt {
    /// The member whose answer `result` is: the one that delivered, partly delivered or
    /// refused the events, or the last one that failed retriably. `None` when every member
    /// was backing off and none was asked.
    pub member: Option<usize>,
    pub result: Result<(), DeliveryError>,
}

pub struct SinkSet {
    members: Vec<Member>,
    policy: Policy,
    /// Whether failing members are taken out of rotation.
    backoff: bool,
    max_penalty: Duration,
    next: usize,
    order: Vec<usize>,
}

const FIRST_PENALTY: Duration = Duration::from_secs(1);

impl SinkSet {
    pub fn single(member: Member) -> Self {
        Self::group(vec![member], Policy::Single, false, Duration::ZERO)
    }

    pub fn group(
        mut members: Vec<Member>,
        policy: Policy,
        backoff: bool,
        max_penalty: Duration,
    ) -> Self {
        if policy == Policy::Failover {
            // Stable: equal priorities keep their listed order.
            members.sort_by_key(|m| std::cmp::Reverse(m.priority));
        }
        SinkSet {
            order: Vec::with_capacity(members.len()),
            members,
            policy,
            backoff,
            max_penalty,
            next: 0,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Delivers `batch` through one member, moving on past members that fail retriably.
    /// Every retriable failure is counted on the member that failed.
    pub async fn deliver(&mut self, batch: &Batch<'_>) -> Attempt {
        let now = Instant::now();
        let n = self.members.len();
        self.order.clear();
        match self.policy {
            Policy::Single | Policy::Failover => self.order.extend(0..n),
            Policy::RoundRobin => {
                self.order.extend((0..n).map(|i| (self.next + i) % n));
                self.next = (self.next + 1) % n.max(1);
            }
            Policy::Random => {
                self.order.extend(0..n);
                self.order.shuffle(&mut rand::rng());
            }
        }
        let mut last: Option<(usize, DeliveryError)> = None;
        for k in 0..self.order.len() {
            let i = self.order[k];
            let m = &mut self.members[i];
            if self.policy != Policy::Single && self.backoff && !m.available(now) {
                continue;
            }
            match m.sink.deliver(batch).await {
                Ok(()) => {
                    m.forgive();
                    return Attempt {
                        member: Some(i),
                        result: Ok(()),
                    };
                }
                Err(e @ (DeliveryError::Retriable { .. } | DeliveryError::Unreachable(_))) => {
                    m.metrics.retries.inc();
                    if self.policy != Policy::Single {
                        tracing::warn!(sink = %m.name, error = %e, "sink failed; trying the next one in the group");
                        if self.backoff {
                            m.penalise(self.max_penalty);
                        }
                    }
                    last = Some((i, e));
                }
                Err(e) => {
                    // Partial deliveries count as retries of what is left.
                    if let DeliveryError::Partial { retriable, .. } = &e {
                        if !retriable.is_empty() {
                            m.metrics.retries.inc();
                        }
                    }
                    return Attempt {
                        member: Some(i),
                        result: Err(e),
                    };
                }
            }
        }
        match last {
            Some((i, e)) => Attempt {
                member: Some(i),
                result: Err(e),
            },
            None => {
                let wait = self
                    .members
                    .iter()
                    .filter_map(|m| m.penalised_until)
                    .min()
                    .map(|t| t.saturating_duration_since(now));
                Attempt {
                    member: None,
                    result: Err(DeliveryError::Retriable {
                        reason: "every sink in the group is backing off".into(),
                        retry_after: wait,
                    }),
                }
            }
        }
    }

    pub async fn idle(&mut self) {
        for m in &mut self.members {
            if let Err(e) = m.sink.idle().await {
                tracing::warn!(sink = %m.name, error = %e, "idle housekeeping failed");
            }
        }
    }

    pub async fn close(&mut self) {
        for m in &mut self.members {
            if let Err(e) = m.sink.close().await {
                tracing::error!(sink = %m.name, error = %e, "closing sink failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;
    use crate::{event::Event, metrics::Metrics};

    /// A sink that fails while its switch is on, and records what it delivered.
    #[derive(Clone, Default)]
    struct Flaky {
        failing: Arc<Mutex<bool>>,
        got: Arc<Mutex<usize>>,
    }

    #[async_trait]
    impl Sink for Flaky {
        async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
            if *self.failing.lock().unwrap() {
                return Err(DeliveryError::retriable("down"));
            }
            *self.got.lock().unwrap() += batch.len();
            Ok(())
        }
    }

    async fn via(set: &mut SinkSet, batch: &[Event]) -> String {
        let a = set.deliver(&Batch::new(batch)).await;
        a.result.unwrap();
        set.members()[a.member.unwrap()].name.clone()
    }

    fn member(m: &Metrics, name: &str, s: &Flaky, prio: i32) -> Member {
        Member::new(name, Box::new(s.clone()), m.sink(name), prio)
    }

    #[tokio::test]
    async fn failover_moves_on_and_comes_back_after_the_penalty() {
        let m = Metrics::new();
        let (a, b) = (Flaky::default(), Flaky::default());
        let mut set = SinkSet::group(
            vec![member(&m, "b", &b, 1), member(&m, "a", &a, 10)],
            Policy::Failover,
            true,
            Duration::from_secs(1),
        );
        let batch = [Event::new("x")];
        assert_eq!(via(&mut set, &batch).await, "a");
        *a.failing.lock().unwrap() = true;
        assert_eq!(via(&mut set, &batch).await, "b");
        *a.failing.lock().unwrap() = false;
        // Still penalised: b keeps the traffic.
        assert_eq!(via(&mut set, &batch).await, "b");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            via(&mut set, &batch).await,
            "a",
            "a is back after its penalty"
        );
        assert_eq!((*a.got.lock().unwrap(), *b.got.lock().unwrap()), (2, 2));
        assert_eq!(m.sink("a").retries.get(), 1);
    }

    #[tokio::test]
    async fn load_balance_round_robin_skips_failing_sinks() {
        let m = Metrics::new();
        let (a, b, c) = (Flaky::default(), Flaky::default(), Flaky::default());
        let mut set = SinkSet::group(
            vec![
                member(&m, "a", &a, 0),
                member(&m, "b", &b, 0),
                member(&m, "c", &c, 0),
            ],
            Policy::RoundRobin,
            true,
            Duration::from_secs(30),
        );
        let batch = [Event::new("x")];
        for _ in 0..6 {
            set.deliver(&Batch::new(&batch)).await.result.unwrap();
        }
        assert_eq!(
            [
                *a.got.lock().unwrap(),
                *b.got.lock().unwrap(),
                *c.got.lock().unwrap()
            ],
            [2, 2, 2]
        );
        *b.failing.lock().unwrap() = true;
        for _ in 0..6 {
            set.deliver(&Batch::new(&batch)).await.result.unwrap();
        }
        assert_eq!(
            *b.got.lock().unwrap(),
            2,
            "b delivered nothing while failing"
        );
        assert_eq!(*a.got.lock().unwrap() + *c.got.lock().unwrap(), 10);
        // Everyone down: a retriable error that says when to come back.
        *a.failing.lock().unwrap() = true;
        *c.failing.lock().unwrap() = true;
        set.deliver(&Batch::new(&batch)).await.result.unwrap_err();
        match set.deliver(&Batch::new(&batch)).await.result.unwrap_err() {
            DeliveryError::Retriable { retry_after, .. } => assert!(retry_after.is_some()),
            e => panic!("{e:?}"),
        }
    }
}
