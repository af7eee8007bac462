//! `sluice test tests.yaml`: unit tests of a pipeline file. Each test injects events at a
//! source (through its interceptors and selector) or at one of its interceptors, and checks
//! what reached each named channel, sink or the DLQ. The interceptors, selectors and plugins
//! are the real ones; channels become memory channels and sinks are captured (what reaches a
//! sink is what its channel would hand it), so a test opens no storage and no connection.
//!
//! ```yaml
//! pipeline: fanout.yaml            # relative to this file
//! tests:
//!   - name: clicks go to the click files
//!     input:
//!       gen:                       # a source; `gen:1` enters before its second interceptor
//!         - { body: a click, headers: { kind: click } }
//!         - { json: { n: 1 }, headers: { kind: view } }
//!     expect:
//!       click_files: { count: 1, all: { headers: { kind: click }, body_contains: click } }
//!       dlq: { count: 0 }
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use sluice_core::{
    channel::{Channel, memory::MemoryChannelConfig},
    config::{self, Node, Pipeline, de},
    event::Event,
    metrics::Metrics,
    sink::null::NullSinkConfig,
    source::stdin::StdinConfig,
    topology,
};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The pipeline under test, relative to the test file.
    pub pipeline: PathBuf,
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Events per injection point: `source` or `source:<interceptor index>`.
    pub input: BTreeMap<String, Vec<InputEvent>>,
    /// Conditions per channel, sink, or `dlq` (the pipeline's dead-letter channel).
    pub expect: BTreeMap<String, Expectation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputEvent {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body as text …
    pub body: Option<String>,
    /// … or as JSON (written compactly).
    pub json: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub count: Option<usize>,
    /// Every event meets it.
    pub all: Option<Condition>,
    /// At least one event meets it.
    pub any: Option<Condition>,
    /// No event meets it.
    pub none: Option<Condition>,
    /// The events in order, one condition each (and exactly as many events).
    pub events: Option<Vec<Condition>>,
}

/// What an event must look like; every part given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Headers with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers that must not be there.
    #[serde(default)]
    pub absent_headers: Vec<String>,
    pub body: Option<String>,
    pub body_contains: Option<String>,
    /// JSON pointers into the body (`/user/id`) and the value each must have.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
}

impl Condition {
    /// Why `e` does not meet the condition, or `None` when it does.
    fn mismatch(&self, e: &Event) -> Option<String> {
        for (k, want) in &self.headers {
            match e.headers.get(k) {
                Some(v) if v == want => {}
                Some(v) => return Some(format!("header {k} is {v:?}, not {want:?}")),
                None => return Some(format!("no header {k} (wanted {want:?})")),
            }
        }
        for k in &self.absent_headers {
            if let Some(v) = e.headers.get(k) {
                return Some(format!("header {k} is there ({v:?})"));
            }
        }
        let body = String::from_utf8_lossy(&e.body);
        if let Some(want) = &self.body {
            if body != want.as_str() {
                return Some(format!("body is {body:?}, not {want:?}"));
            }
        }
        if let Some(part) = &self.body_contains {
            if !body.contains(part.as_str()) {
                return Some(format!("body {body:?} does not contain {part:?}"));
            }
        }
        if !self.json.is_empty() {
            let doc: serde_json::Value = match serde_json::from_slice(&e.body) {
                Ok(d) => d,
                Err(err) => return Some(format!("body is not JSON ({err}): {body:?}")),
            };
            for (pointer, want) in &self.json {
                match doc.pointer(pointer) {
                    Some(v) if v == want => {}
                    Some(v) => return Some(format!("{pointer} is {v}, not {want}")),
                    None => return Some(format!("{pointer} is missing in {doc}")),
                }
            }
        }
        None
    }
}

impl Expectation {
    /// Every way `events` (what reached `at`) falls short.
    fn failures(&self, at: &str, events: &[Event]) -> Vec<String> {
        let mut out = Vec::new();
        let mut fail = |m: String| out.push(format!("{at}: {m}"));
        if let Some(n) = self.count {
            if events.len() != n {
                fail(format!("{} events, expected {n}", events.len()));
            }
        }
        if let Some(c) = &self.all {
            for (i, e) in events.iter().enumerate() {
                if let Some(why) = c.mismatch(e) {
                    fail(format!("event {i}: {why}"));
                    break;
                }
            }
        }
        if let Some(c) = &self.any {
            if !events.iter().any(|e| c.mismatch(e).is_none()) {
                fail(format!(
                    "no event of {} matches `any`{}",
                    events.len(),
                    events
                        .first()
                        .and_then(|e| c.mismatch(e))
                        .map(|w| format!(" (the first: {w})"))
                        .unwrap_or_default()
                ));
            }
        }
        if let Some(c) = &self.none {
            if let Some(i) = events.iter().position(|e| c.mismatch(e).is_none()) {
                fail(format!("event {i} matches `none`"));
            }
        }
        if let Some(list) = &self.events {
            if list.len() != events.len() {
                fail(format!("{} events, expected {}", events.len(), list.len()));
            }
            for (i, (c, e)) in list.iter().zip(events).enumerate() {
                if let Some(why) = c.mismatch(e) {
                    fail(format!("event {i}: {why}"));
                }
            }
        }
        out
    }
}

/// Reads a test file; errors name its line and column.
pub fn read(path: &Path) -> Result<TestFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let node = Node::parse(&text, &|name| std::env::var(name).ok()).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}:{}: {}", path.display(), e.pos, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    de::from_node::<TestFile>(&node).map_err(|e| match e.pos {
        Some(pos) => format!("{}:{pos}: {}", path.display(), e.message),
        None => format!("{}: {}", path.display(), e.message),
    })
}

/// The pipeline with its channels made memory channels, its sources inert and its sinks
/// discarding: built, it is the real interceptors and selectors and nothing else.
fn stand_ins(mut p: Pipeline) -> Result<Pipeline, String> {
    let memory: Arc<dyn sluice_core::registry::ChannelSpec> = Arc::new(MemoryChannelConfig {
        capacity: 10_000_000,
        max_bytes: None,
    });
    let inert: StdinConfig =
        serde_json::from_value(serde_json::json!({})).map_err(|e| e.to_string())?;
    let inert: Arc<dyn sluice_core::registry::SourceSpec> = Arc::new(inert);
    for c in &mut p.channels {
        c.spec = Arc::clone(&memory);
    }
    for s in &mut p.sources {
        s.spec.spec = Arc::clone(&inert);
    }
    for k in &mut p.sinks {
        k.spec.spec = Arc::new(NullSinkConfig {});
    }
    Ok(p)
}

/// Everything a channel holds, taken and committed.
async fn drain(c: &Arc<dyn Channel>) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    while let Some(lease) = c
        .take(100_000, Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?
    {
        out.extend_from_slice(lease.events());
        lease.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn event(i: &InputEvent) -> Event {
    let body = match (&i.body, &i.json) {
        (_, Some(j)) => j.to_string(),
        (Some(b), None) => b.clone(),
        (None, None) => String::new(),
    };
    let mut e = Event::new(body);
    for (k, v) in &i.headers {
        e.headers.insert(k.clone(), v.clone());
    }
    e
}

/// Runs one test on a fresh build of `p`; the failures (none: it passed).
pub async fn run_case(p: &Pipeline, case: &TestCase) -> Result<Vec<String>, String> {
    let p = stand_ins(p.clone())?;
    let metrics = Metrics::new();
    let mut topo = topology::build(&p, &metrics, crate::registry()).map_err(|e| e.to_string())?;
    for (at, events) in &case.input {
        let (source, first) = match at.split_once(':') {
            Some((s, n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("input `{at}`: expected `source:<interceptor index>`"))?;
                (s, n)
            }
            None => (at.as_str(), 0),
        };
        let Some(s) = topo.sources.iter_mut().find(|s| s.name == source) else {
            return Err(format!(
                "input `{at}`: the pipeline has no source `{source}`"
            ));
        };
        let chain = s.processor.interceptors();
        if first > chain {
            return Err(format!(
                "input `{at}`: source `{source}` has {chain} interceptors"
            ));
        }
        let batch = events.iter().map(event).collect();
        s.processor
            .process_from(first, batch, None, &[])
            .await
            .map_err(|e| format!("input `{at}`: {e}"))?;
    }
    let mut held: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (name, c) in &topo.channels {
        held.insert(name.clone(), drain(c).await?);
    }
    let mut failures = Vec::new();
    for (at, expectation) in &case.expect {
        let channel = if at == "dlq" {
            p.settings
                .dlq
                .clone()
                .ok_or("`dlq`: the pipeline has no `dlq:` channel")?
        } else if let Some(k) = p.sinks.iter().find(|k| &k.name == at) {
            k.spec.common.channel.clone()
        } else if held.contains_key(at) {
            at.clone()
        } else {
            return Err(format!(
                "expect `{at}`: the pipeline has no sink or channel `{at}`"
            ));
        };
        failures.extend(expectation.failures(at, &held[&channel]));
    }
    Ok(failures)
}

/// The outcome of a test file: the pipeline (relative paths from the test file), each test's
/// name and failures.
pub async fn run_file(path: &Path) -> Result<Vec<(String, Vec<String>)>, String> {
    let file = read(path)?;
    let pipeline_path = path.parent().unwrap_or(Path::new(".")).join(&file.pipeline);
    let p = config::load_file(&pipeline_path, crate::registry()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for case in &file.tests {
        let failures = run_case(&p, case)
            .await
            .map_err(|e| format!("{}: test `{}`: {e}", path.display(), case.name))?;
        out.push((case.name.clone(), failures));
    }
    Ok(out)
}
