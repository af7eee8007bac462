//! The reconnect loop shared by sources that read from a broker: connect, consume until the
//! connection breaks, back off (exponentially, with jitter), connect again — until the agent
//! stops, the source finishes, or an error retrying cannot fix.
//!
//! A source implements [`Supervised`] (its connect and consume steps only) and hands itself to
//! [`supervise`]. Pauses a source still takes inside its consume step (say, after the channels
//! refused a batch) use [`Backoff`] and [`sleep_or_cancelled`] too.

use std::{borrow::Cow, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{SourceContext, SourceError};

/// Why a connect or consume step failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made or broke: back off, then connect again.
    Retry {
        /// What went wrong, for the log ("lost the connection").
        what: Cow<'static, str>,
        error: String,
    },
    /// Retrying cannot help: the source ends with this error.
    Fatal(SourceError),
}

impl Failure {
    pub fn retry(what: impl Into<Cow<'static, str>>, error: impl ToString) -> Self {
        Failure::Retry {
            what: what.into(),
            error: error.to_string(),
        }
    }
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure::Fatal(e)
    }
}

/// One connection's consuming, as the supervisor sees it.
#[derive(Debug)]
pub struct Session {
    started: Instant,
    progressed: bool,
}

impl Session {
    fn new() -> Self {
        Session {
            started: Instant::now(),
            progressed: false,
        }
    }

    /// Says the connection did useful work (a batch acknowledged, a read answered), so its
    /// failure starts the backoff over instead of lengthening it.
    pub fn mark_progress(&mut self) {
        self.progressed = true;
    }

    /// A session that made progress, or outlived the longest pause, is not a flapping one.
    fn was_healthy(&self, max_pause: Duration) -> bool {
        self.progressed || self.started.elapsed() >= max_pause
    }
}

/// A source's two steps; everything between them is [`supervise`]'s.
pub trait Supervised: Send {
    /// What `connect` opens and `consume` uses up (and closes).
    type Conn: Send;

    /// Where the source reads from, for logs; never with credentials.
    fn peer(&self) -> String;

    /// Opens a connection. The future is dropped if the agent stops meanwhile.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn, Failure>> + Send;

    /// Consumes until the source is done — `Ok`: the agent stopped or the source finished —
    /// or the connection fails. Watches `cx.shutdown` itself, so that it can finish or abandon
    /// the batch in hand as its acknowledgement rules require.
    fn consume(
        &mut self,
        conn: Self::Conn,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Runs `source` until it finishes, the agent stops (both `Ok`) or a step fails fatally.
/// After a retryable failure it logs the error and the pause, and connects again after the
/// pause; the pauses grow from one failure to the next until a session is healthy (see
/// [`Session::mark_progress`]).
pub async fn supervise<S: Supervised>(
    source: &mut S,
    cx: &mut SourceContext,
    mut backoff: Backoff,
) -> Result<(), SourceError> {
    let mut attempt = 0u32;
    loop {
        let connected = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => return Ok(()),
            r = source.connect() => r,
        };
        let failure = match connected {
            Ok(conn) => {
                let mut session = Session::new();
                match source.consume(conn, cx, &mut session).await {
                    Ok(()) => return Ok(()),
                    Err(f) => {
                        if session.was_healthy(backoff.max()) {
                            backoff.reset();
                            attempt = 0;
                        }
                        f
                    }
                }
            }
            Err(f) => f,
        };
        let (what, error) = match failure {
            Failure::Fatal(e) => return Err(e),
            Failure::Retry { what, error } => (what, error),
        };
        attempt = attempt.saturating_add(1);
        let delay = backoff.next_delay();
        tracing::warn!(
            source = %cx.name,
            peer = %source.peer(),
            error = %error,
            attempt,
            retry_in = ?delay,
            "{what}; reconnecting"
        );
        if sleep_or_cancelled(&cx.shutdown, delay).await {
            return Ok(());
        }
    }
}

/// Exponentially growing pauses with jitter, from `min` to at most `max`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// `min` is raised to 1 ms (a zero pause would never grow) and `max` to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        // backon's jitter adds up to 100% to the base pause. Capping the base at half of `max`
        // keeps the pauses of many sources spread out even at the cap, so that they do not all
        // hit a recovering broker at once.
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay((max / 2).max(min))
            .with_jitter()
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// The next pause: the first is in `[min, 2·min)`, each base doubles, none exceeds `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Starts over from `min`.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    pub fn max(&self) -> Duration {
        self.max
    }
}

/// Sleeps for `delay` unless `token` is cancelled first. Returns `true` when the token was
/// cancelled (already, or during the sleep): the caller should stop; `false` after a full
/// sleep.
#[must_use = "true means the agent is stopping"]
pub async fn sleep_or_cancelled(token: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::{
        dlq::DeadLetters, metrics::Metrics, selector::Replicating, source::ChannelProcessor,
    };

    const MS: Duration = Duration::from_millis(1);

    fn context() -> SourceContext {
        let m = Metrics::new();
        SourceContext {
            name: "src".into(),
            out: ChannelProcessor::new(
                Vec::new(),
                Box::new(Replicating::new(Vec::new())),
                Vec::new(),
                DeadLetters::new(None, m.dlq(), "src"),
                m.source("src"),
            ),
            shutdown: CancellationToken::new(),
        }
    }

    /// What a fake consume step does.
    enum Consume {
        /// Fails at once.
        Fail,
        /// Marks progress, then fails.
        ProgressThenFail,
        /// Fails after this long.
        FailAfter(Duration),
        /// Fails fatally.
        Fatal,
        /// Returns `Ok` (the source is done).
        Finish,
    }

    /// A source whose steps follow a script; it records when `connect` was called.
    #[derive(Default)]
    struct Fake {
        /// Retryable connect failures still to come.
        connect_failures: usize,
        fatal_connect: bool,
        hang_on_connect: bool,
        consumes: VecDeque<Consume>,
        connects: Vec<Instant>,
        consumed: usize,
        /// The token to cancel when a connect fails (to cancel during the backoff sleep).
        cancel_on_failure: Option<CancellationToken>,
    }

    impl Supervised for Fake {
        type Conn = usize;

        fn peer(&self) -> String {
            "fake:1".into()
        }

        async fn connect(&mut self) -> Result<usize, Failure> {
            self.connects.push(Instant::now());
            if self.hang_on_connect {
                std::future::pending::<()>().await;
            }
            if self.fatal_connect {
                return Err(SourceError::Io(std::io::Error::other("bad config")).into());
            }
            if self.connect_failures > 0 {
                self.connect_failures -= 1;
                if let Some(t) = &self.cancel_on_failure {
                    t.cancel();
                }
                return Err(Failure::retry("cannot connect", "refused"));
            }
            Ok(self.connects.len())
        }

        async fn consume(
            &mut self,
            conn: usize,
            _cx: &mut SourceContext,
            session: &mut Session,
        ) -> Result<(), Failure> {
            assert_eq!(conn, self.connects.len(), "the connection just made");
            self.consumed += 1;
            match self.consumes.pop_front().unwrap_or(Consume::Finish) {
                Consume::Fail => Err(Failure::retry("lost the connection", "reset by peer")),
                Consume::ProgressThenFail => {
                    session.mark_progress();
                    Err(Failure::retry("lost the connection", "reset by peer"))
                }
                Consume::FailAfter(d) => {
                    tokio::time::sleep(d).await;
                    Err(Failure::retry("lost the connection", "reset by peer"))
                }
                Consume::Fatal => Err(SourceError::Io(std::io::Error::other("closed")).into()),
                Consume::Finish => Ok(()),
            }
        }
    }

    impl Fake {
        /// The pauses between successive connects.
        fn gaps(&self) -> Vec<Duration> {
            self.connects.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    fn backoff() -> Backoff {
        Backoff::new(100 * MS, 1000 * MS)
    }

    /// `d` lies in `[lo, hi]`, allowing for the timer's millisecond rounding.
    fn within(d: Duration, lo: Duration, hi: Duration) -> bool {
        d >= lo && d <= hi + 2 * MS
    }

    #[test]
    fn delays_grow_with_jitter_and_are_capped() {
        let mut b = backoff();
        let first: Vec<Duration> = (0..3).map(|_| b.next_delay()).collect();
        for (i, d) in first.iter().enumerate() {
            let base = 100 * MS * (1u32 << i);
            assert!(*d >= base && *d < 2 * base, "delay {i}: {d:?}");
        }
        let capped: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(
            capped.iter().all(|d| *d >= 500 * MS && *d <= 1000 * MS),
            "{capped:?}"
        );
        let mut distinct = capped.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 10, "jitter spreads pauses: {capped:?}");

        b.reset();
        assert!(b.next_delay() < 200 * MS, "reset starts over");

        let mut odd = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(odd.max(), MS);
        assert!(
            (0..5).all(|_| odd.next_delay() == MS),
            "zero is raised to 1ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_connects_back_off_longer_each_time_up_to_the_cap() {
        let mut cx = context();
        let mut fake = Fake {
            connect_failures: 6,
            ..Fake::default()
        };
        supervise(&mut fake, &mut cx, backoff()).await.unwrap();
        assert_eq!(fake.connects.len(), 7);
        assert_eq!(fake.consumed, 1, "consumed once connected");
        let gaps = fake.gaps();
        // Bases 100, 200, 400 ms, then capped at 500 ms; jitter adds up to as much again.
        for (i, gap) in gaps.iter().take(3).enumerate() {
            let base = 100 * MS * (1u32 << i);
            assert!(within(*gap, base, 2 * base), "gap {i}: {gaps:?}");
        }
        for gap in &gaps[3..] {
            assert!(within(*gap, 500 * MS, 1000 * MS), "{gaps:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_connection_is_replaced() {
        let mut cx = context();
        let mut fake = Fake {
            consumes: VecDeque::from([Consume::Fail, Consume::Fail, Consume::Finish]),
            ..Fake::default()
        };
        supervise(&mut fake, &mut cx, backoff()).await.unwrap();
        assert_eq!((fake.connects.len(), fake.consumed), (3, 3));
        let gaps = fake.gaps();
        assert!(within(gaps[0], 100 * MS, 200 * MS), "{gaps:?}");
        assert!(
            within(gaps[1], 200 * MS, 400 * MS),
            "a session without progress does not reset the backoff: {gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_session_starts_the_backoff_over() {
        let mut cx = context();
        let mut fake = Fake {
            connect_failures: 3,
            consumes: VecDeque::from([
                Consume::ProgressThenFail,
                Consume::Fail,
                Consume::FailAfter(1000 * MS),
                Consume::Finish,
            ]),
            ..Fake::default()
        };
        supervise(&mut fake, &mut cx, backoff()).await.unwrap();
        let gaps = fake.gaps();
        assert_eq!(gaps.len(), 6, "{gaps:?}");
        assert!(within(gaps[2], 400 * MS, 800 * MS), "grown: {gaps:?}");
        assert!(
            within(gaps[3], 100 * MS, 200 * MS),
            "after progress: {gaps:?}"
        );
        assert!(within(gaps[4], 200 * MS, 400 * MS), "no progress: {gaps:?}");
        // The third session lasted the longest pause (1 s) before failing.
        let pause = gaps[5] - 1000 * MS;
        assert!(within(pause, 100 * MS, 200 * MS), "long-lived: {gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_failures_end_the_source_without_retrying() {
        let mut cx = context();
        let mut fake = Fake {
            fatal_connect: true,
            ..Fake::default()
        };
        let r = supervise(&mut fake, &mut cx, backoff()).await;
        assert!(matches!(r, Err(SourceError::Io(_))), "{r:?}");
        assert_eq!((fake.connects.len(), fake.consumed), (1, 0));

        let mut fake = Fake {
            consumes: VecDeque::from([Consume::Fail, Consume::Fatal]),
            ..Fake::default()
        };
        let r = supervise(&mut fake, &mut cx, backoff()).await;
        assert!(matches!(r, Err(SourceError::Io(_))), "{r:?}");
        assert_eq!((fake.connects.len(), fake.consumed), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_during_a_pause_returns_at_once() {
        let mut cx = context();
        let mut fake = Fake {
            connect_failures: usize::MAX,
            cancel_on_failure: Some(cx.shutdown.clone()),
            ..Fake::default()
        };
        let start = Instant::now();
        let long = Backoff::new(Duration::from_secs(3600), Duration::from_secs(7200));
        supervise(&mut fake, &mut cx, long).await.unwrap();
        assert_eq!(fake.connects.len(), 1);
        assert!(start.elapsed() < MS * 10, "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_during_a_connect_returns_at_once() {
        let mut cx = context();
        let shutdown = cx.shutdown.clone();
        let mut fake = Fake {
            hang_on_connect: true,
            ..Fake::default()
        };
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            shutdown.cancel();
        });
        let start = Instant::now();
        supervise(&mut fake, &mut cx, backoff()).await.unwrap();
        stopper.await.unwrap();
        assert!(within(
            start.elapsed(),
            Duration::from_secs(5),
            Duration::from_secs(5)
        ));
        assert_eq!((fake.connects.len(), fake.consumed), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_or_cancelled_says_whether_the_token_was_cancelled() {
        let token = CancellationToken::new();
        let start = Instant::now();
        assert!(!sleep_or_cancelled(&token, 300 * MS).await, "slept");
        assert!(within(start.elapsed(), 300 * MS, 300 * MS));

        let later = token.clone();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(50 * MS).await;
            later.cancel();
        });
        let start = Instant::now();
        assert!(sleep_or_cancelled(&token, Duration::from_secs(60)).await);
        assert!(within(start.elapsed(), 50 * MS, 50 * MS), "promptly");
        canceller.await.unwrap();

        let start = Instant::now();
        assert!(sleep_or_cancelled(&token, Duration::from_secs(60)).await);
        assert_eq!(start.elapsed(), Duration::ZERO, "already cancelled");
    }

    #[test]
    fn sessions_are_healthy_after_progress_or_a_long_life() {
        let mut s = Session::new();
        assert!(!s.was_healthy(Duration::from_secs(60)));
        assert!(s.was_healthy(Duration::ZERO));
        s.mark_progress();
        assert!(s.was_healthy(Duration::from_secs(60)));
    }
}
