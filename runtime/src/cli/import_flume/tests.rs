//! Translations of whole agents: each mapping, what is left out (and on which line), and a
//! result that stays consistent when a component goes. Translations that Sluice's own reader
//! can check are loaded with it (when this build has the features they use).

use std::path::Path;

use super::*;

/// (line, key) of each item left out.
fn skipped(t: &Translation) -> Vec<(usize, &str)> {
    t.skipped.iter().map(|s| (s.line, s.key.as_str())).collect()
}

fn why<'a>(t: &'a Translation, key: &str) -> &'a str {
    t.skipped.iter().find(|s| s.key == key).map_or_else(
        || panic!("{key} not skipped: {:#?}", t.skipped),
        |s| s.why.as_str(),
    )
}

#[track_caller]
fn has(t: &Translation, text: &str) {
    assert!(t.yaml.contains(text), "{text:?} is not in:\n{}", t.yaml);
}

#[track_caller]
fn lacks(t: &Translation, text: &str) {
    assert!(!t.yaml.contains(text), "{text:?} is in:\n{}", t.yaml);
}

/// Reads the YAML with Sluice's pipeline reader, when this build has `features`.
#[track_caller]
fn loads(t: &Translation, features: &[&str]) {
    let have = crate::features();
    if !features.iter().all(|f| have.contains(f)) {
        return;
    }
    let env = |name: &str| {
        Some(if name == "HOME" {
            "/home/flume".to_owned()
        } else {
            "1".to_owned()
        })
    };
    if let Err(e) =
        sluice_core::config::load_str(Path::new("p.yaml"), &t.yaml, &env, crate::registry())
    {
        panic!("the translation does not load:\n{e}\n{}", t.yaml);
    }
}

#[test]
fn the_user_guide_example() {
    let t = translate(
        "\
a1.sources = r1
a1.sinks = k1
a1.channels = c1
a1.sources.r1.type = netcat
a1.sources.r1.bind = localhost
a1.sources.r1.port = 44444
a1.sources.r1.channels = c1
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000
a1.channels.c1.transactionCapacity = 100
",
        "a1",
    );
    assert_eq!(
        t.yaml,
        "\
# Translated from a1 by sluice import-flume
# Left out (2):
#   line 4: a1.sources.r1.type: Sluice has no TCP line source (its `http` source with `codec: lines` takes lines over HTTP)
#   line 12: a1.channels.c1.transactionCapacity: Sluice channels have no transaction capacity: a source's and a sink's `batch_size` bound their transactions
channels:
  c1:
    type: memory
    capacity: 1000
sinks:
  k1:
    type: logger
    channel: c1
"
    );
    assert_eq!(
        skipped(&t),
        [
            (4, "a1.sources.r1.type"),
            (12, "a1.channels.c1.transactionCapacity")
        ]
    );
    assert_eq!(t.components, 2);
    assert_eq!(
        t.skipped[0].to_string(),
        "line 4: a1.sources.r1.type: Sluice has no TCP line source (its `http` source with `codec: lines` takes lines over HTTP)"
    );
    loads(&t, &[]);
}

#[test]
fn properties_syntax_continuations_comments_and_colons() {
    let t = translate(
        "\
# a comment
a1.channels: c1
a1.sources = r1 \\
   r2
! another comment
a1.channels.c1.type = memory
a1.sources.r1.type = seq
a1.sources.r1.channels = c1

a1.sources.r2.type   seq
a1.sources.r2.channels = c1
a1.sources.r2.bogus = 1
",
        "a1",
    );
    assert_eq!(skipped(&t), [(12, "a1.sources.r2.bogus")]);
    assert_eq!(
        why(&t, "a1.sources.r2.bogus"),
        "no Sluice equivalent for `bogus` of a Flume `seq` source"
    );
    has(&t, "\n  r1:\n    type: generator\n    channels: [c1]\n");
    has(&t, "\n  r2:\n    type: generator\n");
    assert_eq!(t.components, 3);
    loads(&t, &[]);
}

#[test]
fn other_agents_are_ignored_and_stray_keys_reported() {
    let t = translate(
        "\
a2.sources = x
a2.sources.x.type = netcat
a1.channels = c1
a1.sinks = k1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 10
a1.channels.c9.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.channels.c1.capacity = 20
a1.bogus = 1
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (6, "a1.channels.c1.capacity"),
            (7, "a1.channels.c9"),
            (11, "a1.bogus")
        ]
    );
    assert!(why(&t, "a1.channels.c1.capacity").contains("line 10"));
    assert!(why(&t, "a1.channels.c9").contains("not in `a1.channels`"));
    has(&t, "capacity: 20");
    lacks(&t, "netcat");
    assert_eq!(
        agents("a2.sources = x\na1.sinks = k\na1.sinks.k.type = null\n"),
        ["a2", "a1"]
    );

    let none = translate("a2.sources = x\n", "a1");
    assert_eq!(none.components, 0);
    has(
        &none,
        "# The file has no property of agent `a1`; it configures: a2.",
    );
}

#[test]
fn a_custom_class_is_left_out_at_its_type_line() {
    let t = translate(
        "\
a1.sources = r1 r2
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = com.example.MySource
a1.sources.r1.channels = c1
a1.sources.r1.endpoint = https://x
a1.sources.r2.type = seq
a1.sources.r2.channels = c1
a1.sources.r2.interceptors = i1 i2
a1.sources.r2.interceptors.i1.type = com.example.Enrich$Builder
a1.sources.r2.interceptors.i1.table = geo.csv
a1.sources.r2.interceptors.i2.type = timestamp
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (4, "a1.sources.r1.type"),
            (10, "a1.sources.r2.interceptors.i1.type")
        ]
    );
    assert!(why(&t, "a1.sources.r1.type").contains("Java class"));
    assert!(why(&t, "a1.sources.r2.interceptors.i1.type").contains("Wasm plugin"));
    lacks(&t, "\n  r1:");
    has(
        &t,
        "    interceptors:\n      # interceptor `i2`\n      - type: timestamp\n",
    );
    loads(&t, &[]);
}

#[test]
fn a_skipped_channel_takes_its_sources_and_sinks_along() {
    let t = translate(
        "\
a1.sources = r1 r2
a1.channels = c1 c2
a1.sinks = k1 k2 k3
a1.sinkgroups = g1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.sources.r2.type = seq
a1.sources.r2.channels = c1 c2
a1.channels.c1.type = memory
a1.channels.c2.type = jdbc
a1.channels.c2.driver.url = jdbc:derby:x
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c1
a1.sinks.k3.type = logger
a1.sinks.k3.channel = c2
a1.sinkgroups.g1.sinks = k1 k2 k3
a1.sinkgroups.g1.processor.type = failover
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (7, "a1.sources.r2.type"),
            (10, "a1.channels.c2.type"),
            (16, "a1.sinks.k3.type"),
            (18, "a1.sinkgroups.g1.sinks"),
        ]
    );
    assert_eq!(
        why(&t, "a1.sources.r2.type"),
        "its channel `c2` was left out"
    );
    assert_eq!(why(&t, "a1.sinks.k3.type"), "its channel `c2` was left out");
    assert!(why(&t, "a1.sinkgroups.g1.sinks").contains("`k3` was left out"));
    for gone in ["\n  c2:", "\n  r2:", "\n  k3:"] {
        lacks(&t, gone);
    }
    has(
        &t,
        "sink_groups:\n  g1:\n    type: failover\n    sinks: [k1, k2]\n",
    );
    assert_eq!(t.components, 5);
    loads(&t, &[]);
}

#[test]
fn multiplexing_selector_keeps_flume_semantics() {
    let t = translate(
        "\
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = State
a1.sources.r1.selector.mapping.CA = c1
a1.sources.r1.selector.mapping.NY = c1 c2
a1.sources.r1.selector.optional.CA = c1 c2
a1.sources.r1.selector.optional.TX = c2
a1.sources.r1.selector.default = c1
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c2
",
        "a1",
    );
    assert!(t.skipped.is_empty(), "{:#?}", t.skipped);
    has(
        &t,
        "    selector:
      type: multiplexing
      header: State
      # TX also go to the default channels, as in Flume (their only mapping was optional)
      mapping:
        CA: [c1]
        NY: [c1, c2]
        TX: [c1]
      default: [c1]
      optional:
        CA: [c2]
        TX: [c2]
",
    );
    loads(&t, &[]);
}

/// A header value that looks like a reference (`${TX}`) is a literal in Flume's property key;
/// Sluice expands `${…}` everywhere, so the translation escapes it (found by fuzzing:
/// `fuzz/regressions/flume_import`).
#[test]
fn a_mapped_header_value_that_looks_like_a_reference_stays_literal() {
    let t = translate(
        "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = State
a1.sources.r1.selector.mapping.${TX = c1
a1.sources.r1.selector.default = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
",
        "a1",
    );
    has(&t, "        '$${TX': [c1]\n");
    loads(&t, &[]);
}

#[test]
fn replicating_selector_with_an_optional_channel() {
    let t = translate(
        "\
a1.sources = r1
a1.channels = c1 c2 c3
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.optional = c2 c3
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.channels.c3.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
",
        "a1",
    );
    assert_eq!(skipped(&t), [(6, "a1.sources.r1.selector.optional")]);
    assert!(why(&t, "a1.sources.r1.selector.optional").contains("`c3`"));
    has(
        &t,
        "    selector:\n      type: replicating\n      optional: [c2]\n",
    );
    loads(&t, &[]);
}

const GROUP: &str = "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1 k2 k3
a1.sinkgroups = g1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c1
a1.sinks.k3.type = null
a1.sinks.k3.channel = c1
a1.sinkgroups.g1.sinks = k1 k2 k3
";

#[test]
fn failover_group_with_priorities() {
    let text = format!(
        "{GROUP}\
a1.sinkgroups.g1.processor.type = failover
a1.sinkgroups.g1.processor.priority.k1 = 5
a1.sinkgroups.g1.processor.priority.k2 = 10
a1.sinkgroups.g1.processor.maxpenalty = 10000
"
    );
    let t = translate(&text, "a1");
    assert!(t.skipped.is_empty(), "{:#?}", t.skipped);
    has(
        &t,
        "sink_groups:
  g1:
    type: failover
    sinks: [k1, k2, k3]
    priorities:
      k1: 5
      k2: 10
      k3: -1
    max_penalty: 10s
",
    );
    loads(&t, &[]);
}

#[test]
fn load_balance_group() {
    let text = format!(
        "{GROUP}\
a1.sinkgroups.g1.processor.type = load_balance
a1.sinkgroups.g1.processor.selector = random
a1.sinkgroups.g1.processor.selector.maxTimeOut = 20000
a1.sinkgroups.g1.processor.custom = x
"
    );
    let t = translate(&text, "a1");
    assert_eq!(skipped(&t), [(18, "a1.sinkgroups.g1.processor.custom")]);
    has(
        &t,
        "  g1:
    type: load_balance
    sinks: [k1, k2, k3]
    selector: random
    backoff: false
    max_backoff: 20s
",
    );
    loads(&t, &[]);

    // The default processor needs no group: its one sink runs on its own.
    let one = translate(&GROUP.replace("g1.sinks = k1 k2 k3", "g1.sinks = k1"), "a1");
    assert!(one.skipped.is_empty(), "{:#?}", one.skipped);
    lacks(&one, "sink_groups");
}

#[test]
fn interceptor_chain() {
    let t = translate(
        r"a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = ts h st f x sr rm u
a1.sources.r1.interceptors.ts.type = timestamp
a1.sources.r1.interceptors.h.type = host
a1.sources.r1.interceptors.h.hostHeader = hostname
a1.sources.r1.interceptors.st.type = static
a1.sources.r1.interceptors.st.key = datacenter
a1.sources.r1.interceptors.st.value = NEW_YORK
a1.sources.r1.interceptors.f.type = regex_filter
a1.sources.r1.interceptors.f.regex = ^DEBUG
a1.sources.r1.interceptors.f.excludeEvents = true
a1.sources.r1.interceptors.x.type = regex_extractor
a1.sources.r1.interceptors.x.regex = (\\d):(\\d)
a1.sources.r1.interceptors.x.serializers = s1 s2
a1.sources.r1.interceptors.x.serializers.s1.name = one
a1.sources.r1.interceptors.x.serializers.s2.name = two
a1.sources.r1.interceptors.sr.type = search_replace
a1.sources.r1.interceptors.sr.searchPattern = (\\w+)@example\\.com
a1.sources.r1.interceptors.sr.replaceString = $1 at example
a1.sources.r1.interceptors.rm.type = remove_header
a1.sources.r1.interceptors.rm.withName = secret
a1.sources.r1.interceptors.u.type = org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder
a1.sources.r1.interceptors.u.prefix = evt-
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (8, "a1.sources.r1.interceptors.h.useIP"),
            (27, "a1.sources.r1.interceptors.u.prefix")
        ]
    );
    assert!(why(&t, "a1.sources.r1.interceptors.h.useIP").contains("IP address"));
    has(
        &t,
        r"    interceptors:
      # interceptor `ts`
      - type: timestamp
      # interceptor `h`
      - type: host
        header: hostname
      # interceptor `st`
      - type: static
        key: datacenter
        value: NEW_YORK
      # interceptor `f`
      - type: regex_filter
        regex: '^DEBUG'
        exclude: true
      # interceptor `x`
      - type: regex_extractor
        regex: '(\d):(\d)'
        headers: [one, two]
      # interceptor `sr`
      - type: search_replace
        search: '(\w+)@example\.com'
        replace: '$${1} at example'
      # interceptor `rm`
      - type: remove_header
        names: [secret]
      # interceptor `u`
      - type: uuid
",
    );
    loads(&t, &[]);
}

#[test]
fn interceptors_sluice_cannot_run_are_left_out_of_the_chain() {
    let t = translate(
        r"a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = look ms few
a1.sources.r1.interceptors.look.type = regex_filter
a1.sources.r1.interceptors.look.regex = (?<=a)b
a1.sources.r1.interceptors.ms.type = regex_extractor
a1.sources.r1.interceptors.ms.regex = ^(\\d\\d\\d\\d-\\d\\d-\\d\\d \\d\\d:\\d\\d)
a1.sources.r1.interceptors.ms.serializers = s1
a1.sources.r1.interceptors.ms.serializers.s1.type = org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer
a1.sources.r1.interceptors.ms.serializers.s1.name = timestamp
a1.sources.r1.interceptors.ms.serializers.s1.pattern = yyyy-MM-dd HH:mm
a1.sources.r1.interceptors.few.type = regex_extractor
a1.sources.r1.interceptors.few.regex = (a)(b)
a1.sources.r1.interceptors.few.serializers = s1
a1.sources.r1.interceptors.few.serializers.s1.name = a
a1.sources.r1.interceptors.stray.type = timestamp
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (7, "a1.sources.r1.interceptors.look.type"),
            (9, "a1.sources.r1.interceptors.ms.type"),
            (15, "a1.sources.r1.interceptors.few.type"),
            (19, "a1.sources.r1.interceptors.stray.type"),
        ]
    );
    assert!(why(&t, "a1.sources.r1.interceptors.look.type").contains("look-around"));
    assert!(why(&t, "a1.sources.r1.interceptors.ms.type").contains("epoch milliseconds"));
    assert!(why(&t, "a1.sources.r1.interceptors.few.type").contains("2 capture groups"));
    lacks(&t, "interceptors:");
    loads(&t, &[]);
}

#[test]
fn taildir_and_exec_tail_become_file_sources() {
    let t = translate(
        r"a1.sources = r1 r2 r3
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = TAILDIR
a1.sources.r1.channels = c1
a1.sources.r1.filegroups = f1
a1.sources.r1.filegroups.f1 = /var/log/app/.*\\.log
a1.sources.r1.headers.f1.service = checkout
a1.sources.r1.byteOffsetHeader = true
a1.sources.r1.skipToEnd = true
a1.sources.r2.type = exec
a1.sources.r2.command = tail -n +0 -F /var/log/secure
a1.sources.r2.channels = c1
a1.sources.r3.type = exec
a1.sources.r3.command = tail -F /var/log/a | grep x
a1.sources.r3.channels = c1
a1.channels.c1.type = file
a1.channels.c1.dataDirs = /data/flume/c1
a1.sinks.k1.type = file_roll
a1.sinks.k1.channel = c1
a1.sinks.k1.sink.directory = /out
",
        "a1",
    );
    assert_eq!(skipped(&t), [(14, "a1.sources.r3.type")]);
    assert!(why(&t, "a1.sources.r3.type").contains("shell features"));
    has(&t, "    paths: ['/var/log/app/*.log']\n");
    has(&t, "    position_file: '${HOME}/.flume/sluice-r1.json'\n");
    has(&t, "    start_at: end\n");
    has(
        &t,
        "    headers:\n      file: ~\n      offset: byteoffset\n",
    );
    has(
        &t,
        "      - type: static\n        key: service\n        value: checkout\n        preserve_existing: false\n",
    );
    has(
        &t,
        "  r2:\n    # was an exec source running `tail -n +0 -F /var/log/secure`\n    type: file\n",
    );
    has(&t, "    channels: [c1]\n    paths: [/var/log/secure]\n");
    has(&t, "    position_file: sluice-positions/r2.json\n");
    has(&t, "    type: rocksdb\n");
    has(&t, "    path: /data/flume/sluice-c1\n");
    has(&t, "    type: file\n    channel: c1\n");
    has(&t, "    path: /out/k1\n    roll_interval: 30s\n");
    loads(&t, &["rocksdb"]);
}

#[test]
fn kafka_source_channel_and_sink() {
    let t = translate(
        r#"t.sources = s
t.channels = m kc
t.sinks = k
t.sources.s.type = org.apache.flume.source.kafka.KafkaSource
t.sources.s.channels = m
t.sources.s.kafka.bootstrap.servers = b1:9093,b2:9093
t.sources.s.kafka.topics = test1, test2
t.sources.s.kafka.consumer.group.id = g
t.sources.s.kafka.consumer.security.protocol = SASL_SSL
t.sources.s.kafka.consumer.sasl.mechanism = PLAIN
t.sources.s.kafka.consumer.sasl.jaas.config = org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="${env:KAFKA_PASSWORD}";
t.sources.s.kafka.consumer.ssl.truststore.location = /t.jks
t.sources.s.kafka.consumer.fetch.max.wait.ms = 100
t.channels.m.type = memory
t.channels.kc.type = org.apache.flume.channel.kafka.KafkaChannel
t.channels.kc.kafka.bootstrap.servers = b1:9092
t.sinks.k.type = org.apache.flume.sink.kafka.KafkaSink
t.sinks.k.channel = m
t.sinks.k.kafka.topic = logs-%{app}
t.sinks.k.kafka.bootstrap.servers = b1:9092
t.sinks.k.kafka.producer.acks = 1
t.sinks.k.kafka.producer.linger.ms = 5
t.sinks.k.kafka.producer.buffer.memory = 1000
"#,
        "t",
    );
    assert_eq!(
        skipped(&t),
        [
            (12, "t.sources.s.kafka.consumer.ssl.truststore.location"),
            (21, "t.sinks.k.kafka.producer.acks"),
            (23, "t.sinks.k.kafka.producer.buffer.memory"),
        ]
    );
    has(
        &t,
        "    bootstrap_servers: 'b1:9093,b2:9093'
    group_id: g
    topics: [test1, test2]
",
    );
    has(&t, "    start_at: latest\n");
    has(
        &t,
        "    security:
      protocol: sasl_ssl
      sasl_mechanism: PLAIN
      sasl_username: u
      sasl_password: '${KAFKA_PASSWORD}'
    consumer:
      # Java's `fetch.max.wait.ms`
      fetch.wait.max.ms: '100'
",
    );
    has(&t, "    topic: flume-channel\n");
    has(&t, "    group_id: flume\n");
    has(&t, "    topic: 'logs-%{app}'\n    key: '%{key}'\n");
    has(&t, "    headers: false\n");
    has(&t, "    producer:\n      linger.ms: '5'\n");
    loads(&t, &["kafka"]);
}

#[test]
fn http_source_and_an_hdfs_sink() {
    let t = translate(
        "\
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = http
a1.sources.r1.port = 5140
a1.sources.r1.channels = c1 c2
a1.sources.r1.HttpConfiguration.sendServerVersion = false
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.sinks.k1.type = hdfs
a1.sinks.k1.channel = c1
a1.sinks.k1.hdfs.path = /flume/events/%y-%m-%d
a1.sinks.k2.type = http
a1.sinks.k2.channel = c2
a1.sinks.k2.endpoint = http://h:8080/a%20b
a1.sinks.k2.requestTimeout = 2000
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (7, "a1.sources.r1.HttpConfiguration.sendServerVersion"),
            (10, "a1.sinks.k1.type")
        ]
    );
    assert!(why(&t, "a1.sinks.k1.type").contains("HDFS is not a Sluice sink"));
    has(&t, "    listen: '0.0.0.0:5140'\n    codec: json\n");
    has(&t, "# no sink reads this channel any more (`k1` left out)");
    has(&t, "    url: 'http://h:8080/a%%20b'\n");
    has(
        &t,
        "    headers:\n      Content-Type: text/plain\n      Accept: text/plain\n",
    );
    has(&t, "    timeout: 7s\n");
    loads(&t, &["http"]);
}

#[test]
fn channels_memory_file_and_spillable() {
    let t = translate(
        "\
a1.channels = m f s d o
a1.channels.m.type = memory
a1.channels.m.byteCapacity = 800000
a1.channels.m.keep-alive = 3
a1.channels.f.type = file
a1.channels.f.dataDirs = /d1/data,/d2/data
a1.channels.f.fsyncPerTransaction = false
a1.channels.f.encryption.activeKey = key-0
a1.channels.s.type = SPILLABLEMEMORY
a1.channels.s.memoryCapacity = 100
a1.channels.d.type = SPILLABLEMEMORY
a1.channels.d.memoryCapacity = 0
a1.channels.d.overflowCapacity = 500
a1.channels.o.type = SPILLABLEMEMORY
a1.channels.o.memoryCapacity = 100
a1.channels.o.overflowCapacity = 0
",
        "a1",
    );
    assert_eq!(
        skipped(&t),
        [
            (4, "a1.channels.m.keep-alive"),
            (8, "a1.channels.f.encryption.activeKey")
        ]
    );
    has(&t, "  m:\n    type: memory\n");
    has(&t, "    max_bytes: 800000\n");
    has(&t, "  f:\n    type: rocksdb\n");
    has(
        &t,
        "    path: /d1/sluice-f\n    fsync:\n      interval: 5s\n",
    );
    has(&t, "Sluice keeps a channel in one directory");
    has(&t, "  s:\n    type: spillable\n    memory_capacity: 100\n");
    has(
        &t,
        "    path: '${HOME}/.flume/file-channel/sluice-s'\n    disk_capacity: 100000000\n",
    );
    has(
        &t,
        "  d:\n    # Flume's spillable channel with memoryCapacity 0: disk only\n    type: rocksdb\n",
    );
    has(&t, "    capacity: 500\n");
    has(
        &t,
        "  o:\n    # Flume's spillable channel with overflowCapacity 0: memory only\n    type: memory\n    capacity: 100\n",
    );
    loads(&t, &["rocksdb"]);
}

#[test]
fn environment_references() {
    let t = translate(
        "\
PORT = 8080
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.port = ${PORT}
a1.sources.r1.bind = ${env:BIND_ADDR}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = ${env:CAP}
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k1.maxBytesToLog = ${sys:max}
",
        "a1",
    );
    assert_eq!(skipped(&t), [(13, "a1.sinks.k1.maxBytesToLog")]);
    assert!(why(&t, "a1.sinks.k1.maxBytesToLog").contains("system property"));
    has(&t, "    listen: '${BIND_ADDR}:8080'\n");
    has(&t, "    capacity: '${CAP}'\n");
}

#[test]
fn names_are_made_unique_across_kinds() {
    let t = translate(
        "\
a1.sources = logs
a1.channels = logs
a1.sinks = logs
a1.sources.logs.type = seq
a1.sources.logs.channels = logs
a1.channels.logs.type = memory
a1.sinks.logs.type = null
a1.sinks.logs.channel = logs
",
        "a1",
    );
    assert!(t.skipped.is_empty(), "{:#?}", t.skipped);
    has(&t, "channels:\n  logs:\n");
    has(
        &t,
        "  logs_source:\n    type: generator\n    channels: [logs]\n",
    );
    has(&t, "  logs_sink:\n    type: 'null'\n    channel: logs\n");
    loads(&t, &[]);
}

/// Every fixture translates, leaves out what its comment block says, and loads.
#[test]
fn fixtures() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "basic",
            include_str!("../../../../tests/fixtures/flume/basic.properties"),
            &[],
            &["a1.sources.r1.type", "a1.channels.c1.transactionCapacity"],
        ),
        (
            "multiplexing",
            include_str!("../../../../tests/fixtures/flume/multiplexing.properties"),
            &["http", "rocksdb"],
            &[
                "agent_foo.channels.mem-channel-1.transactionCapacity",
                "agent_foo.channels.file-channel-2.checkpointDir",
            ],
        ),
        (
            "replicating",
            include_str!("../../../../tests/fixtures/flume/replicating.properties"),
            &[],
            &[
                "a1.channels.c2.byteCapacityBufferPercentage",
                "a1.channels.c3.keep-alive",
            ],
        ),
        (
            "failover",
            include_str!("../../../../tests/fixtures/flume/failover.properties"),
            &["http", "rocksdb"],
            &[
                "a1.channels.c1.checkpointDir",
                "a1.channels.c1.transactionCapacity",
                "a1.sinks.k1.defaultRollback",
                "a1.sinks.k1.rollback.4XX",
            ],
        ),
        (
            "load-balance",
            include_str!("../../../../tests/fixtures/flume/load-balance.properties"),
            &["kafka", "http", "rocksdb"],
            &[
                "a1.channels.c1.checkpointDir",
                "a1.sinks.k3.type",
                "a1.sinkgroups.g1.sinks",
            ],
        ),
        (
            "interceptors",
            include_str!("../../../../tests/fixtures/flume/interceptors.properties"),
            &[],
            &[],
        ),
        (
            "kafka",
            include_str!("../../../../tests/fixtures/flume/kafka.properties"),
            &["kafka"],
            &[
                "tier1.sources.source1.kafka.consumer.ssl.truststore.location",
                "tier1.channels.channel1.transactionCapacity",
                "tier1.sinks.sink1.kafka.producer.acks",
            ],
        ),
        (
            "tail-file-channel",
            include_str!("../../../../tests/fixtures/flume/tail-file-channel.properties"),
            &["rocksdb"],
            &[
                "a1.sources.r1.headers.f1.headerKey1",
                "a1.sources.r1.headers.f2.headerKey1",
                "a1.sources.r1.headers.f2.headerKey2",
                "a1.sources.r1.maxBatchCount",
                "a1.sources.r2.restart",
                "a1.channels.c1.checkpointDir",
                "a1.channels.c1.transactionCapacity",
            ],
        ),
        (
            "http-hdfs",
            include_str!("../../../../tests/fixtures/flume/http-hdfs.properties"),
            &["http"],
            &["a1.sinks.k1.type"],
        ),
        (
            "custom-class",
            include_str!("../../../../tests/fixtures/flume/custom-class.properties"),
            &[],
            &[
                "a1.sources.r1.type",
                "a1.sources.r2.interceptors.enrich.type",
            ],
        ),
        (
            "skipped-channel",
            include_str!("../../../../tests/fixtures/flume/skipped-channel.properties"),
            &[],
            &[
                "a1.sources.r2.type",
                "a1.channels.c2.type",
                "a1.sinks.k3.type",
                "a1.sinkgroups.g1.sinks",
            ],
        ),
        (
            "env-and-kafka-channel",
            include_str!("../../../../tests/fixtures/flume/env-and-kafka-channel.properties"),
            &["kafka"],
            &["a1.sinks.logs.maxBytesToLog"],
        ),
    ];
    for (name, text, features, left_out) in cases {
        let agent = agents(text).into_iter().next().expect("an agent");
        let t = translate(text, &agent);
        let keys: Vec<&str> = t.skipped.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(&keys, left_out, "{name}:\n{}", t.yaml);
        assert!(t.components > 0, "{name}");
        for s in &t.skipped {
            let line = text.lines().nth(s.line - 1).unwrap_or_default();
            assert!(
                line.starts_with(&s.key),
                "{name}: line {} is {line:?}, not {}",
                s.line,
                s.key
            );
        }
        loads(&t, features);
    }
}
