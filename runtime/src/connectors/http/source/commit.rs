//! Group commit: one task owns the source's [`ChannelProcessor`]; request handlers hand it
//! their events and wait for the outcome.
//!
//! Under load, requests that arrive while a commit is running are committed together as one
//! batch (up to the source's `batch_size` events), so interceptors, plugins and channel puts
//! run per group rather than per request; a lone request is committed at once. A group fails
//! or succeeds as a whole: each of its requests gets the same answer, so an acknowledged
//! request is always committed and a refused one never is.

use bytes::Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use sluice_core::{
    channel::ChannelError,
    event::Event,
    source::{ChannelProcessor, ProcessError},
};

/// One request's events on their way to the channels.
pub struct Submit {
    pub events: Vec<Event>,
    /// When the request stops waiting for room in a full channel.
    pub deadline: Instant,
    pub reply: oneshot::Sender<Outcome>,
}

/// What became of a request's events.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Committed to every required channel.
    Committed,
    /// A required channel stayed full until the deadline; nothing was committed.
    Full,
    /// The request alone has more events (or bytes) than a channel can ever hold.
    TooLarge(Bytes),
    /// Anything else (the agent is stopping, an interceptor asked for a retry, the DLQ
    /// failed); nothing was acknowledged, the client should retry.
    Unavailable(Bytes),
}

impl Outcome {
    fn of(r: Result<(), ProcessError>) -> Outcome {
        match r {
            Ok(()) => Outcome::Committed,
            Err(ProcessError::Channel {
                error: ChannelError::Full,
                ..
            }) => Outcome::Full,
            Err(
                e @ ProcessError::Channel {
                    error: ChannelError::BatchTooLarge { .. },
                    ..
                },
            ) => Outcome::TooLarge(Bytes::from(e.to_string())),
            Err(e) => Outcome::Unavailable(Bytes::from(e.to_string())),
        }
    }
}

/// Commits submissions until every sender is gone; `max_events` caps a group.
pub async fn run(mut out: ChannelProcessor, mut rx: mpsc::Receiver<Submit>, max_events: usize) {
    let mut group: Vec<Submit> = Vec::new();
    let mut carried: Option<Submit> = None;
    loop {
        let first = match carried.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        let mut n = first.events.len();
        group.push(first);
        // Once, when nothing else is queued: the handlers that are ready to submit run first
        // (on a single worker this task would otherwise run right after the first submission
        // and commit every request alone). An idle source loses one scheduler pass.
        let mut yielded = false;
        while n < max_events {
            match rx.try_recv() {
                Ok(s) if n + s.events.len() <= max_events => {
                    n += s.events.len();
                    group.push(s);
                }
                Ok(s) => {
                    carried = Some(s);
                    break;
                }
                Err(_) if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        commit(&mut out, &mut group).await;
    }
}

async fn commit(out: &mut ChannelProcessor, group: &mut Vec<Submit>) {
    // A client that went away gets no answer: committing its events would only make its
    // retry a duplicate.
    group.retain(|s| !s.reply.is_closed());
    let Some(deadline) = group.iter().map(|s| s.deadline).min() else {
        return;
    };
    if group.len() == 1 {
        if let Some(s) = group.pop() {
            let outcome = Outcome::of(out.process_until(s.events, Some(deadline)).await);
            let _ = s.reply.send(outcome);
        }
        return;
    }
    let batch: Vec<Event> = group
        .iter()
        .flat_map(|s| s.events.iter().cloned())
        .collect();
    match Outcome::of(out.process_until(batch, Some(deadline)).await) {
        // Together they exceed what a channel holds; each alone may fit.
        Outcome::TooLarge(_) => {
            for s in group.drain(..) {
                let outcome = Outcome::of(out.process_until(s.events, Some(s.deadline)).await);
                let _ = s.reply.send(outcome);
            }
        }
        outcome => {
            for s in group.drain(..) {
                let _ = s.reply.send(outcome.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use sluice_core::{
        channel::{Channel, memory::MemoryChannel},
        dlq::DeadLetters,
        metrics::Metrics,
        selector::Replicating,
    };

    fn processor(ch: Arc<MemoryChannel>) -> ChannelProcessor {
        let m = Metrics::new();
        ChannelProcessor::new(
            Vec::new(),
            Box::new(Replicating::new(vec![false])),
            vec![("mem".into(), ch as Arc<dyn Channel>)],
            DeadLetters::new(None, m.dlq(), "src"),
            m.source("src"),
        )
    }

    async fn submit(tx: &mpsc::Sender<Submit>, bodies: &[&str], wait_ms: u64) -> Outcome {
        let (reply, rx) = oneshot::channel();
        tx.send(Submit {
            events: bodies.iter().map(|b| Event::new(b.to_string())).collect(),
            deadline: Instant::now() + Duration::from_millis(wait_ms),
            reply,
        })
        .await
        .unwrap();
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn commits_and_refuses_when_full_without_committing() {
        let ch = Arc::new(MemoryChannel::new(3, None));
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(processor(ch.clone()), rx, 100));
        assert!(matches!(
            submit(&tx, &["a", "b"], 50).await,
            Outcome::Committed
        ));
        assert!(matches!(submit(&tx, &["c", "d"], 50).await, Outcome::Full));
        assert_eq!(
            ch.stats().events,
            2,
            "the refused request committed nothing"
        );
        assert!(matches!(
            submit(&tx, &["1", "2", "3", "4"], 50).await,
            Outcome::TooLarge(_)
        ));
        // Room appears while the request waits: it is committed.
        let lease = ch.take(2, Duration::ZERO).await.unwrap().unwrap();
        let drain = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            lease.commit().await.unwrap();
        });
        assert!(matches!(
            submit(&tx, &["e", "f"], 2000).await,
            Outcome::Committed
        ));
        drain.await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(ch.stats().events, 2);
    }

    /// Counts the puts that reach a memory channel.
    struct CountingPuts(MemoryChannel, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl Channel for CountingPuts {
        async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.put(batch).await
        }
        fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.try_put(batch)
        }
        async fn take(
            &self,
            max: usize,
            wait: Duration,
        ) -> Result<Option<Box<dyn sluice_core::channel::Lease>>, ChannelError> {
            self.0.take(max, wait).await
        }
        fn stats(&self) -> sluice_core::channel::ChannelStats {
            self.0.stats()
        }
        fn close(&self) {
            self.0.close()
        }
    }

    /// On one worker the committer would run right after the first handler's submission and
    /// commit each request alone; it yields once first, so the handlers ready to submit are
    /// committed together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn requests_ready_together_on_one_worker_share_a_commit() {
        let ch = Arc::new(CountingPuts(
            MemoryChannel::new(10_000, None),
            Default::default(),
        ));
        let m = Metrics::new();
        let out = ChannelProcessor::new(
            Vec::new(),
            Box::new(Replicating::new(vec![false])),
            vec![("mem".into(), ch.clone() as Arc<dyn Channel>)],
            DeadLetters::new(None, m.dlq(), "src"),
            m.source("src"),
        );
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(run(out, rx, 1000));
        // Spawned from a task on the worker, so all are queued before the first runs (the
        // test's own thread could be descheduled between two spawns).
        let spawner = tx.clone();
        let handlers = tokio::spawn(async move {
            (0..32)
                .map(|i| {
                    let tx = spawner.clone();
                    tokio::spawn(async move {
                        let body = format!("{i}");
                        submit(&tx, &[body.as_str()], 1000).await
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for h in handlers {
            assert!(matches!(h.await.unwrap(), Outcome::Committed));
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(ch.stats().events, 32);
        let puts = ch.1.load(std::sync::atomic::Ordering::Relaxed);
        assert!(puts <= 4, "32 requests ready together took {puts} puts");
    }

    #[tokio::test]
    async fn concurrent_requests_are_grouped_and_all_answered() {
        let ch = Arc::new(MemoryChannel::new(10_000, None));
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(run(processor(ch.clone()), rx, 64));
        let mut waits = Vec::new();
        for i in 0..200 {
            let tx = tx.clone();
            waits.push(tokio::spawn(async move {
                let body = format!("{i}");
                submit(&tx, &[body.as_str()], 1000).await
            }));
        }
        for w in waits {
            assert!(matches!(w.await.unwrap(), Outcome::Committed));
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(ch.stats().events, 200);
    }
}
