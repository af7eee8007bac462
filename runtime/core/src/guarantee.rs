//! What each path of a pipeline (source → channel → sink) guarantees when the agent crashes,
//! and why: what `sluice validate` prints, and what a sink's `delivery:` is checked against.
//!
//! Three things decide it. The source: does it acknowledge upstream (offset commit, ack,
//! delete, HTTP answer, saved position) only after its batch is committed, so that what a
//! crash interrupts is sent again? The channel: does what it holds survive a crash? The
//! sink: is writing the same events twice harmless (rows keyed on the event, batches the
//! receiver recognises)? A path that loses on any of the first two is at-most-once; one that
//! loses on neither is at-least-once (a batch delivered just before a crash is delivered
//! again), and exactly-once in effect when its sink writes idempotently.

use std::fmt;

use serde::Deserialize;

use crate::config::{
    InterceptorRef, Named, Pipeline, SinkConfig, SourceConfig, model::BuiltinInterceptor,
};

/// What a source does with its upstream around a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// It acknowledges only after the commit: how, in a few words.
    AckAfterCommit(&'static str),
    /// Nothing can send again what a crash interrupts: why.
    NoReplay(&'static str),
}

/// How a sink's writes are idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotence {
    /// Keyed on the event (a row's key, an item's, a Redis key): a write repeated for any
    /// reason leaves one copy, also of an event its source read twice when the key is stable
    /// across upstream redeliveries (a business key, an event id `from` the upstream offset).
    Keyed(String),
    /// Named by channel position (objects, hop batches): a batch delivered again overwrites
    /// its own copy, but an event the source puts into the channel twice is two events.
    Positional(String),
}

/// A path's guarantee on a crash, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    AtMostOnce,
    AtLeastOnce,
    /// At-least-once delivery into a sink whose writes are idempotent.
    ExactlyOnce,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::AtMostOnce => "at-most-once",
            Level::AtLeastOnce => "at-least-once",
            Level::ExactlyOnce => "exactly-once",
        })
    }
}

/// A sink's `delivery:`: the least its paths must guarantee, or the pipeline is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

impl Delivery {
    pub fn level(self) -> Level {
        match self {
            Delivery::AtLeastOnce => Level::AtLeastOnce,
            Delivery::ExactlyOnce => Level::ExactlyOnce,
        }
    }
}

/// One source → channel → sink path and what it guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub source: String,
    pub channel: String,
    pub sink: String,
    pub level: Level,
    /// Why, one clause per component that decides it (the breaking ones first).
    pub why: Vec<String>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} → {}: {} ({})",
            self.source,
            self.channel,
            self.sink,
            self.level,
            self.why.join("; ")
        )
    }
}

/// Every path of `p`: each source, each channel its selector may write to (not its DLQ), each
/// sink that reads that channel.
pub fn paths(p: &Pipeline) -> Vec<Path> {
    let mut out = Vec::new();
    for s in &p.sources {
        let common = &s.spec.common;
        let mut channels = s.spec.targets();
        channels.sort();
        channels.dedup();
        let dedup = common
            .interceptors
            .iter()
            .any(|i| matches!(i, InterceptorRef::Builtin(BuiltinInterceptor::Dedup { .. })));
        for c in &channels {
            let Some(channel) = p.channels.iter().find(|ch| &ch.name == c) else {
                continue;
            };
            for k in p.sinks.iter().filter(|k| &k.spec.common.channel == c) {
                if let Some(path) = transactional(s, channel, k) {
                    out.push(path);
                    continue;
                }
                let mut lost = Vec::new();
                let mut kept = Vec::new();
                match s.spec.spec.upstream() {
                    Upstream::AckAfterCommit(how) => {
                        kept.push(format!("sources.{}: {how}", s.name))
                    }
                    Upstream::NoReplay(why) => lost.push(format!("sources.{}: {why}", s.name)),
                }
                match channel.spec.crash_loss() {
                    None => kept.push(format!("channels.{c}: survives a crash")),
                    Some(why) => lost.push(format!("channels.{c}: {why}")),
                }
                let idempotent = k.spec.spec.idempotent();
                // A record read again after a crash (between the commit and the upstream
                // acknowledgement) enters the channel again, at a new position: only a keyed
                // sink or a dedup interceptor keeps it from being written twice.
                let (level, sink) = match (&idempotent, dedup) {
                    (None, _) => (
                        Level::AtLeastOnce,
                        format!(
                            "sinks.{}: a batch delivered just before a crash is delivered again",
                            k.name
                        ),
                    ),
                    (Some(Idempotence::Keyed(how)), _) => {
                        (Level::ExactlyOnce, format!("sinks.{}: {how}", k.name))
                    }
                    (Some(Idempotence::Positional(how)), true) => {
                        (Level::ExactlyOnce, format!("sinks.{}: {how}", k.name))
                    }
                    (Some(Idempotence::Positional(how)), false) => (
                        Level::AtLeastOnce,
                        format!(
                            "sinks.{}: {how}, but a record sources.{} reads again after a crash enters the channel again (a dedup interceptor on a stable event id removes it)",
                            k.name, s.name
                        ),
                    ),
                };
                let level = if lost.is_empty() {
                    level
                } else {
                    Level::AtMostOnce
                };
                // What decides the level comes first.
                let mut why = lost;
                if level != Level::AtMostOnce {
                    why.push(sink);
                    why.extend(kept);
                    if dedup {
                        why.push(format!(
                            "sources.{}: dedup drops events whose key it has seen (keep that key stable: an event id `from` the upstream offset)",
                            s.name
                        ));
                    }
                }
                out.push(Path {
                    source: s.name.clone(),
                    channel: c.clone(),
                    sink: k.name.clone(),
                    level,
                    why,
                });
            }
        }
    }
    out
}

/// A path into a sink that writes in transactions with `delivery: exactly_once` from a
/// source that leaves its upstream positions to it: exactly-once when the channel between
/// them keeps nothing across a crash (what it held is read again from the positions the last
/// transaction committed); a durable channel makes the source commit on its own, so the path
/// is at-least-once. `None` for every other path.
fn transactional(
    s: &Named<SourceConfig>,
    channel: &Named<std::sync::Arc<dyn crate::registry::ChannelSpec>>,
    k: &Named<SinkConfig>,
) -> Option<Path> {
    let how = k.spec.spec.transactions()?;
    if k.spec.common.delivery != Some(Delivery::ExactlyOnce)
        || !s.spec.spec.positions_in_transactions()
    {
        return None;
    }
    let (level, why) = match channel.spec.crash_loss() {
        Some(_) => (
            Level::ExactlyOnce,
            vec![
                format!("sinks.{}: {how}", k.name),
                format!(
                    "sources.{}: commits no offset itself; sinks.{} commits them with its records",
                    s.name, k.name
                ),
                format!(
                    "channels.{}: what it holds at a crash is read again from the last committed offsets",
                    channel.name
                ),
            ],
        ),
        None => (
            Level::AtLeastOnce,
            vec![format!(
                "channels.{}: a durable channel between them: sources.{} commits its offsets once a batch is stored there, not in sinks.{}'s transactions (use a memory channel)",
                channel.name, s.name, k.name
            )],
        ),
    };
    Some(Path {
        source: s.name.clone(),
        channel: channel.name.clone(),
        sink: k.name.clone(),
        level,
        why,
    })
}

/// The paths into sink `sink` that guarantee less than `want`.
pub fn short_of<'a>(paths: &'a [Path], sink: &str, want: Delivery) -> Vec<&'a Path> {
    paths
        .iter()
        .filter(|p| p.sink == sink && p.level < want.level())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::load_str, registry::Registry};

    fn load(text: &str) -> Result<Pipeline, crate::config::ConfigErrors> {
        load_str(
            std::path::Path::new("p.yaml"),
            text,
            &|_| None,
            &Registry::builtin(),
        )
    }

    const TWO_PATHS: &str = "\
channels:
  mem: { type: memory }
  other: { type: memory }
sources:
  logs: { type: file, paths: [/var/log/x.log], position_file: /tmp/x.pos, channels: [mem, other] }
  pipe: { type: stdin, channels: [mem] }
sinks:
  out: { type: file, channel: mem, path: /tmp/out }
  keep: { type: null, channel: other }
";

    #[test]
    fn every_source_channel_sink_path_is_listed_with_what_breaks_it_first() {
        let p = load(TWO_PATHS).unwrap();
        let all = paths(&p);
        let names: Vec<String> = all
            .iter()
            .map(|x| format!("{}>{}>{}", x.source, x.channel, x.sink))
            .collect();
        assert_eq!(names, ["logs>mem>out", "logs>other>keep", "pipe>mem>out"]);
        assert!(all.iter().all(|x| x.level == Level::AtMostOnce));
        assert_eq!(
            all[0].why,
            ["channels.mem: a memory channel: what it holds is lost if the agent crashes"]
        );
        assert_eq!(
            all[2].why.len(),
            2,
            "stdin and the memory channel: {:?}",
            all[2]
        );
        assert!(all[2].why[0].starts_with("sources.pipe: stdin"));
        assert_eq!(
            all[0].to_string(),
            "logs → mem → out: at-most-once (channels.mem: a memory channel: what it holds is lost if the agent crashes)"
        );
    }

    /// A sink that names what it writes by channel position (as the `s3` sink does).
    #[derive(Debug, serde::Deserialize)]
    struct ByPosition {}

    impl crate::registry::SinkSpec for ByPosition {
        fn build(
            &self,
            _: &crate::registry::BuildCx<'_>,
        ) -> Result<Box<dyn crate::sink::Sink>, String> {
            Err("not built in this test".into())
        }
        fn idempotent(&self) -> Option<Idempotence> {
            Some(Idempotence::Positional("named by position".into()))
        }
    }

    #[test]
    fn a_sink_named_by_position_needs_dedup_for_exactly_once() {
        let mut registry = Registry::builtin();
        registry
            .sinks
            .add("by_position", crate::registry::plain_sink::<ByPosition>);
        // The rocksdb channel lives in another crate: a stand-in that survives crashes.
        #[derive(Debug, serde::Deserialize)]
        struct Durable {}
        impl crate::registry::ChannelSpec for Durable {
            fn open(
                &self,
                _: &crate::registry::ChannelCx<'_>,
            ) -> Result<std::sync::Arc<dyn crate::channel::Channel>, String> {
                Err("not opened in this test".into())
            }
            fn crash_loss(&self) -> Option<&'static str> {
                None
            }
        }
        registry
            .channels
            .add("durable", crate::registry::plain_channel::<Durable>);
        let text = |interceptors: &str| {
            format!(
                "channels:\n  disk: {{ type: durable }}\nsources:\n  logs: {{ type: file, paths: [/x.log], position_file: /tmp/x.pos, channels: [disk]{interceptors} }}\nsinks:\n  out: {{ type: by_position, channel: disk }}\n"
            )
        };
        let level = |interceptors: &str| {
            let p = load_str(
                std::path::Path::new("p.yaml"),
                &text(interceptors),
                &|_| None,
                &registry,
            )
            .unwrap();
            let all = paths(&p);
            (all[0].level, all[0].why[0].clone())
        };
        let (without, why) = level("");
        assert_eq!(without, Level::AtLeastOnce);
        assert!(why.contains("reads again after a crash"), "{why}");
        let (with, why) = level(", interceptors: [ { type: dedup } ]");
        assert_eq!(
            (with, why.as_str()),
            (Level::ExactlyOnce, "sinks.out: named by position")
        );
    }

    #[test]
    fn a_delivery_the_paths_cannot_give_is_refused_at_its_field() {
        let text = TWO_PATHS.replace(
            "path: /tmp/out }",
            "path: /tmp/out, delivery: at_least_once }",
        );
        let errors = load(&text).unwrap_err().0;
        assert_eq!(errors.len(), 2, "one per path into `out`: {errors:?}");
        let e = &errors[0];
        assert_eq!((e.pos.line, e.component.as_deref()), (8, Some("sinks.out")));
        assert!(
            e.message.starts_with(
                "delivery: at-least-once: the path logs → mem → out is at-most-once: channels.mem"
            ),
            "{}",
            e.message
        );
        // `keep` asks for nothing: no error about it; a bad value is a plain field error.
        assert!(
            errors
                .iter()
                .all(|e| e.component.as_deref() == Some("sinks.out"))
        );
        let bad = TWO_PATHS.replace("channel: other }", "channel: other, delivery: twice }");
        let errors = load(&bad).unwrap_err().0;
        assert_eq!(errors[0].component.as_deref(), Some("sinks.keep"));
        assert!(errors[0].message.contains("exactly_once"), "{errors:?}");
    }
}
