//! Prometheus metrics: one registry per agent, Flume's counter set in Prometheus naming.
//!
//! Components get small handle structs (cloned counters) at build time, so the hot path does
//! one atomic add per batch and never looks a label set up. The same counters feed the
//! end-of-run summary, so the summary and `/metrics` can never disagree.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, atomic::AtomicU64},
};

use crate::tap::{TapPoint, Taps};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub component: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DlqLabels {
    pub component: String,
    pub stage: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginDigestLabels {
    pub plugin: String,
    pub digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginKindLabels {
    pub plugin: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCounterLabels {
    pub plugin: String,
    pub name: String,
}

/// The outcome of a live reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub pipeline: String,
    pub result: String,
}

/// The running configuration's hash.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabel {
    pub pipeline: String,
    pub hash: String,
}

/// A sink's remote endpoint (an address of an agent-to-agent hop).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub component: String,
    pub endpoint: String,
}

/// A source's remote sender (a hop's origin: the sending agent's sink and channel).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    pub component: String,
    pub origin: String,
}

type Hist = Family<ComponentLabel, Histogram, fn() -> Histogram>;
type PluginHist = Family<PluginLabel, Histogram, fn() -> Histogram>;

/// The agent's metric families. A clone shares them; a [`scoped`](Metrics::scoped) clone
/// names its components `<pipeline>/<name>`, so several pipelines in one agent do not mix
/// their counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Prefix of every component label (empty: one pipeline per agent).
    scope: Arc<str>,
    /// Each pipeline's running configuration hash (`sluice_config_info`).
    config_hashes: Arc<Mutex<HashMap<String, String>>>,
    source_received: Family<ComponentLabel, Counter>,
    source_accepted: Family<ComponentLabel, Counter>,
    source_dropped: Family<ComponentLabel, Counter>,
    source_rejected: Family<ReasonLabels, Counter>,
    channel_events: Family<ComponentLabel, Gauge>,
    channel_capacity: Family<ComponentLabel, Gauge>,
    channel_fill: Family<ComponentLabel, Gauge<f64, AtomicU64>>,
    channel_put: Family<ComponentLabel, Counter>,
    channel_take: Family<ComponentLabel, Counter>,
    channel_rollbacks: Family<ComponentLabel, Counter>,
    channel_corrupt: Family<ComponentLabel, Counter>,
    channel_fsyncs: Family<ComponentLabel, Counter>,
    sink_drained: Family<ComponentLabel, Counter>,
    sink_batch_duration: Hist,
    sink_retries: Family<ComponentLabel, Counter>,
    sink_discarded: Family<ComponentLabel, Counter>,
    dlq_events: Family<DlqLabels, Counter>,
    plugin_calls: Family<PluginDigestLabels, Counter>,
    plugin_duration: PluginHist,
    plugin_traps: Family<PluginKindLabels, Counter>,
    plugin_swaps: Family<PluginLabel, Counter>,
    plugin_swap_failures: Family<PluginLabel, Counter>,
    plugin_counters: Family<PluginCounterLabels, Counter>,
    plugin_limited: Family<PluginKindLabels, Counter>,
    plugin_adjustments: Family<PluginKindLabels, Counter>,
    plugin_call_limit: Family<PluginLabel, Gauge>,
    plugin_healthy: Family<PluginLabel, Gauge>,
    endpoint_sent: Family<EndpointLabels, Counter>,
    endpoint_acked: Family<EndpointLabels, Counter>,
    endpoint_duplicates: Family<EndpointLabels, Counter>,
    endpoint_failures: Family<EndpointLabels, Counter>,
    endpoint_backoff: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    endpoint_rtt: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    origin_events: Family<OriginLabels, Counter>,
    origin_duplicates: Family<OriginLabels, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    config_info: Family<HashLabel, Gauge>,
    config_reloaded_at: Gauge,
    /// Live taps (not Prometheus metrics, but made and found alongside them).
    taps: Arc<Taps>,
    /// The latest dead-lettered batches, newest first (the console shows their reasons).
    recent_dead: Arc<Mutex<VecDeque<RecentDead>>>,
}

fn call_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_005, 4.0, 10,
    ))
}

fn batch_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 4.0, 10,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let m = Metrics {
            source_received: Family::default(),
            source_accepted: Family::default(),
            source_dropped: Family::default(),
            source_rejected: Family::default(),
            channel_events: Family::default(),
            channel_capacity: Family::default(),
            channel_fill: Family::default(),
            channel_put: Family::default(),
            channel_take: Family::default(),
            channel_rollbacks: Family::default(),
            channel_corrupt: Family::default(),
            channel_fsyncs: Family::default(),
            sink_drained: Family::default(),
            sink_batch_duration: Family::new_with_constructor(batch_buckets),
            sink_retries: Family::default(),
            sink_discarded: Family::default(),
            dlq_events: Family::default(),
            plugin_calls: Family::default(),
            plugin_duration: Family::new_with_constructor(call_buckets),
            plugin_traps: Family::default(),
            plugin_swaps: Family::default(),
            plugin_swap_failures: Family::default(),
            plugin_counters: Family::default(),
            plugin_limited: Family::default(),
            plugin_adjustments: Family::default(),
            plugin_call_limit: Family::default(),
            plugin_healthy: Family::default(),
            endpoint_sent: Family::default(),
            endpoint_acked: Family::default(),
            endpoint_duplicates: Family::default(),
            endpoint_failures: Family::default(),
            endpoint_backoff: Family::default(),
            endpoint_rtt: Family::new_with_constructor(batch_buckets),
            origin_events: Family::default(),
            origin_duplicates: Family::default(),
            config_reloads: Family::default(),
            config_info: Family::default(),
            config_reloaded_at: Gauge::default(),
            registry: Arc::new(Registry::default()),
            scope: Arc::from(""),
            config_hashes: Arc::default(),
            taps: Arc::default(),
            recent_dead: Arc::default(),
        };
        let r = &mut registry;
        r.register(
            "source_events_received",
            "Events received by a source",
            m.source_received.clone(),
        );
        r.register(
            "source_events_accepted",
            "Events committed to the source's channels",
            m.source_accepted.clone(),
        );
        r.register(
            "source_events_dropped",
            "Events dropped by interceptors",
            m.source_dropped.clone(),
        );
        r.register(
            "source_requests_rejected",
            "Batches or requests a source refused",
            m.source_rejected.clone(),
        );
        r.register(
            "channel_events",
            "Events held by a channel (queued + in flight)",
            m.channel_events.clone(),
        );
        r.register(
            "channel_capacity_events",
            "Channel capacity in events",
            m.channel_capacity.clone(),
        );
        r.register(
            "channel_fill_ratio",
            "Held events / capacity",
            m.channel_fill.clone(),
        );
        r.register(
            "channel_put",
            "Events put into a channel",
            m.channel_put.clone(),
        );
        r.register(
            "channel_take",
            "Events committed out of a channel",
            m.channel_take.clone(),
        );
        r.register(
            "channel_rollbacks",
            "Events returned to a channel by rollback",
            m.channel_rollbacks.clone(),
        );
        r.register(
            "channel_corrupt_records",
            "Stored records that failed verification and were moved to the quarantine",
            m.channel_corrupt.clone(),
        );
        r.register(
            "channel_fsyncs",
            "Synced writes of a durable channel (concurrent puts share one)",
            m.channel_fsyncs.clone(),
        );
        r.register(
            "sink_events_drained",
            "Events a sink delivered",
            m.sink_drained.clone(),
        );
        r.register(
            "sink_batch_duration_seconds",
            "Time to deliver one batch, retries included",
            m.sink_batch_duration.clone(),
        );
        r.register("sink_retries", "Delivery retries", m.sink_retries.clone());
        r.register(
            "sink_events_discarded",
            "Poison events discarded because no dead-letter channel was configured",
            m.sink_discarded.clone(),
        );
        r.register(
            "dlq_events",
            "Events sent to a dead-letter channel",
            m.dlq_events.clone(),
        );
        r.register(
            "plugin_calls",
            "Calls into a plugin (one per batch)",
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_call_duration_seconds",
            "Duration of one plugin call",
            m.plugin_duration.clone(),
        );
        r.register(
            "plugin_traps",
            "Failed plugin calls by kind (trap, deadline, memory, ...)",
            m.plugin_traps.clone(),
        );
        r.register(
            "plugin_swaps",
            "Plugin versions swapped in",
            m.plugin_swaps.clone(),
        );
        r.register(
            "plugin_swap_failures",
            "Plugin versions refused on reload",
            m.plugin_swap_failures.clone(),
        );
        r.register(
            "plugin_counter",
            "Counters a plugin reports through the host interface",
            m.plugin_counters.clone(),
        );
        r.register(
            "plugin_limited",
            "Host calls a plugin made past a sandbox limit, by kind (log lines dropped or cut, \
             counter names refused, sleeps refused)",
            m.plugin_limited.clone(),
        );
        r.register(
            "plugin_adjustments",
            "What the host did about a plugin's limits, by kind: call size lowered or raised \
             (calls are sized to a quarter of the deadline), instance recycled for its memory \
             or number of calls, a failed call's events bisected",
            m.plugin_adjustments.clone(),
        );
        r.register(
            "plugin_call_limit",
            "Events the next call into a plugin may carry (learnt from the time calls take)",
            m.plugin_call_limit.clone(),
        );
        r.register(
            "plugin_healthy",
            "1 while a plugin is healthy, 0 after repeated failures",
            m.plugin_healthy.clone(),
        );
        r.register(
            "sink_endpoint_sent",
            "Events a sink sent to one remote endpoint (each attempt counts)",
            m.endpoint_sent.clone(),
        );
        r.register(
            "sink_endpoint_acknowledged",
            "Events a remote endpoint acknowledged as stored by it",
            m.endpoint_acked.clone(),
        );
        r.register(
            "sink_endpoint_duplicates",
            "Events a remote endpoint answered as already stored (a retry after a lost reply)",
            m.endpoint_duplicates.clone(),
        );
        r.register(
            "sink_endpoint_failures",
            "Requests to a remote endpoint that failed or were refused (each is retried)",
            m.endpoint_failures.clone(),
        );
        r.register(
            "sink_endpoint_backoff_seconds",
            "Seconds left before a remote endpoint in backoff is tried again (0: healthy)",
            m.endpoint_backoff.clone(),
        );
        r.register(
            "sink_endpoint_round_trip_seconds",
            "Round trip of one request to a remote endpoint, answer included",
            m.endpoint_rtt.clone(),
        );
        r.register(
            "source_origin_events",
            "Events a source stored from one remote sender",
            m.origin_events.clone(),
        );
        r.register(
            "source_origin_duplicates",
            "Events from one remote sender that were already stored and were not stored again",
            m.origin_duplicates.clone(),
        );
        r.register(
            "config_reloads",
            "Live reloads of the pipeline file by result (applied, unchanged, refused)",
            m.config_reloads.clone(),
        );
        r.register(
            "config_info",
            "1 for the hash of the configuration that runs",
            m.config_info.clone(),
        );
        r.register(
            "config_last_reload_timestamp_seconds",
            "When the configuration last changed by a live reload (Unix time)",
            m.config_reloaded_at.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Counts a live reload's outcome; an applied one also records its time.
    pub fn config_reloaded(&self, pipeline: &str, result: &str) {
        self.config_reloads
            .get_or_create(&ResultLabel {
                pipeline: pipeline.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if result == "applied" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.config_reloaded_at.set(now);
        }
    }

    /// Marks `hash` as the configuration of `pipeline` that runs (and no other); the reload
    /// counters of the pipeline exist from then on, at 0.
    pub fn config_running(&self, pipeline: &str, hash: &str) {
        for result in ["applied", "unchanged", "refused"] {
            drop(self.config_reloads.get_or_create(&ResultLabel {
                pipeline: pipeline.to_owned(),
                result: result.into(),
            }));
        }
        let mut hashes = self.config_hashes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = hashes.insert(pipeline.to_owned(), hash.to_owned()) {
            self.config_info.remove(&HashLabel {
                pipeline: pipeline.to_owned(),
                hash: old,
            });
        }
        self.config_info
            .get_or_create(&HashLabel {
                pipeline: pipeline.to_owned(),
                hash: hash.to_owned(),
            })
            .set(1);
    }

    /// These families with components named `<pipeline>/<name>`.
    pub fn scoped(&self, pipeline: &str) -> Metrics {
        Metrics {
            scope: Arc::from(format!("{pipeline}/")),
            ..self.clone()
        }
    }

    /// A component's name as its metrics label it.
    pub fn component(&self, name: &str) -> String {
        format!("{}{name}", self.scope)
    }

    /// The remote endpoints of sink `name` (they come and go as names are resolved).
    pub fn endpoints(&self, name: &str) -> EndpointFamily {
        EndpointFamily {
            component: self.component(name),
            sent: self.endpoint_sent.clone(),
            acked: self.endpoint_acked.clone(),
            duplicates: self.endpoint_duplicates.clone(),
            failures: self.endpoint_failures.clone(),
            backoff: self.endpoint_backoff.clone(),
            round_trip: self.endpoint_rtt.clone(),
        }
    }

    /// The remote senders of source `name`.
    pub fn origins(&self, name: &str) -> OriginFamily {
        OriginFamily {
            component: self.component(name),
            events: self.origin_events.clone(),
            duplicates: self.origin_duplicates.clone(),
        }
    }

    /// The latest dead-lettered batches of the agent, newest first.
    pub fn recent_dead(&self) -> Vec<RecentDead> {
        let recent = self.recent_dead.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    /// Every tap point of the agent (shared by its pipelines).
    pub fn taps(&self) -> &Arc<Taps> {
        &self.taps
    }

    /// Tap point `point` of component `name`: `<component>:<point>`.
    pub fn tap(&self, name: &str, point: &str) -> Arc<TapPoint> {
        self.taps
            .point(&format!("{}:{point}", self.component(name)))
    }

    pub fn source(&self, name: &str) -> SourceMetrics {
        let l = self.label(name);
        SourceMetrics {
            input: self.tap(name, "input"),
            output: self.tap(name, "output"),
            taps: self.taps.clone(),
            component: self.component(name),
            received: self.source_received.get_or_create(&l).clone(),
            accepted: self.source_accepted.get_or_create(&l).clone(),
            dropped: self.source_dropped.get_or_create(&l).clone(),
            rejected: self.source_rejected.clone(),
        }
    }

    pub fn channel(&self, name: &str) -> ChannelMetrics {
        let l = self.label(name);
        ChannelMetrics {
            events: self.channel_events.get_or_create(&l).clone(),
            capacity: self.channel_capacity.get_or_create(&l).clone(),
            fill: self.channel_fill.get_or_create(&l).clone(),
            put: self.channel_put.get_or_create(&l).clone(),
            take: self.channel_take.get_or_create(&l).clone(),
            rollbacks: self.channel_rollbacks.get_or_create(&l).clone(),
            corrupt: self.channel_corrupt.get_or_create(&l).clone(),
            fsyncs: self.channel_fsyncs.get_or_create(&l).clone(),
            tap: self.tap(name, "put"),
        }
    }

    pub fn sink(&self, name: &str) -> SinkMetrics {
        let l = self.label(name);
        SinkMetrics {
            drained: self.sink_drained.get_or_create(&l).clone(),
            batch_duration: self.sink_batch_duration.get_or_create(&l).clone(),
            retries: self.sink_retries.get_or_create(&l).clone(),
            discarded: self.sink_discarded.get_or_create(&l).clone(),
            tap: self.tap(name, "delivered"),
        }
    }

    pub fn plugin(&self, name: &str) -> PluginMetrics {
        let l = PluginLabel {
            plugin: self.component(name),
        };
        PluginMetrics {
            plugin: self.component(name),
            calls: self.plugin_calls.clone(),
            duration: self.plugin_duration.get_or_create(&l).clone(),
            traps: self.plugin_traps.clone(),
            swaps: self.plugin_swaps.get_or_create(&l).clone(),
            swap_failures: self.plugin_swap_failures.get_or_create(&l).clone(),
            counters: self.plugin_counters.clone(),
            limited: self.plugin_limited.clone(),
            adjustments: self.plugin_adjustments.clone(),
            call_limit: self.plugin_call_limit.get_or_create(&l).clone(),
            healthy: self.plugin_healthy.get_or_create(&l).clone(),
        }
    }

    pub fn dlq(&self) -> DlqMetrics {
        DlqMetrics(
            self.dlq_events.clone(),
            Arc::clone(&self.scope),
            self.taps.point(&format!("{}dlq", self.scope)),
            Arc::clone(&self.recent_dead),
        )
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Metrics {
    fn label(&self, name: &str) -> ComponentLabel {
        ComponentLabel {
            component: self.component(name),
        }
    }
}

#[derive(Clone)]
pub struct SourceMetrics {
    pub component: String,
    pub received: Counter,
    pub accepted: Counter,
    pub dropped: Counter,
    rejected: Family<ReasonLabels, Counter>,
    /// What the source read, before any interceptor.
    pub input: Arc<TapPoint>,
    /// What the interceptors let through, before the selector.
    pub output: Arc<TapPoint>,
    taps: Arc<Taps>,
}

impl SourceMetrics {
    /// What interceptor `n` (0-based) of this source's chain let through.
    pub fn interceptor_tap(&self, n: usize) -> Arc<TapPoint> {
        self.taps.point(&format!("{}:{n}", self.component))
    }

    /// Counts a refused batch/request; `reason` is a short fixed word (bounded cardinality).
    pub fn rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                component: self.component.clone(),
                reason: reason.into(),
            })
            .inc();
    }
}

#[derive(Clone)]
pub struct ChannelMetrics {
    pub events: Gauge,
    pub capacity: Gauge,
    pub fill: Gauge<f64, AtomicU64>,
    pub put: Counter,
    pub take: Counter,
    pub rollbacks: Counter,
    /// Durable channels only: records quarantined.
    pub corrupt: Counter,
    /// Durable channels only: synced writes.
    pub fsyncs: Counter,
    /// Batches committed by puts.
    pub tap: Arc<TapPoint>,
}

#[derive(Clone)]
pub struct SinkMetrics {
    pub drained: Counter,
    pub batch_duration: Histogram,
    pub retries: Counter,
    pub discarded: Counter,
    /// Batches the sink reported delivered.
    pub tap: Arc<TapPoint>,
}

/// The endpoints of one sink (see [`Metrics::endpoints`]).
#[derive(Clone)]
pub struct EndpointFamily {
    component: String,
    sent: Family<EndpointLabels, Counter>,
    acked: Family<EndpointLabels, Counter>,
    duplicates: Family<EndpointLabels, Counter>,
    failures: Family<EndpointLabels, Counter>,
    backoff: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    round_trip: Family<EndpointLabels, Histogram, fn() -> Histogram>,
}

impl EndpointFamily {
    pub fn get(&self, endpoint: &str) -> EndpointMetrics {
        let l = EndpointLabels {
            component: self.component.clone(),
            endpoint: endpoint.to_owned(),
        };
        EndpointMetrics {
            sent: self.sent.get_or_create(&l).clone(),
            acked: self.acked.get_or_create(&l).clone(),
            duplicates: self.duplicates.get_or_create(&l).clone(),
            failures: self.failures.get_or_create(&l).clone(),
            backoff: self.backoff.get_or_create(&l).clone(),
            round_trip: self.round_trip.get_or_create(&l).clone(),
        }
    }
}

/// The senders of one source (see [`Metrics::origins`]).
#[derive(Clone)]
pub struct OriginFamily {
    component: String,
    events: Family<OriginLabels, Counter>,
    duplicates: Family<OriginLabels, Counter>,
}

impl OriginFamily {
    pub fn get(&self, origin: &str) -> OriginMetrics {
        let l = OriginLabels {
            component: self.component.clone(),
            origin: origin.to_owned(),
        };
        OriginMetrics {
            events: self.events.get_or_create(&l).clone(),
            duplicates: self.duplicates.get_or_create(&l).clone(),
        }
    }
}

/// One remote endpoint of a sink.
#[derive(Clone)]
pub struct EndpointMetrics {
    pub sent: Counter,
    pub acked: Counter,
    pub duplicates: Counter,
    pub failures: Counter,
    pub backoff: Gauge<f64, AtomicU64>,
    pub round_trip: Histogram,
}

/// One remote sender of a source.
#[derive(Clone)]
pub struct OriginMetrics {
    pub events: Counter,
    pub duplicates: Counter,
}

#[derive(Clone)]
/// The DLQ counters, with the scope of the [`Metrics`] they came from.
pub struct DlqMetrics(
    Family<DlqLabels, Counter>,
    Arc<str>,
    Arc<TapPoint>,
    Arc<Mutex<VecDeque<RecentDead>>>,
);

/// A batch of dead letters, as the console lists the latest ones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentDead {
    pub at_ms: i64,
    pub component: String,
    pub stage: &'static str,
    pub class: &'static str,
    /// The first event's reason.
    pub reason: String,
    pub events: u64,
}

/// How many dead-letter batches [`Metrics::recent_dead`] keeps.
const RECENT_DEAD: usize = 20;

impl DlqMetrics {
    /// Every dead letter of the pipeline, with its reason headers.
    pub fn tap(&self) -> &TapPoint {
        &self.2
    }

    /// Keeps a dead-lettered batch's reason among the agent's latest (one lock per batch; a
    /// DLQ is not the hot path).
    pub fn remember(
        &self,
        component: &str,
        stage: &'static str,
        class: &'static str,
        reason: &str,
        events: u64,
    ) {
        let mut recent = self.3.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_DEAD {
            recent.pop_back();
        }
        recent.push_front(RecentDead {
            at_ms: chrono::Utc::now().timestamp_millis(),
            component: format!("{}{component}", self.1),
            stage,
            class,
            reason: reason.to_owned(),
            events,
        });
    }

    pub fn add(&self, component: &str, stage: &str, reason: &str, n: u64) {
        self.0
            .get_or_create(&DlqLabels {
                component: format!("{}{component}", self.1),
                stage: stage.into(),
                reason: reason.into(),
            })
            .inc_by(n);
    }

    /// Events sent to a DLQ by `component`, all stages and reasons.
    pub fn total_for(&self, component: &str) -> u64 {
        // Family has no public iteration; the summary asks per known reason class instead.
        crate::dlq::Class::ALL
            .iter()
            .flat_map(|r| crate::dlq::Stage::ALL.iter().map(move |s| (r, s)))
            .map(|(r, s)| {
                self.0
                    .get(&DlqLabels {
                        component: format!("{}{component}", self.1),
                        stage: s.as_str().into(),
                        reason: r.as_str().into(),
                    })
                    .map_or(0, |c| c.get())
            })
            .sum()
    }
}

/// Metric handles of one plugin.
#[derive(Clone)]
pub struct PluginMetrics {
    plugin: String,
    calls: Family<PluginDigestLabels, Counter>,
    pub duration: Histogram,
    traps: Family<PluginKindLabels, Counter>,
    pub swaps: Counter,
    pub swap_failures: Counter,
    counters: Family<PluginCounterLabels, Counter>,
    limited: Family<PluginKindLabels, Counter>,
    adjustments: Family<PluginKindLabels, Counter>,
    /// Events the next call may carry.
    pub call_limit: Gauge,
    pub healthy: Gauge,
}

impl PluginMetrics {
    pub fn calls(&self, digest: &str) -> Counter {
        self.calls
            .get_or_create(&PluginDigestLabels {
                plugin: self.plugin.clone(),
                digest: digest.to_owned(),
            })
            .clone()
    }

    pub fn trap(&self, kind: &str) {
        self.traps
            .get_or_create(&PluginKindLabels {
                plugin: self.plugin.clone(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts a host call refused or cut by a sandbox limit (`kind` names the limit).
    pub fn limited(&self, kind: &str) -> Counter {
        self.limited
            .get_or_create(&PluginKindLabels {
                plugin: self.plugin.clone(),
                kind: kind.to_owned(),
            })
            .clone()
    }

    /// Counts something the host did about the plugin's limits (`kind` is a fixed word).
    pub fn adjusted(&self, kind: &str) -> Counter {
        self.adjustments
            .get_or_create(&PluginKindLabels {
                plugin: self.plugin.clone(),
                kind: kind.to_owned(),
            })
            .clone()
    }

    pub fn counter(&self, name: &str) -> Counter {
        self.counters
            .get_or_create(&PluginCounterLabels {
                plugin: self.plugin.clone(),
                name: name.to_owned(),
            })
            .clone()
    }
}
