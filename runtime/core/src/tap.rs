//! Live taps: copies of the events passing a point of a running pipeline (a source's output
//! before or after each interceptor, a channel's puts, a sink's deliveries, the dead letters)
//! for `sluice tap` and the admin server's `GET /tap`.
//!
//! A tap never slows or blocks the pipeline. With nobody tapping, a point costs one relaxed
//! atomic load per batch. A tapping client gets a bounded queue: when it reads slower than
//! events pass, samples are dropped and counted, events never are.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::event::Event;

/// One event as a tap saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub point: Arc<str>,
    /// Milliseconds since the Unix epoch when the event passed.
    pub at_ms: i64,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What a client asked to see.
#[derive(Debug, Clone, Default)]
pub struct TapFilter {
    /// Only events whose header `.0` equals `.1`.
    pub header: Option<(String, String)>,
    /// At most this many samples per second (the rest are skipped, not queued).
    pub rate: Option<u32>,
}

struct Subscriber {
    tx: mpsc::Sender<Sample>,
    filter: TapFilter,
    /// Samples this client could not take because its queue was full.
    dropped: Arc<AtomicU64>,
    /// Start of the current one-second window and samples sent in it (`rate`).
    window: (Instant, u32),
}

impl Subscriber {
    fn wants(&mut self, e: &Event) -> bool {
        if let Some((k, v)) = &self.filter.header {
            if e.headers.get(k) != Some(v.as_str()) {
                return false;
            }
        }
        if let Some(rate) = self.filter.rate {
            let now = Instant::now();
            if now.duration_since(self.window.0) >= Duration::from_secs(1) {
                self.window = (now, 0);
            }
            if self.window.1 >= rate {
                return false;
            }
            self.window.1 += 1;
        }
        true
    }
}

/// A place in the pipeline that can be tapped.
pub struct TapPoint {
    name: Arc<str>,
    /// Subscribers right now: the hot path's only cost when it is 0.
    active: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl TapPoint {
    fn new(name: &str) -> Self {
        TapPoint {
            name: Arc::from(name),
            active: AtomicUsize::new(0),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether anyone is tapping (check before building anything to offer).
    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Offers a batch to every client; never waits.
    #[inline]
    pub fn offer(&self, events: &[Event]) {
        if self.active() {
            self.offer_slow(events);
        }
    }

    /// For a point that can offer a batch only after it was handed on (a channel put, which
    /// takes the batch): a copy to offer afterwards when some client has room for samples.
    /// When none has, nothing is copied and the misses are counted now.
    pub fn copy_to_offer(&self, batch: &[Event]) -> Option<Vec<Event>> {
        if !self.active() {
            return None;
        }
        let room = {
            let subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            subs.iter().any(|s| s.tx.capacity() > 0)
        };
        if room {
            Some(batch.to_vec())
        } else {
            self.offer_slow(batch);
            None
        }
    }

    #[cold]
    fn offer_slow(&self, events: &[Event]) {
        let at_ms = chrono::Utc::now().timestamp_millis();
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain_mut(|s| {
            if s.tx.is_closed() {
                return false;
            }
            for (i, e) in events.iter().enumerate() {
                if !s.wants(e) {
                    continue;
                }
                // A sample is built only when the client has room for it: a full queue costs
                // a count, not a copy of each event.
                let Ok(permit) = s.tx.try_reserve() else {
                    let unfiltered = s.filter.header.is_none() && s.filter.rate.is_none();
                    let missed = if unfiltered {
                        events.len() - i
                    } else {
                        1 + events[i + 1..].iter().filter(|e| s.wants(e)).count()
                    };
                    s.dropped.fetch_add(missed as u64, Ordering::Relaxed);
                    break;
                };
                permit.send(Sample {
                    point: self.name.clone(),
                    at_ms,
                    headers: e
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    body: e.body.clone(),
                });
            }
            true
        });
        self.active.store(subs.len(), Ordering::Relaxed);
    }

    /// A new client, with a queue of `capacity` samples.
    pub fn subscribe(self: &Arc<Self>, capacity: usize, filter: TapFilter) -> Tap {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.push(Subscriber {
            tx,
            filter,
            dropped: dropped.clone(),
            window: (Instant::now(), 0),
        });
        self.active.store(subs.len(), Ordering::Relaxed);
        Tap {
            point: self.clone(),
            rx,
            dropped,
        }
    }

    fn forget_closed(&self) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| !s.tx.is_closed());
        self.active.store(subs.len(), Ordering::Relaxed);
    }
}

/// A client's end of a tap; dropping it unsubscribes.
pub struct Tap {
    point: Arc<TapPoint>,
    rx: mpsc::Receiver<Sample>,
    dropped: Arc<AtomicU64>,
}

impl Tap {
    pub async fn recv(&mut self) -> Option<Sample> {
        self.rx.recv().await
    }

    /// Samples dropped so far because this client read too slowly.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.rx.close();
        self.point.forget_closed();
    }
}

/// Every tap point of an agent, by name (`<component>:<point>`, components as their metrics
/// label them).
#[derive(Default)]
pub struct Taps {
    points: RwLock<BTreeMap<String, Arc<TapPoint>>>,
}

impl Taps {
    /// The point named `name`, made on first use (components register theirs when built).
    pub fn point(&self, name: &str) -> Arc<TapPoint> {
        if let Some(p) = self
            .points
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return p.clone();
        }
        self.points
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(TapPoint::new(name)))
            .clone()
    }

    /// An existing point.
    pub fn find(&self, name: &str) -> Option<Arc<TapPoint>> {
        self.points
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.points
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(format!("e{i}"));
                e.headers
                    .insert("kind", if i % 2 == 0 { "even" } else { "odd" });
                e
            })
            .collect()
    }

    #[tokio::test]
    async fn a_slow_client_loses_samples_never_events_and_filters_apply() {
        let taps = Taps::default();
        let point = taps.point("in:out");
        assert!(!point.active());
        let mut all = point.subscribe(4, TapFilter::default());
        let mut odd = point.subscribe(
            100,
            TapFilter {
                header: Some(("kind".into(), "odd".into())),
                rate: None,
            },
        );
        assert!(point.active());
        let events = batch(10);
        point.offer(&events);
        // The batch itself is untouched and the offer did not wait.
        assert_eq!(events.len(), 10);
        assert_eq!(all.dropped(), 6);
        for i in 0..4 {
            assert_eq!(all.recv().await.unwrap().body, format!("e{i}"));
        }
        for i in [1, 3, 5, 7, 9] {
            let s = odd.recv().await.unwrap();
            assert_eq!(s.body, format!("e{i}"));
            assert_eq!(&*s.point, "in:out");
            assert!(s.headers.contains(&("kind".into(), "odd".into())));
        }
        drop(all);
        drop(odd);
        assert!(!point.active(), "a client that left is forgotten");
        assert_eq!(taps.names(), vec!["in:out".to_owned()]);
    }

    #[tokio::test]
    async fn a_batch_is_copied_for_a_later_offer_only_when_a_client_has_room() {
        let point = Taps::default().point("c:put");
        assert!(point.copy_to_offer(&batch(3)).is_none(), "nobody tapping");
        let mut t = point.subscribe(2, TapFilter::default());
        let copy = point.copy_to_offer(&batch(3)).expect("room for samples");
        point.offer(&copy);
        assert_eq!(t.dropped(), 1);
        // Full now: nothing is copied, and the batch's events count as missed.
        assert!(point.copy_to_offer(&batch(3)).is_none());
        assert_eq!(t.dropped(), 4);
        t.recv().await.unwrap();
        assert!(point.copy_to_offer(&batch(3)).is_some());
    }

    #[tokio::test]
    async fn a_rate_caps_samples_per_second() {
        let point = Taps::default().point("c:put");
        let mut t = point.subscribe(
            1000,
            TapFilter {
                header: None,
                rate: Some(3),
            },
        );
        point.offer(&batch(50));
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), t.recv()).await {
            got += 1;
        }
        assert_eq!(got, 3);
        assert_eq!(t.dropped(), 0, "skipped by the rate is not dropped");
    }
}
