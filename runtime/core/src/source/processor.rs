//! The channel processor: interceptors, then the selector, then the puts — one batch at a time.
//!
//! `process` returns Ok only when the batch is committed to every required channel and its
//! rejected events are in the dead-letter channel; only then may a source acknowledge upstream.

use std::sync::Arc;

use crate::{
    channel::{Channel, ChannelError, Mark},
    config::EventIdConfig,
    dlq::{Class, DeadLetter, DeadLetters, Stage},
    event::Event,
    interceptor::{InterceptError, Interceptor},
    metrics::SourceMetrics,
    selector::{Routed, Selector},
    tap::TapPoint,
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
    slot: Arc<RouteSlot>,
    /// Ids given to events that come without one (`event_id`).
    ids: Option<EventIdConfig>,
    /// Whether the interceptors that keep marks got theirs (done before the first batch).
    restored: bool,
    /// Some interceptor keeps marks: collect them with each batch and tell it the outcome.
    marking: bool,
    /// Tap points after each interceptor (`<source>:<n>`).
    interceptor_taps: Vec<Arc<TapPoint>>,
}

/// What a source's events go through: interceptors, selector, channels, dead letters.
pub struct Route {
    pub interceptors: Vec<Box<dyn Interceptor>>,
    pub selector: Box<dyn Selector>,
    pub channels: Vec<(String, Arc<dyn Channel>)>,
    pub dead: DeadLetters,
    pub ids: Option<EventIdConfig>,
}

/// Where a live reload leaves a new [`Route`] for a running source: its processor takes it
/// before its next batch, so interceptor, selector and channel-list changes need no restart
/// of the source (no reconnect, no re-listen).
#[derive(Default)]
pub struct RouteSlot {
    next: std::sync::Mutex<Option<Route>>,
    waiting: std::sync::atomic::AtomicBool,
}

impl RouteSlot {
    pub fn offer(&self, route: Route) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = Some(route);
        self.waiting
            .store(true, std::sync::atomic::Ordering::Release);
    }
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
        let interceptor_taps = (0..interceptors.len())
            .map(|n| metrics.interceptor_tap(n))
            .collect();
        ChannelProcessor {
            interceptor_taps,
            interceptors,
            selector,
            channels,
            routed,
            dead,
            metrics,
            slot: Arc::default(),
            ids: None,
            restored: false,
            marking: false,
        }
    }

    /// Hands each interceptor that keeps marks (a `dedup` window) what the channels
    /// committed for it, under `icpt/<source>/<position in the chain>/`: a mark counts only
    /// when every channel that keeps marks has it.
    fn restore_interceptors(&mut self) {
        self.restored = true;
        self.marking = self.interceptors.iter().any(|i| i.keeps_marks());
        if !self.marking {
            return;
        }
        let source = self.metrics.component.clone();
        for (n, i) in self.interceptors.iter_mut().enumerate() {
            if !i.keeps_marks() {
                continue;
            }
            let prefix = format!("icpt/{source}/{n}/");
            let per_channel: Vec<Option<Vec<Mark>>> = self
                .channels
                .iter()
                .map(|(name, c)| {
                    c.marks(&prefix).unwrap_or_else(|e| {
                        tracing::error!(source = %source, channel = %name, error = %e, "cannot read the interceptor's marks; starting its window empty");
                        None
                    })
                })
                .collect();
            i.restore(&prefix, common_marks(per_channel));
        }
    }

    /// Gives every event that has none an id (see [`EventIdConfig`]).
    pub fn with_event_ids(mut self, ids: Option<EventIdConfig>) -> Self {
        self.ids = ids;
        self
    }

    /// Where a new route for this processor can be left (see [`RouteSlot`]).
    pub fn route_slot(&self) -> Arc<RouteSlot> {
        Arc::clone(&self.slot)
    }

    /// Installs a route a reload left, between two batches; one atomic load otherwise.
    fn take_new_route(&mut self) {
        use std::sync::atomic::Ordering;
        // A plain load on the hot path; the swap only when a route is waiting.
        if !self.slot.waiting.load(Ordering::Acquire)
            || !self.slot.waiting.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let next = self
            .slot
            .next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = next {
            self.routed = Routed::new(r.channels.len());
            self.interceptor_taps = (0..r.interceptors.len())
                .map(|n| self.metrics.interceptor_tap(n))
                .collect();
            self.interceptors = r.interceptors;
            self.selector = r.selector;
            self.channels = r.channels;
            self.dead = r.dead;
            self.ids = r.ids;
            self.restored = false;
        }
    }

    /// How many interceptors the chain has.
    pub fn interceptors(&self) -> usize {
        self.interceptors.len()
    }

    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    /// The marks under `prefix` that every channel of this source keeps, one list per
    /// channel; `None` when a channel keeps none across restarts.
    pub fn marks(&self, prefix: &str) -> Result<Vec<Option<Vec<Mark>>>, ProcessError> {
        self.channels
            .iter()
            .map(|(name, c)| {
                c.marks(prefix).map_err(|error| ProcessError::Channel {
                    channel: name.clone(),
                    error,
                })
            })
            .collect()
    }

    /// Sends events the source itself found malformed to the dead-letter channel.
    pub async fn reject_malformed(&mut self, letters: Vec<DeadLetter>) -> Result<(), ProcessError> {
        self.take_new_route();
        let n = letters.len() as u64;
        self.metrics.received.inc_by(n);
        self.dead
            .send(Stage::Source, Class::Malformed, 1, letters)
            .await
            .map_err(ProcessError::DeadLetter)?;
        Ok(())
    }

    /// Runs the batch through interceptors and selector and commits it to its channels.
    pub async fn process(&mut self, batch: Vec<Event>) -> Result<(), ProcessError> {
        self.process_until(batch, None).await
    }

    /// Like [`process`](Self::process), but gives up with [`ChannelError::Full`] when the first
    /// required channel still has no room at `deadline` (for sources that can answer "busy"
    /// instead of waiting). The deadline only applies before anything is committed: once one
    /// required channel took its part, the others are waited for, so a deadline never leaves
    /// a batch half-committed. A put abandoned at the deadline committed nothing (channel puts
    /// are all-or-nothing), so the caller may simply retry the batch later. Dead letters of
    /// the batch were already sent; a retry may dead-letter them again.
    pub async fn process_until(
        &mut self,
        batch: Vec<Event>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ProcessError> {
        self.process_marked(batch, deadline, &[]).await
    }

    /// Like [`process_until`](Self::process_until), and writes `marks` into every channel of
    /// this source in the same commit as its part of the batch (a channel the selector gave
    /// nothing gets the marks alone), so that [`marks`](Self::marks) read after a crash
    /// agree with what was committed.
    pub async fn process_marked(
        &mut self,
        batch: Vec<Event>,
        deadline: Option<tokio::time::Instant>,
        marks: &[Mark],
    ) -> Result<(), ProcessError> {
        self.process_from(0, batch, deadline, marks).await
    }

    /// [`process_marked`](Self::process_marked) from interceptor `first` of the chain on (the
    /// ones before it skipped): what `sluice test` injects at an interceptor.
    pub async fn process_from(
        &mut self,
        first: usize,
        mut batch: Vec<Event>,
        deadline: Option<tokio::time::Instant>,
        marks: &[Mark],
    ) -> Result<(), ProcessError> {
        self.take_new_route();
        if let Some(ids) = &self.ids {
            assign_ids(ids, &mut batch);
        }
        if !self.restored {
            self.restore_interceptors();
        }
        if !self.marking {
            return self.process_inner(first, batch, deadline, marks).await;
        }
        let r = self.process_inner(first, batch, deadline, marks).await;
        for i in &mut self.interceptors {
            if i.keeps_marks() {
                i.settled(r.is_ok());
            }
        }
        r
    }

    async fn process_inner(
        &mut self,
        first: usize,
        mut batch: Vec<Event>,
        deadline: Option<tokio::time::Instant>,
        marks: &[Mark],
    ) -> Result<(), ProcessError> {
        let received = batch.len();
        let mut rejected = Vec::new();
        self.metrics.input.offer(&batch);
        let chain = self.interceptors.iter_mut().zip(&self.interceptor_taps);
        for (i, tap) in chain.skip(first) {
            i.intercept(&mut batch, &mut rejected)?;
            tap.offer(&batch);
        }
        self.metrics.output.offer(&batch);
        // Interceptors' marks go into the same commit as the events.
        let mut owned = Vec::new();
        let marks = if self.marking {
            owned.extend_from_slice(marks);
            for i in &mut self.interceptors {
                i.marks(&mut owned);
            }
            &owned[..]
        } else {
            marks
        };
        let kept = batch.len();
        let mut unroutable = Vec::new();
        self.routed.clear();
        self.selector
            .select(batch, &mut self.routed, &mut unroutable);
        let (n_rejected, n_unroutable) = (rejected.len(), unroutable.len());

        // Dead letters first: the batch counts as handled only when they are safe too.
        self.dead
            .send(Stage::Interceptor, Class::Rejected, 1, rejected)
            .await
            .map_err(ProcessError::DeadLetter)?;
        self.dead
            .send(Stage::Source, Class::Rejected, 1, unroutable)
            .await
            .map_err(ProcessError::DeadLetter)?;

        let mut committed_any = false;
        for (i, (name, channel)) in self.channels.iter().enumerate() {
            let sub = std::mem::take(&mut self.routed.required[i]);
            if sub.is_empty() && marks.is_empty() {
                continue;
            }
            let put = if marks.is_empty() {
                channel.put(sub)
            } else {
                channel.put_marked(sub, marks)
            };
            let result = match deadline.filter(|_| !committed_any) {
                Some(d) => tokio::time::timeout_at(d, put)
                    .await
                    .unwrap_or(Err(ChannelError::Full)),
                None => put.await,
            };
            result.map_err(|error| ProcessError::Channel {
                channel: name.clone(),
                error,
            })?;
            committed_any = true;
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

/// The marks every channel that keeps marks has (by key, with the first one's value).
fn common_marks(per_channel: Vec<Option<Vec<Mark>>>) -> Vec<Mark> {
    let mut kept = per_channel.into_iter().flatten();
    let Some(first) = kept.next() else {
        return Vec::new();
    };
    let others: Vec<std::collections::HashSet<String>> = kept
        .map(|l| l.into_iter().map(|m| m.key).collect())
        .collect();
    first
        .into_iter()
        .filter(|m| others.iter().all(|o| o.contains(&m.key)))
        .collect()
}

/// Gives each event without `ids.header` an id: the `from` headers' values joined with `/`
/// when the event has them all, a UUIDv7 (time-ordered) otherwise.
fn assign_ids(ids: &EventIdConfig, batch: &mut [Event]) {
    for e in batch {
        if e.headers.contains(&ids.header) {
            continue;
        }
        let from: Option<Vec<&str>> = (!ids.from.is_empty())
            .then(|| ids.from.iter().map(|h| e.headers.get(h)).collect())
            .flatten();
        let id = match from {
            Some(parts) => parts.join("/"),
            None => uuid::Uuid::now_v7().hyphenated().to_string(),
        };
        e.headers.insert(ids.header.as_str(), id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::{channel::memory::MemoryChannel, metrics::Metrics, selector::Replicating};

    #[test]
    fn ids_are_given_once_from_headers_or_as_time_ordered_uuids() {
        let ids = EventIdConfig {
            header: "sluice.id".into(),
            from: Vec::new(),
        };
        let mut batch = vec![
            Event::new("a"),
            Event::new("b"),
            Event::new("c").with_header("sluice.id", "from-upstream"),
        ];
        assign_ids(&ids, &mut batch);
        let got: Vec<&str> = batch
            .iter()
            .map(|e| e.headers.get("sluice.id").unwrap())
            .collect();
        assert_eq!(got[2], "from-upstream", "an id that came along is kept");
        let (a, b) = (
            uuid::Uuid::parse_str(got[0]).unwrap(),
            uuid::Uuid::parse_str(got[1]).unwrap(),
        );
        assert_eq!((a.get_version_num(), b.get_version_num()), (7, 7));
        assert!(a < b, "UUIDv7s sort in the order they were given");
        // Again (a retry, another hop): nothing changes.
        let before = batch.clone();
        assign_ids(&ids, &mut batch);
        assert_eq!(batch, before);

        let from = EventIdConfig {
            header: "id".into(),
            from: vec![
                "kafka.topic".into(),
                "kafka.partition".into(),
                "kafka.offset".into(),
            ],
        };
        let mut batch = vec![
            Event::new("x")
                .with_header("kafka.topic", "orders")
                .with_header("kafka.partition", "3")
                .with_header("kafka.offset", "1042"),
            Event::new("no offset").with_header("kafka.topic", "orders"),
        ];
        assign_ids(&from, &mut batch);
        assert_eq!(batch[0].headers.get("id"), Some("orders/3/1042"));
        assert_eq!(
            uuid::Uuid::parse_str(batch[1].headers.get("id").unwrap())
                .unwrap()
                .get_version_num(),
            7,
            "without every `from` header: a UUIDv7"
        );
    }

    fn processor(channels: &[(&str, &Arc<MemoryChannel>)]) -> ChannelProcessor {
        let m = Metrics::new();
        ChannelProcessor::new(
            Vec::new(),
            Box::new(Replicating::new(vec![false; channels.len()])),
            channels
                .iter()
                .map(|(n, c)| ((*n).to_owned(), Arc::clone(c) as Arc<dyn Channel>))
                .collect(),
            DeadLetters::new(None, m.dlq(), "src"),
            m.source("src"),
        )
    }

    #[tokio::test]
    async fn a_deadline_never_leaves_a_batch_half_committed() {
        let roomy = Arc::new(MemoryChannel::new(10, None));
        let full = Arc::new(MemoryChannel::new(1, None));
        full.put(vec![Event::new("old")]).await.unwrap();

        // The full channel comes first: the deadline passes and nothing is committed anywhere.
        let mut p = processor(&[("full", &full), ("roomy", &roomy)]);
        let r = p
            .process_until(
                vec![Event::new("a")],
                Some(Instant::now() + Duration::from_millis(20)),
            )
            .await;
        assert!(
            matches!(
                r,
                Err(ProcessError::Channel {
                    error: ChannelError::Full,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(roomy.stats().events, 0);

        // The roomy channel comes first and takes its part at once; from then on the
        // deadline no longer applies and the full one is waited for.
        let mut p = processor(&[("roomy", &roomy), ("full", &full)]);
        let freer = {
            let full = Arc::clone(&full);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let lease = full.take(1, Duration::ZERO).await.unwrap().unwrap();
                lease.commit().await.unwrap();
            })
        };
        p.process_until(
            vec![Event::new("b")],
            Some(Instant::now() + Duration::from_millis(10)),
        )
        .await
        .unwrap();
        freer.await.unwrap();
        assert_eq!((roomy.stats().events, full.stats().events), (1, 1));
    }
}
