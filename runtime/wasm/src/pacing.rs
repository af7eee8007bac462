//! How many events one call into a plugin gets, and what the host says when a plugin meets a
//! limit.
//!
//! A guest's speed is unknown until it runs: an interpreter compiled to Wasm (CPython,
//! SpiderMonkey) can take a hundred times longer per event than a Rust plugin. So the host
//! sizes calls per plugin from the time they take ([`BatchPacer`]): a call aims at a quarter of
//! the deadline, the size shrinks at once after a slow call of at least half the size, and
//! doubles back after fast full ones.
//! A deadline hit on several events shrinks the size and runs them again in smaller calls
//! instead of bisecting a batch that was merely large; only one event that runs out of time on
//! its own is poison.
//!
//! Every limit a plugin meets is written to the log with the plugin's name, digest, the call's
//! size and the limit ([`Notices`]), at most once per kind every [`NOTICE_EVERY`] with the
//! count of those not written, so a plugin failing on every batch cannot flood the log.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Events in a plugin's first call; grows by doubling while calls are fast.
pub const FIRST_CALL_EVENTS: usize = 64;
/// Most events one call may carry, however fast the plugin.
pub const MAX_CALL_EVENTS: usize = 1 << 16;

/// The per-plugin size of a call, shared by every user of the plugin.
pub struct BatchPacer {
    limit: AtomicUsize,
}

/// A change of a plugin's call size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resized {
    pub from: usize,
    pub to: usize,
}

impl Default for BatchPacer {
    fn default() -> Self {
        BatchPacer {
            limit: AtomicUsize::new(FIRST_CALL_EVENTS),
        }
    }
}

impl BatchPacer {
    /// Events the next call may carry.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Learns from a call of `events` that returned after `took`.
    pub fn after_call(&self, events: usize, took: Duration, deadline: Duration) -> Option<Resized> {
        if events == 0 {
            return None;
        }
        let target = deadline / 4;
        let from = self.limit();
        let per_event = took.as_secs_f64() / events as f64;
        let fits = if per_event > 0.0 {
            (target.as_secs_f64() / per_event) as usize
        } else {
            MAX_CALL_EVENTS
        };
        let to = if took > target && events * 2 >= from {
            // Too slow for its size: down to what fits at once.
            fits.clamp(1, from)
        } else if took < target / 2 && events >= from {
            // A full call with time to spare: up, at most doubling.
            fits.min(from * 2).clamp(from, MAX_CALL_EVENTS)
        } else {
            from
        };
        self.set(from, to)
    }

    /// A call of `events` ran out of time: the next calls carry a quarter of them.
    pub fn after_deadline(&self, events: usize) -> Option<Resized> {
        let from = self.limit();
        self.set(from, (events / 4).clamp(1, from.max(1)))
    }

    /// Moves the size from `from` to `to`, unless another user of the plugin changed it since
    /// `from` was read (its change, made on fresher evidence, stands).
    fn set(&self, from: usize, to: usize) -> Option<Resized> {
        (to != from
            && self
                .limit
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
        .then_some(Resized { from, to })
    }
}

/// How often each kind of notice may be written per plugin.
pub const NOTICE_EVERY: Duration = Duration::from_secs(10);

/// The kinds of things the host tells the log about a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The call size changed.
    Resized,
    /// A call ran past its deadline.
    Deadline,
    /// A call hit the memory cap.
    MemoryCap,
    /// Any other failed call.
    Failed,
    /// An instance was replaced by a fresh one before it failed.
    Recycled,
    /// A failed call's events were split in halves to find the failing ones.
    Bisected,
}

impl Notice {
    const ALL: usize = 6;

    fn index(self) -> usize {
        self as usize
    }
}

/// Rate limits for one plugin's notices.
#[derive(Default)]
pub struct Notices {
    kinds: Mutex<[(Option<Instant>, u64); Notice::ALL]>,
}

impl Notices {
    /// Whether a notice of `kind` may be written now, and how many were held back since the
    /// last one written.
    pub fn allow(&self, kind: Notice) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let (last, held) = &mut kinds[kind.index()];
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < NOTICE_EVERY) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(40);

    #[test]
    fn a_slow_plugin_is_given_what_fits_a_quarter_of_its_deadline() {
        let p = BatchPacer::default();
        // 64 events in 32 ms: 0.5 ms each, 10 ms fits 20.
        let r = p
            .after_call(64, Duration::from_millis(32), DEADLINE)
            .unwrap();
        assert_eq!(r.from, 64);
        assert!((19..=20).contains(&r.to), "{r:?}");
        assert_eq!(p.limit(), r.to);
        // At that size the calls take about the target: nothing changes.
        assert_eq!(p.after_call(r.to, Duration::from_millis(9), DEADLINE), None);
    }

    #[test]
    fn a_fast_plugin_grows_by_doubling_up_to_the_maximum() {
        let p = BatchPacer::default();
        let mut sizes = vec![p.limit()];
        for _ in 0..20 {
            let n = p.limit();
            p.after_call(n, Duration::from_micros(n as u64 / 10), DEADLINE);
            sizes.push(p.limit());
        }
        assert_eq!(&sizes[..4], &[64, 128, 256, 512]);
        assert_eq!(p.limit(), MAX_CALL_EVENTS);
        // A short call (a source's small batch) says nothing about a full one.
        let p = BatchPacer::default();
        assert_eq!(p.after_call(3, Duration::from_micros(1), DEADLINE), None);
    }

    #[test]
    fn a_deadline_hit_divides_the_size_by_four_down_to_one() {
        let p = BatchPacer::default();
        assert_eq!(p.after_deadline(64), Some(Resized { from: 64, to: 16 }));
        assert_eq!(p.after_deadline(16), Some(Resized { from: 16, to: 4 }));
        assert_eq!(p.after_deadline(4), Some(Resized { from: 4, to: 1 }));
        assert_eq!(p.after_deadline(1), None);
        assert_eq!(p.limit(), 1);
        // A slow call of one event cannot go lower.
        assert_eq!(p.after_call(1, DEADLINE, DEADLINE), None);
    }

    #[test]
    fn notices_are_held_back_and_counted_within_the_interval() {
        let n = Notices::default();
        assert_eq!(n.allow(Notice::Deadline), Some(0));
        assert_eq!(n.allow(Notice::Deadline), None);
        assert_eq!(n.allow(Notice::Deadline), None);
        // Another kind has its own allowance.
        assert_eq!(n.allow(Notice::Recycled), Some(0));
        n.kinds.lock().unwrap()[Notice::Deadline.index()].0 = Some(Instant::now() - NOTICE_EVERY);
        assert_eq!(n.allow(Notice::Deadline), Some(2));
    }
}
