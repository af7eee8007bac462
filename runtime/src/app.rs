//! Running an agent: start everything, wait for the end (sources done, or a stop signal),
//! drain in order, and report.
//!
//! Shutdown order: sources stop first; then runners of ordinary channels drain until their
//! channel is empty; then runners of dead-letter channels (which the first group may still
//! feed) drain. After a stop signal, draining is bounded by `shutdown_timeout`; past it the
//! runners roll back their leases and whatever remains is reported.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use sluice_core::{
    channel::Channel,
    config::{ConfigError, ConfigErrors, Pipeline, Pos},
    graph::Graph,
    metrics::{Metrics, SourceMetrics},
    plugin::PluginHost,
    sink::runner::RunnerControl,
    source::{RouteSlot, SourceContext, SourceError},
    topology::{self, BuiltSink, Only, Reuse, SourceFingerprints, Topology},
};

use crate::{
    admin::{self, AdminState, PipelineView},
    reload,
};

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
    /// The agent's metrics at the end, in the Prometheus text format (for benchmarks and
    /// tests that want a counter the summary does not print).
    pub metrics_text: String,
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

/// How a running agent re-reads its pipeline file for a live reload.
pub struct Reloads {
    /// What the pipeline is called (metrics, `GET /pipelines`) and where it comes from (its
    /// file, or its URL).
    pub name: String,
    pub source: String,
    /// Reads the file again, as it was read at start (with the same `--plugin` overrides).
    pub reread: Arc<dyn Fn() -> Result<Pipeline, ConfigErrors> + Send + Sync>,
    pub file: PathBuf,
    /// Reload when the file changes (`--no-watch` turns it off); SIGHUP and
    /// `POST /config/reload` always work.
    pub watch: bool,
    /// Another trigger, started with the agent (a pipeline URL's poller).
    pub trigger: Option<Trigger>,
}

/// Starts something that asks for reloads until the token is cancelled.
pub type Trigger = Box<dyn FnOnce(mpsc::Sender<reload::Request>, CancellationToken) + Send>;

/// Builds and runs `pipeline` until its sources end or a stop signal arrives.
pub async fn run(pipeline: Pipeline) -> Result<Report, ConfigErrors> {
    run_with(pipeline, None).await
}

/// [`run`], reloading the pipeline live when `reloads` is given (see [`crate::reload`]).
pub async fn run_with(
    pipeline: Pipeline,
    reloads: Option<Reloads>,
) -> Result<Report, ConfigErrors> {
    let mut reports = run_agent(vec![(pipeline, reloads)], Vec::new()).await?;
    Ok(reports.remove(0).1)
}

/// A directory of pipeline files the agent follows while it runs: a file that appears
/// starts a pipeline, a file that goes away stops its pipeline (drained as at a stop signal).
/// Changes of a running pipeline's file are its own live reloads.
pub struct PipelineDir {
    pub dir: PathBuf,
    /// Reads one of its files as the files given at start were read.
    pub open: Arc<OpenFn>,
}

/// Reads a pipeline file, with what reloads it.
pub type OpenFn = dyn Fn(&Path) -> Result<(Pipeline, Reloads), ConfigErrors> + Send + Sync;

/// Runs several pipelines in one agent, each with its own components (named
/// `<pipeline>/<name>` in metrics when there may be more than one), reloads and shutdown,
/// until all have ended — and, with `dirs`, until a stop signal, starting and stopping
/// pipelines as their files come and go. They share the admin server (which at most one of
/// them configures) and the stop signals. Nothing starts unless every pipeline given builds.
pub async fn run_agent(
    list: Vec<(Pipeline, Option<Reloads>)>,
    dirs: Vec<PipelineDir>,
) -> Result<Vec<(String, Report)>, ConfigErrors> {
    let started = Instant::now();
    let scoped = list.len() > 1 || !dirs.is_empty();
    let admins: Vec<&Pipeline> = list
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.admin.is_some())
        .collect();
    if let [first, rest @ ..] = admins.as_slice() {
        let errors: Vec<ConfigError> = rest
            .iter()
            .map(|p| ConfigError {
                file: p.file.clone(),
                pos: Pos::default(),
                component: Some("admin".into()),
                message: format!(
                    "only one pipeline of an agent configures the admin server (it serves them all); {} does already",
                    first.file.display()
                ),
            })
            .collect();
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
    }
    // The admin server's certificate is read now: a bad one refuses the start.
    let mut admin_config = None;
    if let Some(p) = admins.first() {
        let a = p.admin.clone().expect("admins have an admin section");
        let base = p.file.parent().map(Path::to_owned).unwrap_or_default();
        let tls = match &a.tls {
            None => None,
            Some(t) => match admin::tls_acceptor(t, &base) {
                Ok(acceptor) => Some(acceptor),
                Err(message) => {
                    return Err(ConfigErrors(vec![ConfigError {
                        file: p.file.clone(),
                        pos: Pos::default(),
                        component: Some("admin.tls".into()),
                        message,
                    }]));
                }
            },
        };
        admin_config = Some((a, tls));
    }

    let mut agent = Agent {
        root: Metrics::new(),
        scoped,
        views: Arc::new(RwLock::new(Vec::new())),
        admin_stop: CancellationToken::new(),
        signalled: CancellationToken::new(),
        tasks: tokio::task::JoinSet::new(),
        running: HashMap::new(),
        removed: BTreeSet::new(),
    };
    forward_signals(agent.signalled.clone());
    // Build every pipeline before starting any.
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (pipeline, reloads) in list {
        match agent.build(pipeline, reloads) {
            Ok(b) => built.push(b),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut expected = Some(0u64);
    let mut accepted = Vec::new();
    for b in &built {
        let topo = &b.4;
        expected = expected.and_then(|e| {
            topo.sources
                .iter()
                .map(|s| s.expected)
                .sum::<Option<u64>>()
                .map(|n| n + e)
        });
        accepted.extend(topo.sources.iter().map(|s| s.metrics.accepted.clone()));
    }
    let runs: Vec<PipelineRun> = built.into_iter().map(|b| agent.prepare(b)).collect();

    let admin_state = Arc::new(AdminState {
        metrics: Arc::new(agent.root.clone()),
        pipelines: Arc::clone(&agent.views),
        scoped,
        stop: agent.admin_stop.clone(),
    });
    if let Some((a, tls)) = admin_config {
        let access = admin::Access::new(a.token.as_ref().map(|t| t.expose()), a.public_metrics);
        let https = tls.is_some();
        match admin::serve(
            a.listen,
            access,
            tls,
            Arc::clone(&admin_state),
            agent.admin_stop.clone(),
        )
        .await
        {
            Ok(addr) => tracing::info!(%addr, https, "admin server listening"),
            Err(e) => tracing::error!(addr = %a.listen, error = %e, "admin server could not start"),
        }
    }

    let progress = Progress::start(expected, accepted);
    for run in runs {
        agent.spawn(run);
    }
    let (rescan_tx, mut rescan_rx) = mpsc::channel::<()>(4);
    for d in &dirs {
        reload::on_dir_change(&d.dir, rescan_tx.clone(), agent.admin_stop.clone());
    }
    let mut reports = Vec::new();
    loop {
        tokio::select! {
            Some(joined) = agent.tasks.join_next() => {
                // The task wraps the pipeline's own, so it does not panic itself.
                let Ok((name, report)) = joined else { continue };
                if agent.ended(&name) {
                    // A file of the same name may be back already.
                    let _ = rescan_tx.try_send(());
                }
                reports.push((name, report));
            }
            Some(()) = rescan_rx.recv() => agent.rescan(&dirs),
            _ = agent.signalled.cancelled(), if agent.tasks.is_empty() => break,
        }
        if agent.tasks.is_empty() && (dirs.is_empty() || agent.signalled.is_cancelled()) {
            break;
        }
    }
    progress.finish();
    agent.admin_stop.cancel();
    for (_, r) in &mut reports {
        r.elapsed = started.elapsed();
    }
    Ok(reports)
}

/// A built pipeline: its name, settings, reload source, metrics and topology.
type Built = (String, Pipeline, Option<Reloads>, Arc<Metrics>, Topology);

/// The pipelines an agent runs, and what they share.
struct Agent {
    root: Metrics,
    /// Components are named `<pipeline>/<name>` in metrics.
    scoped: bool,
    /// What the admin server sees, in the order the pipelines started.
    views: Arc<RwLock<Vec<Arc<PipelineView>>>>,
    admin_stop: CancellationToken,
    /// SIGINT or SIGTERM: every pipeline stops.
    signalled: CancellationToken,
    /// Each running pipeline's task: its name and report.
    tasks: tokio::task::JoinSet<(String, Report)>,
    /// Running pipelines by name: their file, and what stops that pipeline alone.
    running: HashMap<String, (PathBuf, CancellationToken)>,
    /// Pipelines stopped because their file went away (their view goes when they end).
    removed: BTreeSet<String>,
}

impl Agent {
    /// Builds a pipeline's topology (compiling plugins and opening durable channels, blocking
    /// work, done off the async workers).
    fn build(&self, pipeline: Pipeline, reloads: Option<Reloads>) -> Result<Built, ConfigErrors> {
        let name = reloads
            .as_ref()
            .map_or_else(|| pipeline_name(&pipeline.file), |r| r.name.clone());
        let metrics = Arc::new(if self.scoped {
            self.root.scoped(&name)
        } else {
            self.root.clone()
        });
        let topo =
            sluice_core::blocking::run(|| topology::build(&pipeline, &metrics, crate::registry()))?;
        Ok((name, pipeline, reloads, metrics, topo))
    }

    /// Makes a built pipeline's view and reload triggers; it runs once spawned.
    fn prepare(&mut self, (name, pipeline, reloads, metrics, topo): Built) -> PipelineRun {
        let hash = config_hash(&pipeline);
        metrics.config_running(&name, &hash);
        let status = reload::Status {
            name: name.clone(),
            source: reloads
                .as_ref()
                .map_or_else(|| pipeline.file.display().to_string(), |r| r.source.clone()),
            hash,
            since: reload::unix_now(),
            last_reload: None,
        };
        let (reload_tx, reload_rx) = mpsc::channel::<reload::Request>(16);
        let view = Arc::new(PipelineView {
            name: name.clone(),
            ready: false.into(),
            plugins: RwLock::new(Arc::clone(&topo.plugins)),
            channels: RwLock::new(topo.channels.clone()),
            graph: RwLock::new(Graph::of(&pipeline)),
            reload: reloads.as_ref().map(|_| reload_tx.clone()),
            status: RwLock::new(status),
        });
        // This pipeline's triggers end with it (or with the agent).
        let own = self.admin_stop.child_token();
        let mut reloads = reloads;
        if let Some(r) = &mut reloads {
            reload::on_sighup(reload_tx.clone(), own.clone());
            if r.watch {
                reload::on_change(&r.file, reload_tx.clone(), own.clone());
            }
            if let Some(start) = r.trigger.take() {
                start(reload_tx.clone(), own.clone());
            }
        }
        drop(reload_tx);
        let stop = self.signalled.child_token();
        let file = reloads
            .as_ref()
            .map_or_else(|| pipeline.file.clone(), |r| r.file.clone());
        self.running.insert(name.clone(), (file, stop.clone()));
        self.views
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&view));
        PipelineRun {
            name,
            pipeline,
            reloads,
            reload_rx,
            metrics,
            topo,
            view,
            signalled: stop,
            plugin_stop: own.child_token(),
            triggers: own,
        }
    }

    fn spawn(&mut self, run: PipelineRun) {
        let name = run.name.clone();
        let task = tokio::spawn(run.run());
        self.tasks.spawn(async move {
            let report = task.await.unwrap_or_else(|panic| Report {
                source_errors: vec![format!("pipeline {name} panicked: {panic}")],
                ..Report::default()
            });
            (name, report)
        });
    }

    /// A pipeline's task ended; true when it had been stopped because its file went away.
    fn ended(&mut self, name: &str) -> bool {
        self.running.remove(name);
        let removed = self.removed.remove(name);
        if removed {
            self.views
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|v| v.name != name);
        }
        removed
    }

    /// Starts the pipelines of files new in `dirs`, stops those whose file went away.
    fn rescan(&mut self, dirs: &[PipelineDir]) {
        if self.signalled.is_cancelled() {
            return;
        }
        for d in dirs {
            let files = match pipeline_files(&d.dir) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(dir = %d.dir.display(), error = %e, "cannot list the pipeline directory");
                    continue;
                }
            };
            for (name, (file, stop)) in &self.running {
                let here = file.parent() == Some(d.dir.as_path());
                if here && !files.contains(file) && !self.removed.contains(name) {
                    tracing::info!(pipeline = %name, file = %file.display(), "pipeline file removed; stopping the pipeline");
                    stop.cancel();
                    self.removed.insert(name.clone());
                }
            }
            for file in files {
                let name = pipeline_name(&file);
                if let Some((other, _)) = self.running.get(&name) {
                    if *other != file {
                        tracing::warn!(file = %file.display(), running = %other.display(), "a pipeline of this name runs already; not started");
                    }
                    continue;
                }
                match (d.open)(&file).and_then(|(p, r)| {
                    if p.admin.is_some() {
                        return Err(ConfigErrors(vec![ConfigError {
                            file: p.file.clone(),
                            pos: Pos::default(),
                            component: Some("admin".into()),
                            message: "a pipeline added while the agent runs cannot configure the admin server".into(),
                        }]));
                    }
                    self.build(p, Some(r))
                }) {
                    Ok(b) => {
                        tracing::info!(pipeline = %name, file = %file.display(), "new pipeline file; starting the pipeline");
                        let run = self.prepare(b);
                        self.spawn(run);
                    }
                    Err(e) => {
                        self.root.config_reloaded(&name, "refused");
                        tracing::error!(file = %file.display(), errors = %e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "), "new pipeline file refused");
                    }
                }
            }
        }
    }
}

/// The pipeline files of a directory (`*.yaml`, `*.yml`), sorted.
pub fn pipeline_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One pipeline of an agent, from its start to the end of its drain.
struct PipelineRun {
    name: String,
    pipeline: Pipeline,
    reloads: Option<Reloads>,
    reload_rx: mpsc::Receiver<reload::Request>,
    metrics: Arc<Metrics>,
    topo: Topology,
    view: Arc<PipelineView>,
    /// SIGINT or SIGTERM (every pipeline), or this pipeline's file went away: stop.
    signalled: CancellationToken,
    /// Ends the watch of this pipeline's plugin files (replaced when its plugins change).
    plugin_stop: CancellationToken,
    /// Ends what asks this pipeline for reloads (SIGHUP, its file, its URL).
    triggers: CancellationToken,
}

impl PipelineRun {
    async fn run(self) -> Report {
        let PipelineRun {
            name,
            pipeline,
            reloads,
            mut reload_rx,
            metrics,
            topo,
            view,
            signalled,
            plugin_stop,
            triggers,
        } = self;
        let stop_sources = CancellationToken::new();
        let (exits_tx, mut exits) = mpsc::unbounded_channel();
        topo.plugins.watch(plugin_stop.clone());
        let mut running = Running {
            name: name.clone(),
            pipeline,
            metrics: Arc::clone(&metrics),
            plugins: Arc::clone(&topo.plugins),
            plugin_stop,
            channels: topo.channels.clone(),
            sources: HashMap::new(),
            runners: HashMap::new(),
            fingerprints: (BTreeMap::new(), BTreeMap::new()),
            source_metrics: BTreeMap::new(),
            sinks: BTreeMap::new(),
            stop_sources: stop_sources.clone(),
            exits: exits_tx,
            generation: 0,
        };
        running.fingerprints = topology::component_fingerprints(&running.pipeline);
        running.start(topo);
        view.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            pipeline = %name,
            sources = running.sources.len(),
            channels = running.channels.len(),
            sinks = running.sinks.len(),
            "pipeline running"
        );

        // Wait for every source to end, or a signal; reload when asked.
        let mut report = Report::default();
        while !running.sources.is_empty() {
            tokio::select! {
                Some((source, generation, result)) = exits.recv() => {
                    if !running.exited(&source, generation) {
                        continue; // a source a reload replaced
                    }
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(pipeline = %name, source = %source, error = %e, "source failed; stopping the pipeline");
                            report.source_errors.push(format!("source {source}: {e}"));
                            stop_sources.cancel();
                        }
                        Err(panic) => {
                            report.source_errors.push(format!("source task panicked: {panic}"));
                            stop_sources.cancel();
                        }
                    }
                }
                Some(first) = reload_rx.recv(), if !stop_sources.is_cancelled() => {
                    // Requests that came in meanwhile are answered by this reload.
                    let mut waiting = vec![first];
                    while let Ok(r) = reload_rx.try_recv() {
                        waiting.push(r);
                    }
                    let origin = waiting[0].origin;
                    let answer = match &reloads {
                        Some(r) => running.reload(&r.reread, &view).await,
                        None => reload::Answer::Unchanged,
                    };
                    metrics.config_reloaded(&name, answer.result());
                    {
                        let mut st = view.status.write().unwrap_or_else(|p| p.into_inner());
                        if matches!(answer, reload::Answer::Applied { .. }) {
                            st.hash = config_hash(&running.pipeline);
                            st.since = reload::unix_now();
                        }
                        st.last_reload = Some((reload::unix_now(), origin, answer.clone()));
                    }
                    match &answer {
                        reload::Answer::Applied { changed } => tracing::info!(pipeline = %name, %origin, changed = %changed.join(", "), "configuration reloaded"),
                        reload::Answer::Unchanged => tracing::info!(pipeline = %name, %origin, "configuration unchanged"),
                        reload::Answer::Refused { errors } => tracing::error!(pipeline = %name, %origin, errors = %errors.join("; "), "configuration refused; the running pipeline is unchanged"),
                    }
                    for r in waiting {
                        if let Some(reply) = r.reply {
                            let _ = reply.send(answer.clone());
                        }
                    }
                }
                _ = signalled.cancelled(), if !report.stopped_by_signal => {
                    tracing::info!(pipeline = %name, "stop requested; stopping sources");
                    report.stopped_by_signal = true;
                    stop_sources.cancel();
                }
            }
        }
        view.ready.store(false, Ordering::Relaxed);
        running.plugin_stop.cancel();
        triggers.cancel();

        // Drain: bounded by shutdown_timeout once a stop was asked for (now or during the
        // drain).
        let deadline = {
            let signalled = signalled.clone();
            let timeout = running.pipeline.settings.shutdown_timeout;
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
        let mut aborted = false;
        // Runners of ordinary channels first, then those of dead-letter channels.
        for dlq_phase in [false, true] {
            let phase: Vec<String> = running
                .runners
                .iter()
                .filter(|(_, r)| r.is_dlq == dlq_phase)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &phase {
                running.runners[n].ctl.drain.cancel();
            }
            for n in phase {
                let Some(mut r) = running.runners.remove(&n) else {
                    continue;
                };
                loop {
                    tokio::select! {
                        _ = &mut r.task => break,
                        _ = &mut deadline, if !aborted => {
                            tracing::warn!("shutdown timeout reached; rolling back what is in flight");
                            aborted = true;
                            r.ctl.abort.cancel();
                            for other in running.runners.values() {
                                other.ctl.abort.cancel();
                            }
                        }
                    }
                }
            }
        }

        for (name, m) in &running.source_metrics {
            let dlq = metrics.dlq().total_for(name);
            report.sources.push((
                name.clone(),
                m.received.get(),
                m.accepted.get(),
                m.dropped.get(),
                dlq,
            ));
        }
        for (name, ch) in &running.channels {
            report.channels.push((name.clone(), ch.stats().events));
        }
        for (name, s) in &running.sinks {
            report.sinks.push((
                name.clone(),
                s.metrics.drained.get(),
                metrics.dlq().total_for(name),
                s.metrics.discarded.get(),
            ));
        }
        report.metrics_text = metrics.encode();
        report
    }
}

/// A pipeline's name: its file's stem.
pub fn pipeline_name(file: &std::path::Path) -> String {
    file.file_stem().map_or_else(
        || "pipeline".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// A short hash of the whole configuration (`sluice_config_info{hash}`).
fn config_hash(p: &Pipeline) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    p.fingerprints.hash(&mut h);
    format!("{:016x}", h.finish())
}

type Exit = (String, u64, Result<Result<(), SourceError>, String>);

/// A source that runs, and how to stop it.
struct RunningSource {
    stop: CancellationToken,
    /// Tells this run of the source from a later one of the same name.
    generation: u64,
    task: JoinHandle<()>,
    /// Ends the source's own task when it does not stop in time (blocked on a channel that
    /// will not drain); its batch in flight is then not acknowledged upstream.
    abort: tokio::task::AbortHandle,
    /// Where a reload leaves a new route (interceptors, selector, channels) for it.
    route: Arc<RouteSlot>,
}

/// A sink runner that runs, and how to stop it.
struct RunningRunner {
    ctl: RunnerControl,
    /// It reads a dead-letter channel: it drains last.
    is_dlq: bool,
    task: JoinHandle<()>,
}

/// Everything that runs, by name, so that a live reload can replace parts of it.
struct Running {
    /// The pipeline's name (metric labels).
    name: String,
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    plugins: Arc<dyn PluginHost>,
    /// Ends the watch of the plugins' files (a new host gets a new watch).
    plugin_stop: CancellationToken,
    channels: Vec<(String, Arc<dyn Channel>)>,
    sources: HashMap<String, RunningSource>,
    runners: HashMap<String, RunningRunner>,
    /// Of the running sources and runners (see [`topology::component_fingerprints`]).
    fingerprints: (SourceFingerprints, BTreeMap<String, u64>),
    /// Every source and sink that ran, for the report (their counters are cumulative).
    source_metrics: BTreeMap<String, SourceMetrics>,
    sinks: BTreeMap<String, BuiltSink>,
    stop_sources: CancellationToken,
    exits: mpsc::UnboundedSender<Exit>,
    generation: u64,
}

impl Running {
    /// Starts a topology's runners (first, so nothing waits on a channel with no reader),
    /// then its sources.
    fn start(&mut self, topo: Topology) {
        let Topology {
            sources,
            runners,
            dlq_runner,
            sinks,
            ..
        } = topo;
        for (runner, is_dlq) in runners.into_iter().zip(dlq_runner) {
            let ctl = RunnerControl::default();
            let name = runner.name.clone();
            let task = tokio::spawn(runner.run(ctl.clone()));
            self.runners
                .insert(name, RunningRunner { ctl, is_dlq, task });
        }
        for s in sources {
            self.generation += 1;
            let generation = self.generation;
            let stop = self.stop_sources.child_token();
            let route = s.processor.route_slot();
            let cx = SourceContext {
                name: s.name.clone(),
                out: s.processor,
                shutdown: stop.clone(),
            };
            let (name, exits) = (s.name.clone(), self.exits.clone());
            let source = s.source;
            let run = tokio::spawn(async move { source.run(cx).await });
            let abort = run.abort_handle();
            let task = tokio::spawn(async move {
                // A panic is reported like an error, by the main loop.
                let r = run.await.map_err(|e| e.to_string());
                let _ = exits.send((name, generation, r));
            });
            self.source_metrics.insert(s.name.clone(), s.metrics);
            self.sources.insert(
                s.name,
                RunningSource {
                    stop,
                    generation,
                    task,
                    abort,
                    route,
                },
            );
        }
        for s in sinks {
            self.sinks.insert(s.name.clone(), s);
        }
    }

    /// A source ended by itself; false for one a reload already replaced.
    fn exited(&mut self, name: &str, generation: u64) -> bool {
        if self
            .sources
            .get(name)
            .is_some_and(|s| s.generation == generation)
        {
            self.sources.remove(name);
            true
        } else {
            false
        }
    }

    /// Reads the file again and applies the difference: build what is new or changed while
    /// everything runs, and only if that succeeded, stop what changed or went away and start
    /// its replacement. Unchanged sources, runners and channels (with their events) are not
    /// touched.
    async fn reload(
        &mut self,
        reread: &Arc<dyn Fn() -> Result<Pipeline, ConfigErrors> + Send + Sync>,
        view: &PipelineView,
    ) -> reload::Answer {
        let refused = |errors: Vec<String>| reload::Answer::Refused { errors };
        let reread = Arc::clone(reread);
        let new = match sluice_core::blocking::run(move || reread()) {
            Ok(p) => p,
            Err(e) => return refused(e.0.iter().map(|e| e.to_string()).collect()),
        };
        let old = &self.pipeline;
        let file = new.file.display().to_string();
        let section = |p: &Pipeline, prefix: &str| -> BTreeMap<String, u64> {
            p.fingerprints
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let mut errors = Vec::new();
        // Plugins whose definition is new or changed are loaded (and `init`ed) by the build;
        // the others are carried over as they run.
        let (old_plugins, new_plugins) = (section(old, "plugins."), section(&new, "plugins."));
        let load_plugins: BTreeSet<String> = new_plugins
            .iter()
            .filter(|(k, v)| old_plugins.get(*k) != Some(*v))
            .map(|(k, _)| k["plugins.".len()..].to_owned())
            .collect();
        let removed_plugins: Vec<String> = old_plugins
            .keys()
            .filter(|k| !new_plugins.contains_key(*k))
            .map(|k| k["plugins.".len()..].to_owned())
            .collect();
        let plugins_change = !load_plugins.is_empty() || !removed_plugins.is_empty();
        if old.fingerprints.get("admin") != new.fingerprints.get("admin") {
            errors.push(format!(
                "{file}: admin: the admin server's settings change only with a restart"
            ));
        }
        // Channels: an unchanged one is kept with its events; a changed or removed one must
        // be empty.
        let mut keep: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        let mut dropped = Vec::new();
        for (name, ch) in &self.channels {
            let key = format!("channels.{name}");
            let (was, is) = (old.fingerprints.get(&key), new.fingerprints.get(&key));
            if was == is {
                keep.insert(name.clone(), Arc::clone(ch));
                continue;
            }
            let held = ch.stats().events;
            if held > 0 {
                let what = if is.is_some() { "changed" } else { "removed" };
                errors.push(format!(
                    "{file}: channels.{name}: {what} while it holds {held} events; a channel is replaced only when empty: first remove its sources (its sinks keep draining it), reload, then change it"
                ));
                continue;
            }
            // A durable channel cannot be opened again while it is open (its directory is
            // locked), and it stays open until the new pipeline is built.
            fn dir<'a>(p: &'a Pipeline, name: &str) -> Option<&'a std::path::Path> {
                p.channels
                    .iter()
                    .find(|c| c.name == name)
                    .and_then(|c| c.spec.storage_dir())
            }
            if let (Some(was), Some(is)) = (dir(old, name), dir(&new, name)) {
                if was == is {
                    errors.push(format!(
                        "{file}: channels.{name}: its settings change but not its directory `{}`, which stays locked while the running pipeline uses it; it is empty, so give it a new `path` (applied at once), or restart the agent",
                        is.display()
                    ));
                    continue;
                }
            }
            dropped.push(name.clone());
        }
        if !errors.is_empty() {
            return refused(errors);
        }

        let (src_fp, run_fp) = topology::component_fingerprints(&new);
        let changed = |now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>| {
            now.iter()
                .filter(|(n, fp)| before.get(*n) != Some(*fp))
                .map(|(n, _)| n.clone())
                .collect::<BTreeSet<String>>()
        };
        let gone = |now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>| {
            before
                .keys()
                .filter(|n| !now.contains_key(*n))
                .cloned()
                .collect::<Vec<String>>()
        };
        // A source whose own settings changed is rebuilt; one whose route alone changed
        // keeps running and takes the new route between two batches.
        let body = |m: &SourceFingerprints| -> BTreeMap<String, u64> {
            m.iter().map(|(n, (b, _))| (n.clone(), *b)).collect()
        };
        let restart = changed(&body(&src_fp), &body(&self.fingerprints.0));
        let reroutes = src_fp
            .iter()
            .filter(|(n, (_, r))| {
                !restart.contains(*n)
                    && self.fingerprints.0.get(*n).is_some_and(|(_, old)| old != r)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let only = Only {
            sources: restart,
            runners: changed(&run_fp, &self.fingerprints.1),
            reroutes,
        };
        let removed_sources = gone(&body(&src_fp), &body(&self.fingerprints.0));
        let removed_runners = gone(&run_fp, &self.fingerprints.1);
        let added_channels: Vec<String> = new
            .channels
            .iter()
            .filter(|c| !keep.contains_key(&c.name))
            .map(|c| c.name.clone())
            .collect();
        if only.sources.is_empty()
            && only.reroutes.is_empty()
            && only.runners.is_empty()
            && removed_sources.is_empty()
            && removed_runners.is_empty()
            && dropped.is_empty()
            && added_channels.is_empty()
            && !plugins_change
        {
            *view.graph.write().unwrap_or_else(|p| p.into_inner()) = Graph::of(&new);
            self.pipeline = new;
            return reload::Answer::Unchanged;
        }

        // Build before stopping anything.
        let reuse = Reuse {
            channels: keep,
            plugins: Some(Arc::clone(&self.plugins)),
            load_plugins: plugins_change.then(|| load_plugins.clone()),
        };
        let metrics = Arc::clone(&self.metrics);
        let built = sluice_core::blocking::run(|| {
            topology::build_part(&new, &metrics, crate::registry(), reuse, &only)
        });
        let mut topo = match built {
            Ok(t) => t,
            Err(e) => return refused(e.0.iter().map(|e| e.to_string()).collect()),
        };

        // Stop what changed or went away: sources first (their batch in flight committed or
        // rolled back), then runners (their take in hand finished).
        let grace = self.pipeline.settings.shutdown_timeout;
        let mut report = Vec::new();
        for name in only.sources.iter().chain(&removed_sources) {
            if let Some(s) = self.sources.remove(name) {
                s.stop.cancel();
                let abort = s.abort;
                stop_within(s.task, grace, move || abort.abort()).await;
                report.push(format!("sources.{name} stopped"));
            }
        }
        for name in only.runners.iter().chain(&removed_runners) {
            if let Some(r) = self.runners.remove(name) {
                r.ctl.retire.cancel();
                let abort = r.ctl.abort.clone();
                stop_within(r.task, grace, move || abort.cancel()).await;
                report.push(format!("sinks.{name} stopped"));
            }
        }
        for (name, ch) in &self.channels {
            if !topo.channels.iter().any(|(n, _)| n == name) || dropped.contains(name) {
                ch.close();
                report.push(format!("channels.{name} closed"));
            }
        }
        for name in &added_channels {
            report.push(format!("channels.{name} opened"));
        }
        self.channels = topo.channels.clone();
        *view.channels.write().unwrap_or_else(|p| p.into_inner()) = self.channels.clone();
        if plugins_change {
            // The new host holds the unchanged plugins too: hot swap and `GET /plugins` go
            // through it from now on.
            self.plugins = Arc::clone(&topo.plugins);
            *view.plugins.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&self.plugins);
            self.plugin_stop.cancel();
            self.plugin_stop = CancellationToken::new();
            self.plugins.watch(self.plugin_stop.clone());
            for name in &load_plugins {
                report.push(format!("plugins.{name} loaded"));
            }
            for name in &removed_plugins {
                report.push(format!("plugins.{name} removed"));
            }
        }
        for name in &removed_runners {
            self.sinks.remove(name);
        }
        for r in &topo.runners {
            report.push(format!("sinks.{} started", r.name));
        }
        for s in &topo.sources {
            report.push(format!("sources.{} started", s.name));
        }
        let routes = std::mem::take(&mut topo.routes);
        self.start(topo);
        // New routes last: the channels they name have their readers by now.
        for (name, route) in routes {
            if let Some(s) = self.sources.get(&name) {
                s.route.offer(route);
                report.push(format!("sources.{name} rerouted"));
            }
        }
        self.metrics.config_running(&self.name, &config_hash(&new));
        self.fingerprints = (src_fp, run_fp);
        *view.graph.write().unwrap_or_else(|p| p.into_inner()) = Graph::of(&new);
        self.pipeline = new;
        reload::Answer::Applied { changed: report }
    }
}

/// Waits for a stopping task; past `grace`, calls `hurry` (abort a runner's take) and waits
/// on, or cancels the task when there is nothing to hurry.
async fn stop_within(mut task: JoinHandle<()>, grace: Duration, hurry: impl FnOnce()) {
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        tracing::warn!("a component did not stop within shutdown_timeout; forcing it");
        hurry();
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM. The handlers are installed before this returns, so
/// a signal that arrives while the pipelines are still being built is not lost (nor fatal).
fn forward_signals(token: CancellationToken) {
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
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
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
