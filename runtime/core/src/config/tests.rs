use std::path::Path;

use super::*;

fn load(text: &str) -> Result<Pipeline, ConfigErrors> {
    load_str(Path::new("p.yaml"), text, &|name| match name {
        "CAP" => Some("500".into()),
        _ => None,
    })
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
    interceptors:
      - { type: static, key: env, value: prod }
      - { type: regex_filter, regex: 'x+', exclude: true }
sinks:
  out: { type: file, channel: mem, path: 'out/%{env}-%Y.log', roll_size: 1MiB, dlq: dead }
  spare: { type: null, channel: mem, retry: { max_attempts: 3, initial_backoff: 10ms } }
sink_groups:
  g: { type: failover, sinks: [out, spare], priorities: { out: 10 } }
shutdown_timeout: 5s
";

#[test]
fn a_good_pipeline_loads() {
    let p = load(GOOD).unwrap();
    assert_eq!(p.channels.len(), 2);
    let ChannelConfig::Memory(m) = &p.channels[0].spec else {
        panic!("a memory channel")
    };
    assert_eq!(m.capacity, 500, "${{CAP}} interpolated into a number");
    assert_eq!(m.max_bytes.unwrap().0, 64 << 20);
    assert_eq!(p.sources[0].spec.common.interceptors.len(), 2);
    assert_eq!(p.sinks[1].spec.common.retry.max_attempts, 3);
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
            .contains("unknown type `postgres`, expected one of: memory, rocksdb, spillable")
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
fn durable_channels_load_with_defaults_and_fsync_modes() {
    let p = load(
        "\
channels:
  disk: { type: rocksdb, path: ./data/disk }
  fast: { type: rocksdb, path: ./data/fast, capacity: 5000, max_bytes: 1GiB, fsync: never }
  tick: { type: rocksdb, path: ./data/tick, fsync: { interval: 10ms } }
  spill: { type: spillable, memory_capacity: 100, path: ./data/spill, disk_capacity: 9, fsync: per_commit }
",
    )
    .unwrap();
    let rocks = |i: usize| match &p.channels[i].spec {
        ChannelConfig::Rocksdb(r) => r.clone(),
        other => panic!("not rocksdb: {other:?}"),
    };
    let d = rocks(0);
    assert_eq!(d.path, std::path::Path::new("./data/disk"));
    assert_eq!(
        (d.capacity, d.max_bytes, d.fsync),
        (1_000_000, None, FsyncConfig::PerCommit)
    );
    let f = rocks(1);
    assert_eq!(
        (f.capacity, f.max_bytes.unwrap().0, f.fsync),
        (5000, 1 << 30, FsyncConfig::Never)
    );
    assert_eq!(
        rocks(2).fsync,
        FsyncConfig::Interval(units::HumanDuration(std::time::Duration::from_millis(10)))
    );
    let ChannelConfig::Spillable(s) = &p.channels[3].spec else {
        panic!("spillable")
    };
    assert_eq!((s.memory_capacity, s.disk_capacity), (100, 9));
    assert_eq!(s.fsync, FsyncConfig::PerCommit);
}

#[test]
fn durable_channel_mistakes_are_reported_with_positions() {
    let errs = errors(
        "\
channels:
  a: { type: rocksdb }
  b: { type: rocksdb, path: x, fsync: always }
  c: { type: spillable, path: x, capacity: 5 }
  d: { type: rocksdb, path: y, fsync: { interval: 10 } }
",
    );
    let find = |line: usize| {
        errs.iter()
            .find(|e| e.0 == line)
            .unwrap_or_else(|| panic!("no error on line {line}: {errs:#?}"))
            .3
            .clone()
    };
    assert!(find(2).contains("missing field `path`"), "{errs:#?}");
    assert!(find(3).contains("unknown variant `always`"), "{errs:#?}");
    assert!(find(4).contains("unknown field `capacity`"), "{errs:#?}");
    assert!(find(5).contains("unit is required"), "{errs:#?}");

    let errs =
        errors("channels:\n  a: { type: rocksdb, path: p }\n  b: { type: spillable, path: p }\n");
    assert!(
        errs.iter()
            .any(|e| e.0 == 3 && e.3.contains("path `p` is already used by channel `a`")),
        "{errs:#?}"
    );
}

#[test]
fn a_file_source_loads_with_defaults() {
    let p = load(
        "channels:\n  mem: { type: memory }\nsources:\n  logs:\n    type: file\n    paths: ['/var/log/app/*.log']\n    position_file: /var/lib/sluice/app.json\n    multiline: { start: '^\\S' }\n    headers: { file: ~, offset: byte_offset }\n    channels: [mem]\n",
    )
    .unwrap();
    let SourceKind::File(f) = &p.sources[0].spec.kind else {
        panic!("not a file source");
    };
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
    find(5, "position_file `p.json` is also used by source `a`");
    find(6, "a unit is required");
    find(7, "unknown field `follow`");
    find(8, "unknown variant `middle`");
    find(9, "missing field `position_file`");
    assert!(!errs.iter().any(|e| e.0 == 4), "{errs:#?}");
}

#[test]
fn http_source_and_sink_load_and_secrets_never_show() {
    let text = "\
channels:
  mem: { type: memory }
sources:
  hook:
    type: http
    listen: 8080
    paths: [/a, /b]
    codec: json
    auth: { type: hmac, secret: \"${HOOK}\" }
    channels: [mem]
sinks:
  out:
    type: http
    channel: mem
    url: 'https://example.com/%{tenant}'
    mode: batch
    format: ndjson
    auth: { type: bearer, secret_env: TOKEN }
";
    let env = |n: &str| (n == "HOOK").then(|| "s3cret-value".to_owned());
    let p = load_str(Path::new("p.yaml"), text, &env).unwrap();
    let SourceKind::Http(h) = &p.sources[0].spec.kind else {
        panic!("not an http source")
    };
    assert_eq!(
        h.listen.0,
        "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap(),
        "a bare port listens on 127.0.0.1"
    );
    assert_eq!(h.codec, HttpCodecRef::Builtin(HttpCodec::Json));
    assert_eq!((h.max_body.0, h.busy_status), (1 << 20, 503));
    let SinkKind::Http(s) = &p.sinks[0].spec.kind else {
        panic!("not an http sink")
    };
    assert_eq!(s.mode, HttpSinkMode::Batch);
    let debug = format!("{p:?}");
    assert!(!debug.contains("s3cret-value"), "{debug}");
    assert!(debug.contains("***"));
}

#[test]
fn http_settings_are_checked_where_they_are_written() {
    let text = "\
channels:
  mem: { type: memory }
sources:
  hook:
    type: http
    listen: nowhere
    channels: [mem]
  hook2:
    type: http
    listen: 9000
    paths: [/a, nope, /a]
    busy_status: 418
    auth: { type: basic, secret: x }
    channels: [mem]
sinks:
  out:
    type: http
    channel: mem
    url: 'not a url'
    mode: batch
    auth: { type: timestamped, secret: x }
";
    let errs = errors(text);
    let has = |line: usize, frag: &str| errs.iter().any(|e| e.0 == line && e.3.contains(frag));
    assert!(has(6, "invalid listen address"), "{errs:#?}");
    assert!(has(11, "path \"nope\" must start with `/`"), "{errs:#?}");
    assert!(has(11, "path \"/a\" is listed twice"), "{errs:#?}");
    assert!(has(12, "busy_status must be 429 or 503"), "{errs:#?}");
    assert!(has(13, "basic auth needs `username`"), "{errs:#?}");
    assert!(has(19, "invalid url"), "{errs:#?}");
    assert!(
        has(21, "auth type `timestamped` is not available on a sink"),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.3.contains("with `mode: batch`")),
        "{errs:#?}"
    );
}
