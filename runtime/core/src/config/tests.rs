use std::{any::Any, path::Path};

use super::*;
use crate::{
    channel::memory::MemoryChannelConfig,
    event::codec::{CodecName, CodecRef},
    source::tail::{FileHeaders, FileSourceConfig, StartAt},
};

fn load(text: &str) -> Result<Pipeline, ConfigErrors> {
    load_with(text, &Registry::builtin())
}

fn load_with(text: &str, registry: &Registry) -> Result<Pipeline, ConfigErrors> {
    load_str(
        Path::new("p.yaml"),
        text,
        &|name| match name {
            "CAP" => Some("500".into()),
            _ => None,
        },
        registry,
    )
}

/// `(line, col, component, message fragment)` of every error, in order.
fn errors(text: &str) -> Vec<(usize, usize, Option<String>, String)> {
    load(text)
        .expect_err("config should be rejected")
        .0
        .into_iter()
        .map(|e| (e.pos.line, e.pos.col, e.component, e.message))
        .collect()
}

const GOOD: &str = "\
channels:
  mem: { type: memory, capacity: \"${CAP}\", max_bytes: 64MiB }
  dead: { type: memory }
sources:
  gen:
    type: generator
    count: 10
    channels: [mem]
    event_id: { header: id, from: [a, b] }
    interceptors:
      - { type: static, key: env, value: prod }
      - { type: regex_filter, regex: 'x+', exclude: true }
sinks:
  out: { type: file, channel: mem, path: 'out/%{env}-%Y.log', roll_size: 1MiB, dlq: dead }
  spare: { type: null, channel: mem, retry: { max_attempts: 3, initial_backoff: 10ms } }
  hop: { type: null, channel: mem, retry: { max_attempts: unlimited } }
sink_groups:
  g: { type: failover, sinks: [out, spare], priorities: { out: 10 } }
shutdown_timeout: 5s
";

#[test]
fn a_good_pipeline_loads() {
    let p = load(GOOD).unwrap();
    assert_eq!(p.channels.len(), 2);
    let any: &dyn Any = &*p.channels[0].spec;
    let m = any
        .downcast_ref::<MemoryChannelConfig>()
        .expect("a memory channel");
    assert_eq!(m.capacity, 500, "${{CAP}} interpolated into a number");
    assert_eq!(m.max_bytes.unwrap().0, 64 << 20);
    assert_eq!(p.sources[0].spec.common.interceptors.len(), 2);
    assert_eq!(
        p.sources[0].spec.common.event_id,
        Some(EventIdConfig {
            header: "id".into(),
            from: vec!["a".into(), "b".into()]
        })
    );
    assert_eq!(p.sinks[1].spec.common.retry.max_attempts, 3);
    assert_eq!(p.sinks[0].spec.common.retry.max_attempts, 10, "the default");
    assert_eq!(p.sinks[2].spec.common.retry.max_attempts, u32::MAX);
    assert_eq!(
        p.settings.shutdown_timeout,
        std::time::Duration::from_secs(5)
    );
    assert!(matches!(
        p.sink_groups[0].spec.kind,
        SinkGroupKind::Failover(_)
    ));
}

#[test]
fn all_errors_are_reported_at_once_with_positions() {
    let text = "\
channels:
  mem: { type: memory, capacty: 10 }
sources:
  gen: { type: generator, channels: [mme], rate: fast }
sinks:
  out: { type: file, path: x }
  late: { type: null, channel: mem, retry: { initial_backoff: 30 } }
";
    let errs = errors(text);
    let find = |frag: &str| {
        errs.iter()
            .find(|e| e.3.contains(frag))
            .unwrap_or_else(|| panic!("no error containing {frag:?} in {errs:#?}"))
            .clone()
    };
    assert_eq!(
        find("unknown field `capacty`"),
        (2, 24, Some("channels.mem".into()), find("capacty").3)
    );
    let rate = find("invalid type");
    assert_eq!(
        (rate.0, rate.1, rate.2.as_deref()),
        (4, 50, Some("sources.gen"))
    );
    let chan = find("missing field `channel`");
    assert_eq!((chan.0, chan.2.as_deref()), (6, Some("sinks.out")));
    let backoff = find("a unit is required");
    assert_eq!((backoff.0, backoff.1), (7, 63));
    assert!(errs.len() >= 4, "{errs:#?}");
}

#[test]
fn dangling_references_name_the_defined_ones() {
    let text = "\
channels:
  mem: { type: memory }
sources:
  gen: { type: generator, channels: [mem, nope], interceptors: [enrich] }
sinks:
  out: { type: null, channel: missing }
sink_groups:
  g: { type: load_balance, sinks: [out, ghost] }
";
    let errs = errors(text);
    let msgs: Vec<_> = errs.iter().map(|e| (e.0, e.1, e.3.as_str())).collect();
    assert!(
        msgs.contains(&(4, 43, "unknown channel `nope` (defined channels: mem)")),
        "{msgs:#?}"
    );
    assert!(
        msgs.contains(&(4, 65, "unknown plugin `enrich` (no plugins are defined)")),
        "{msgs:#?}"
    );
    assert!(
        msgs.contains(&(6, 31, "unknown channel `missing` (defined channels: mem)")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.0 == 8 && m.2.starts_with("unknown sink `ghost`")),
        "{msgs:#?}"
    );
}

#[test]
fn duplicate_names_across_sections() {
    let errs =
        errors("channels:\n  a: { type: memory }\nsinks:\n  a: { type: null, channel: a }\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].0, errs[0].1), (4, 3));
    assert!(errs[0].3.contains("duplicate component name `a`"));
}

#[test]
fn duplicate_keys_in_one_section_are_a_yaml_error() {
    let errs = errors("channels:\n  a: { type: memory }\n  a: { type: memory }\n");
    assert!(errs[0].3.contains("invalid YAML"), "{errs:#?}");
    assert!(errs[0].0 >= 2);
}

#[test]
fn unknown_types_and_keys() {
    let errs = errors("channels:\n  a: { type: postgres }\nsourcez: {}\n");
    assert_eq!(errs[0].0, 2);
    assert!(
        errs[0]
            .3
            .contains("unknown type `postgres`, expected one of: memory"),
        "{errs:#?}"
    );
    assert_eq!((errs[1].0, errs[1].1), (3, 1));
    assert!(errs[1].3.contains("unknown top-level key `sourcez`"));
}

#[test]
fn missing_env_is_an_error_with_position() {
    let errs = errors("channels:\n  a: { type: memory, capacity: \"${NOT_SET}\" }\n");
    assert_eq!(errs[0].0, 2);
    assert!(errs[0].3.contains("NOT_SET is not set"));
}

#[test]
fn bad_sizes_and_group_channel_mismatch() {
    let text = "\
channels:
  a: { type: memory, max_bytes: 12 parsecs }
  b: { type: memory }
sinks:
  x: { type: null, channel: a }
  y: { type: null, channel: b, dlq: b }
sink_groups:
  g: { type: failover, sinks: [x, y] }
";
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.0 == 2 && e.3.contains("invalid size")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.0 == 6 && e.3.contains("cannot be the channel this sink reads"))
    );
    assert!(
        errs.iter()
            .any(|e| e.0 == 8 && e.3.contains("all sinks of a group read one channel"))
    );
}

#[test]
fn display_names_file_line_column_and_component() {
    let e = load("channels:\n  a: { type: memory, capacity: lots }\n").unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("error: p.yaml:2:32: channels.a: "),
        "{text}"
    );
}

#[test]
fn a_file_source_loads_with_defaults() {
    let p = load(
        "channels:\n  mem: { type: memory }\nsources:\n  logs:\n    type: file\n    paths: ['/var/log/app/*.log']\n    position_file: /var/lib/sluice/app.json\n    multiline: { start: '^\\S' }\n    headers: { file: ~, offset: byte_offset }\n    channels: [mem]\n",
    )
    .unwrap();
    let any: &dyn Any = &*p.sources[0].spec.spec;
    let f = any
        .downcast_ref::<FileSourceConfig>()
        .expect("a file source");
    assert_eq!(f.paths, vec!["/var/log/app/*.log"]);
    assert_eq!(f.start_at, StartAt::Beginning);
    assert_eq!(f.poll_interval.0, std::time::Duration::from_millis(250));
    assert_eq!(f.rotate_wait.0, std::time::Duration::from_secs(5));
    assert_eq!(f.max_line_bytes.0, 1 << 20);
    let m = f.multiline.as_ref().unwrap();
    assert_eq!((m.start.as_str(), m.timeout.0.as_secs()), ("^\\S", 1));
    assert_eq!(f.headers.file, None, "`file: ~` turns the path header off");
    assert_eq!(f.headers.offset.as_deref(), Some("byte_offset"));
    assert_eq!(f.codec, CodecRef::Builtin(CodecName::Lines));
    assert_eq!(FileHeaders::default().file.as_deref(), Some("file"));
}

#[test]
fn file_source_errors_have_positions() {
    let text = "\
channels:
  mem: { type: memory }
sources:
  a: { type: file, paths: [x.log], position_file: p.json, channels: [mem] }
  b: { type: file, paths: [], position_file: p.json, max_line_bytes: 0, channels: [mem] }
  c: { type: file, paths: [y.log], position_file: c.json, channels: [mem], poll_interval: 5 }
  d: { type: file, paths: [z.log], position_file: d.json, follow: true, channels: [mem] }
  e: { type: file, paths: [z.log], position_file: e.json, start_at: middle, channels: [mem] }
  f: { type: file, paths: [q.log], channels: [mem] }
";
    let errs = errors(text);
    let find = |line: usize, frag: &str| {
        assert!(
            errs.iter()
                .any(|e| e.0 == line && e.3.contains(frag) && e.2.is_some()),
            "no error on line {line} containing {frag:?} in {errs:#?}"
        );
    };
    find(5, "`paths` needs at least one glob pattern");
    find(5, "max_line_bytes must be at least 1");
    find(5, "position_file `p.json` is already used by source `a`");
    find(6, "a unit is required");
    find(7, "unknown field `follow`");
    find(8, "unknown variant `middle`");
    find(9, "missing field `position_file`");
    assert!(!errs.iter().any(|e| e.0 == 4), "{errs:#?}");
}

#[test]
fn types_left_out_of_the_build_name_their_feature() {
    let mut registry = Registry::builtin();
    registry.sources.unavailable("kafka", "kafka");
    registry.channels.unavailable("rocksdb", "rocksdb");
    registry.features = vec!["http"];
    let text = "\
channels:
  disk: { type: rocksdb, path: x }
sources:
  k: { type: kafka, topics: [t], channels: [disk] }
plugins:
  p: { path: p.wasm }
";
    let errs: Vec<_> = load_with(text, &registry)
        .expect_err("refused")
        .0
        .into_iter()
        .map(|e| (e.pos.line, e.pos.col, e.message))
        .collect();
    assert!(
        errs.contains(&(
            2,
            17,
            "`rocksdb` channels need the `rocksdb` feature; this build has: http".into()
        )),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&(
            4,
            14,
            "`kafka` sources need the `kafka` feature; this build has: http".into()
        )),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.0 == 6 && e.2.starts_with("plugins need the `wasm` feature")),
        "{errs:#?}"
    );
    // The channel is declared, so its users are not also errors.
    assert_eq!(errs.len(), 3, "{errs:#?}");
}
