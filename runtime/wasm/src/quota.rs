//! What one plugin may ask of the host besides its calls: log lines (host `log`, stdout and
//! stderr) and counter names. Both are bounded so that a plugin, however it misbehaves, cannot
//! flood the agent's log or its metrics: lines are cut to [`MAX_LINE`] bytes and rate-limited
//! (what is dropped is counted and reported in one line once logging resumes), and a plugin
//! gets at most [`MAX_COUNTER_NAMES`] counter names. The quota is shared by every instance of
//! the plugin, so a recycled instance starts with no fresh allowance.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus_client::metrics::counter::Counter;

use super::PluginMetrics;

/// Longest log line kept; the rest is cut and the line says how much was cut.
pub const MAX_LINE: usize = 4096;
/// Lines per second a plugin may log once its burst is spent.
pub const LINES_PER_SECOND: f64 = 100.0;
/// Lines a plugin may log at once (at start, or after a quiet spell).
pub const LINE_BURST: f64 = 500.0;
/// Distinct counter names a plugin may report.
pub const MAX_COUNTER_NAMES: usize = 64;
/// Longest counter name accepted.
pub const MAX_COUNTER_NAME: usize = 128;

pub struct GuestQuota {
    plugin: Arc<str>,
    metrics: PluginMetrics,
    lines: Mutex<LineBucket>,
    counters: Mutex<HashMap<String, Counter>>,
}

/// A token bucket of log lines.
struct LineBucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last one logged.
    dropped: u64,
}

impl GuestQuota {
    pub fn new(plugin: Arc<str>, metrics: PluginMetrics) -> Arc<GuestQuota> {
        Arc::new(GuestQuota {
            plugin,
            metrics,
            lines: Mutex::new(LineBucket {
                tokens: LINE_BURST,
                refilled: Instant::now(),
                dropped: 0,
            }),
            counters: Mutex::new(HashMap::new()),
        })
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Logs one line from the plugin at `level`; `stream` is `stdout`/`stderr` for what the
    /// guest printed, `None` for the host `log` call. `cut_before` counts bytes of the line the
    /// caller already left out.
    pub fn log(
        &self,
        level: tracing::Level,
        stream: Option<&'static str>,
        message: &[u8],
        cut_before: usize,
    ) {
        let dropped = {
            let mut b = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let earned = now.duration_since(b.refilled).as_secs_f64() * LINES_PER_SECOND;
            b.tokens = (b.tokens + earned).min(LINE_BURST);
            b.refilled = now;
            if b.tokens < 1.0 {
                b.dropped += 1;
                drop(b);
                self.metrics.limited("log_line_dropped").inc();
                return;
            }
            b.tokens -= 1.0;
            std::mem::take(&mut b.dropped)
        };
        let plugin = &*self.plugin;
        if dropped > 0 {
            tracing::warn!(
                plugin,
                dropped,
                "plugin logged faster than {LINES_PER_SECOND} lines/s: lines dropped"
            );
        }
        let kept = &message[..message.len().min(MAX_LINE)];
        let text = String::from_utf8_lossy(kept);
        let text = text.trim_end();
        let cut = message.len() - kept.len() + cut_before;
        if cut > 0 {
            self.metrics.limited("log_line_cut").inc();
        }
        let stream = stream.unwrap_or("log");
        macro_rules! emit {
            ($mac:ident) => {
                if cut > 0 {
                    tracing::$mac!(plugin, stream, "{text} [{cut} more bytes cut]")
                } else {
                    tracing::$mac!(plugin, stream, "{text}")
                }
            };
        }
        match level {
            tracing::Level::ERROR => emit!(error),
            tracing::Level::WARN => emit!(warn),
            tracing::Level::INFO => emit!(info),
            tracing::Level::DEBUG => emit!(debug),
            tracing::Level::TRACE => emit!(trace),
        }
    }

    /// Counts a sleep refused for running past the call's deadline.
    pub fn note_sleep_refused(&self) {
        self.metrics.limited("sleep_refused").inc();
    }

    /// Adds `delta` to the plugin's counter `name` (negative deltas are ignored: counters only
    /// grow). A name past the plugin's allowance, or too long, is refused and counted.
    pub fn counter_add(&self, name: &str, delta: i64) {
        if delta <= 0 {
            return;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counters.get(name) {
            c.inc_by(delta as u64);
            return;
        }
        if counters.len() >= MAX_COUNTER_NAMES || name.is_empty() || name.len() > MAX_COUNTER_NAME {
            drop(counters);
            self.metrics.limited("counter_name_refused").inc();
            return;
        }
        let c = self.metrics.counter(name);
        c.inc_by(delta as u64);
        counters.insert(name.to_owned(), c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> (Arc<GuestQuota>, sluice_core::metrics::Metrics) {
        let m = sluice_core::metrics::Metrics::new();
        (GuestQuota::new("q".into(), m.plugin("q")), m)
    }

    fn metric(m: &sluice_core::metrics::Metrics, needle: &str) -> u64 {
        m.encode()
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn a_flood_of_lines_is_cut_to_the_rate() {
        let (q, m) = quota();
        for _ in 0..10_000 {
            q.log(tracing::Level::INFO, None, b"spam", 0);
        }
        let dropped = metric(&m, "kind=\"log_line_dropped\"");
        // The burst and at most a few lines earned while looping get through.
        assert!(
            (10_000 - LINE_BURST as u64 - 50..=10_000 - LINE_BURST as u64).contains(&dropped),
            "{dropped} dropped"
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let (q, m) = quota();
        q.log(
            tracing::Level::INFO,
            Some("stdout"),
            &vec![b'x'; 10 << 20],
            0,
        );
        assert_eq!(metric(&m, "kind=\"log_line_cut\""), 1);
    }

    #[test]
    fn counter_names_are_bounded_per_plugin() {
        let (q, m) = quota();
        for i in 0..1000 {
            q.counter_add(&format!("name_{i}"), 1);
        }
        q.counter_add("name_0", 5);
        q.counter_add(&"n".repeat(MAX_COUNTER_NAME + 1), 1);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("sluice_plugin_counter_total{"))
            .count();
        assert_eq!(series, MAX_COUNTER_NAMES, "{text}");
        assert!(text.contains("name=\"name_0\"} 6"), "{text}");
        assert_eq!(
            metric(&m, "kind=\"counter_name_refused\""),
            1000 - MAX_COUNTER_NAMES as u64 + 1
        );
    }
}
