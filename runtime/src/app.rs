//! Running an agent: start everything, wait for the end (sources done, or a stop signal),
//! drain in order, and report.
//!
//! Shutdown order: sources stop first; then runners of ordinary channels drain until their
//! channel is empty; then runners of dead-letter channels (which the first group may still
//! feed) drain. After a stop signal, draining is bounded by `shutdown_timeout`; past it the
//! runners roll back their leases and whatever remains is reported.

use std::{
    fmt::Write as _,
    io::IsTerminal,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use sluice_core::{
    config::{ConfigErrors, Pipeline},
    metrics::Metrics,
    sink::runner::RunnerControl,
    source::SourceContext,
    topology::{self, Topology},
};

use crate::admin::{self, AdminState};

/// Per-component counts at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub elapsed: Duration,
    pub stopped_by_signal: bool,
    pub source_errors: Vec<String>,
    /// name, received, accepted, dropped, dead-lettered
    pub sources: Vec<(String, u64, u64, u64, u64)>,
    /// name, events remaining (not delivered)
    pub channels: Vec<(String, usize)>,
    /// name, delivered, dead-lettered, discarded
    pub sinks: Vec<(String, u64, u64, u64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.source_errors.is_empty()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let how = if self.stopped_by_signal {
            "stopped"
        } else {
            "finished"
        };
        let _ = writeln!(s, "sluice: {how} in {:.2?}", self.elapsed);
        for (n, rx, acc, drop, dlq) in &self.sources {
            let _ = writeln!(
                s,
                "  source  {n}: received {rx}, accepted {acc}, dropped {drop}, dead-lettered {dlq}"
            );
        }
        for (n, left) in &self.channels {
            let _ = writeln!(s, "  channel {n}: {left} events remaining");
        }
        for (n, out, dlq, disc) in &self.sinks {
            let _ = writeln!(
                s,
                "  sink    {n}: delivered {out}, dead-lettered {dlq}, discarded {disc}"
            );
        }
        for e in &self.source_errors {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}

/// Builds and runs `pipeline` until its sources end or a stop signal arrives.
pub async fn run(pipeline: Pipeline) -> Result<Report, ConfigErrors> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::new());
    // Building compiles plugins, opens RocksDB and may fetch OCI artifacts: blocking work.
    let topo =
        sluice_core::blocking::run(|| topology::build(&pipeline, &metrics, crate::registry()))?;
    let Topology {
        channels,
        sources,
        runners,
        dlq_runner,
        sinks,
        plugins,
    } = topo;

    let admin_state = Arc::new(AdminState {
        metrics: Arc::clone(&metrics),
        ready: false.into(),
        plugins: Arc::clone(&plugins),
        channels: channels.clone(),
    });
    let admin_stop = CancellationToken::new();
    plugins.watch(admin_stop.clone());
    if let Some(a) = &pipeline.admin {
        let access = admin::Access::new(a.token.as_ref().map(|t| t.expose()), a.public_metrics);
        match admin::serve(
            a.listen,
            access,
            Arc::clone(&admin_state),
            admin_stop.clone(),
        )
        .await
        {
            Ok(addr) => tracing::info!(%addr, "admin server listening"),
            Err(e) => tracing::error!(addr = %a.listen, error = %e, "admin server could not start"),
        }
    }

    // Sink runners first, so nothing waits on a channel with no reader.
    let (first, last) = (RunnerControl::default(), RunnerControl::default());
    let mut first_runners = JoinSet::new();
    let mut last_runners = JoinSet::new();
    for (runner, is_dlq) in runners.into_iter().zip(dlq_runner) {
        if is_dlq {
            last_runners.spawn(runner.run(last.clone()));
        } else {
            first_runners.spawn(runner.run(first.clone()));
        }
    }

    let stop_sources = CancellationToken::new();
    let mut source_tasks = JoinSet::new();
    let expected: Option<u64> = sources.iter().map(|s| s.expected).sum();
    let source_metrics: Vec<_> = sources
        .iter()
        .map(|s| (s.name.clone(), s.metrics.clone()))
        .collect();
    for s in sources {
        let cx = SourceContext {
            name: s.name.clone(),
            out: s.processor,
            shutdown: stop_sources.clone(),
        };
        let name = s.name;
        source_tasks.spawn(async move { (name, s.source.run(cx).await) });
    }
    admin_state.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        sources = source_metrics.len(),
        channels = channels.len(),
        sinks = sinks.len(),
        "pipeline running"
    );

    let progress = Progress::start(
        expected,
        source_metrics
            .iter()
            .map(|(_, m)| m.accepted.clone())
            .collect(),
    );

    // Wait for every source to end, or a signal.
    let signalled = CancellationToken::new();
    tokio::spawn(forward_signals(signalled.clone()));
    let mut report = Report::default();
    loop {
        tokio::select! {
            joined = source_tasks.join_next() => match joined {
                None => break,
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((name, Err(e)))) => {
                    tracing::error!(source = %name, error = %e, "source failed; stopping the agent");
                    report.source_errors.push(format!("source {name}: {e}"));
                    stop_sources.cancel();
                }
                Some(Err(e)) => {
                    report.source_errors.push(format!("source task panicked: {e}"));
                    stop_sources.cancel();
                }
            },
            _ = signalled.cancelled(), if !report.stopped_by_signal => {
                tracing::info!("stop requested; stopping sources");
                report.stopped_by_signal = true;
                stop_sources.cancel();
            }
        }
    }
    admin_state.ready.store(false, Ordering::Relaxed);

    // Drain: bounded by shutdown_timeout once a stop was asked for (now or during the drain).
    let deadline = {
        let signalled = signalled.clone();
        let timeout = pipeline.settings.shutdown_timeout;
        let stopped = report.stopped_by_signal;
        async move {
            if !stopped {
                signalled.cancelled().await;
                tracing::info!("stop requested; draining for at most {timeout:?}");
            }
            tokio::time::sleep(timeout).await;
        }
    };
    tokio::pin!(deadline);
    for (ctl, set) in [(&first, &mut first_runners), (&last, &mut last_runners)] {
        ctl.drain.cancel();
        loop {
            tokio::select! {
                j = set.join_next() => if j.is_none() { break },
                _ = &mut deadline, if !ctl.abort.is_cancelled() => {
                    tracing::warn!("shutdown timeout reached; rolling back what is in flight");
                    first.abort.cancel();
                    last.abort.cancel();
                }
            }
        }
    }
    progress.finish();
    admin_stop.cancel();

    report.elapsed = started.elapsed();
    for (name, m) in &source_metrics {
        let dlq = metrics.dlq().total_for(name);
        report.sources.push((
            name.clone(),
            m.received.get(),
            m.accepted.get(),
            m.dropped.get(),
            dlq,
        ));
    }
    for (name, ch) in &channels {
        report.channels.push((name.clone(), ch.stats().events));
    }
    for s in &sinks {
        report.sinks.push((
            s.name.clone(),
            s.metrics.drained.get(),
            metrics.dlq().total_for(&s.name),
            s.metrics.discarded.get(),
        ));
    }
    Ok(report)
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn forward_signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

/// A progress line on a terminal; nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    stop: CancellationToken,
}

impl Progress {
    fn start(
        expected: Option<u64>,
        accepted: Vec<prometheus_client::metrics::counter::Counter>,
    ) -> Self {
        let stop = CancellationToken::new();
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, stop };
        }
        let bar = match expected {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {pos} events ({per_sec})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        let (b, s) = (bar.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !s.is_cancelled() {
                tick.tick().await;
                b.set_position(accepted.iter().map(|c| c.get()).sum());
            }
        });
        Progress {
            bar: Some(bar),
            stop,
        }
    }

    fn finish(self) {
        self.stop.cancel();
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
