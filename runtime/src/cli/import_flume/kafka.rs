//! Flume's Kafka source, sink and channel, and the Kafka client properties they carry
//! (`kafka.consumer.*`, `kafka.producer.*`). Flume runs the Java client; Sluice runs
//! librdkafka, so a client property is passed on only when librdkafka knows it by the same
//! meaning (under its own name where the two differ); TLS and SASL settings become
//! `security` fields; the rest is reported.

use super::{
    agent::{Component, Prop},
    channels::WHY_TRANSACTION_CAPACITY,
    translate::{Conv, Cx, Verdict},
    values,
    yaml::{self, Map, Value},
};

/// librdkafka knows these Java client properties by the same name and meaning.
const SAME_NAME: &[&str] = &[
    "client.id",
    "client.rack",
    "metadata.max.age.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    "socket.connection.setup.timeout.ms",
    "connections.max.idle.ms",
    "request.timeout.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "isolation.level",
    "check.crcs",
    "group.instance.id",
    "allow.auto.create.topics",
    "linger.ms",
    "batch.size",
    "compression.type",
    "retries",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "enable.idempotence",
];

/// Java client properties librdkafka spells differently.
const RENAMED: &[(&str, &str)] = &[
    ("fetch.max.wait.ms", "fetch.wait.max.ms"),
    ("max.request.size", "message.max.bytes"),
    ("send.buffer.bytes", "socket.send.buffer.bytes"),
    ("receive.buffer.bytes", "socket.receive.buffer.bytes"),
];

const JKS: &str = "a Java keystore or truststore: export it to PEM files for `security.ssl_ca_location` (and `ssl_certificate_location`, `ssl_key_location` for a client certificate)";
const KERBEROS: &str =
    "Kerberos (GSSAPI) is not in Sluice's librdkafka build; SASL PLAIN and SCRAM are";
const WHY_AUTO_COMMIT: &str =
    "Sluice commits offsets itself, once each batch is safe in its channels";

/// Java client properties that are not passed on, and why.
const NOT_PASSED: &[(&str, &str)] = &[
    ("key.serializer", "Sluice writes keys and values as bytes"),
    ("value.serializer", "Sluice writes keys and values as bytes"),
    ("key.deserializer", "Sluice reads keys and values as bytes"),
    (
        "value.deserializer",
        "Sluice reads keys and values as bytes",
    ),
    ("enable.auto.commit", WHY_AUTO_COMMIT),
    ("auto.commit.interval.ms", WHY_AUTO_COMMIT),
    (
        "partition.assignment.strategy",
        "it names Java classes; librdkafka takes `range`, `roundrobin` or `cooperative-sticky`",
    ),
    (
        "partitioner.class",
        "a Java class; librdkafka partitions by key",
    ),
    ("interceptor.classes", "Java classes"),
    (
        "buffer.memory",
        "a Java producer setting (librdkafka bounds its queue with `queue.buffering.max.kbytes`)",
    ),
    ("max.block.ms", "a Java producer setting"),
    (
        "transactional.id",
        "Sluice's Kafka transactions come with `delivery: exactly_once` on a sink fed by a `kafka` source through a `memory` channel (the id is then `transactional_id`); set them by hand if this pipeline is one",
    ),
    ("sasl.kerberos.service.name", KERBEROS),
    ("ssl.truststore.location", JKS),
    ("ssl.truststore.password", JKS),
    ("ssl.truststore.type", JKS),
    ("ssl.keystore.location", JKS),
    ("ssl.keystore.password", JKS),
    ("ssl.keystore.type", JKS),
    ("ssl.key.password", JKS),
    (
        "ssl.enabled.protocols",
        "librdkafka negotiates the TLS version itself",
    ),
    (
        "ssl.protocol",
        "librdkafka negotiates the TLS version itself",
    ),
];

const WHY_ACKS: &str = "Sluice produces with acks=all and idempotence; a weaker `acks` goes in `producer` together with `enable.idempotence: false`";
const WHY_AVRO_EVENTS: &str = "the records are Avro-wrapped Flume events (useFlumeEventFormat / parseAsFlumeEvent), a format Sluice does not read or write";
const WHY_ZOOKEEPER: &str =
    "ZooKeeper offsets date from Kafka 0.8: Sluice reads the group's offsets from Kafka";
const WHY_PARTITION: &str = "Sluice leaves the partition to librdkafka's partitioner (by key)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
}

/// What a component's client properties become.
#[derive(Debug, Default)]
struct Client {
    security: Map,
    consumer: Map,
    producer: Map,
    /// Consumer `group.id`.
    group: Option<Prop>,
    /// Consumer `auto.offset.reset`.
    offset_reset: Option<Prop>,
    /// Producer `acks`.
    acks: Option<Prop>,
}

impl Client {
    /// Sorts the `kafka.consumer.*` or `kafka.producer.*` properties of `c`.
    fn read(&mut self, c: &mut Component, cx: &mut Cx, role: Role) {
        let prefix = match role {
            Role::Consumer => "kafka.consumer.",
            Role::Producer => "kafka.producer.",
        };
        for (name, p) in c.take_prefix(prefix) {
            self.one(&name, p, cx, role);
        }
    }

    fn one(&mut self, name: &str, p: Prop, cx: &mut Cx, role: Role) {
        match (role, name) {
            (Role::Consumer, "group.id") => {
                self.group = Some(p);
                return;
            }
            (Role::Consumer, "auto.offset.reset") => {
                self.offset_reset = Some(p);
                return;
            }
            (Role::Producer, "acks") => {
                self.acks = Some(p);
                return;
            }
            _ => {}
        }
        if let Some((_, why)) = NOT_PASSED.iter().find(|(n, _)| *n == name) {
            cx.skip_prop(&p, *why);
            return;
        }
        let Some(value) = cx.text(&p) else {
            return;
        };
        match name {
            "security.protocol" => {
                let v = value.to_ascii_lowercase();
                if ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&v.as_str())
                    || values::has_ref(&v)
                {
                    self.set_security("protocol", Value::Str(v), &p, cx);
                } else {
                    cx.skip_prop(&p, format!("`{value}` is not a Kafka security protocol"));
                }
            }
            "sasl.mechanism" => match value.to_ascii_uppercase().as_str() {
                "GSSAPI" => cx.skip_prop(&p, KERBEROS),
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                    self.set_security(
                        "sasl_mechanism",
                        Value::Str(value.to_ascii_uppercase()),
                        &p,
                        cx,
                    );
                }
                _ if values::has_ref(&value) => {
                    self.set_security("sasl_mechanism", Value::Str(value), &p, cx);
                }
                _ => cx.skip_prop(
                    &p,
                    format!(
                        "SASL `{value}` is not in Sluice's librdkafka build; PLAIN and SCRAM are"
                    ),
                ),
            },
            "sasl.jaas.config" => match jaas(&value) {
                Ok((user, password)) => {
                    self.set_security("sasl_username", Value::Str(user), &p, cx);
                    self.set_security("sasl_password", Value::Str(password), &p, cx);
                }
                Err(why) => cx.skip_prop(&p, why),
            },
            "ssl.endpoint.identification.algorithm" => {
                let verify = !value.is_empty();
                self.set_security("ssl_verify_hostname", Value::Bool(verify), &p, cx);
            }
            "compression.type" if value.eq_ignore_ascii_case("zstd") => {
                cx.skip_prop(
                    &p,
                    "Sluice's librdkafka is built without zstd (gzip, snappy and lz4 work)",
                );
            }
            _ => {
                let target = match role {
                    Role::Consumer => &mut self.consumer,
                    Role::Producer => &mut self.producer,
                };
                if SAME_NAME.contains(&name) {
                    target.insert(name, value);
                } else if let Some((_, renamed)) = RENAMED.iter().find(|(n, _)| *n == name) {
                    target.insert(*renamed, value);
                    target.comment(renamed, format!("Java's `{name}`"));
                } else {
                    cx.skip_prop(
                        &p,
                        format!(
                            "`{name}` is not a setting Sluice passes to librdkafka (Sluice's Kafka client is librdkafka, not Java's)"
                        ),
                    );
                }
            }
        }
    }

    /// Sets `security.<field>`; a second, different value (the other client of a channel) is
    /// reported.
    fn set_security(&mut self, field: &str, value: Value, p: &Prop, cx: &mut Cx) {
        match self.security.get(field) {
            Some(v) if *v == value => {}
            Some(_) => cx.skip_prop(
                p,
                format!(
                    "`security.{field}` is already set from the other client: one `security` serves the whole component"
                ),
            ),
            None => self.security.insert(field, value),
        }
    }

    /// Writes `security` and the pass-through maps that have anything in them.
    fn write(self, out: &mut Map) {
        for (key, map) in [
            ("security", self.security),
            ("consumer", self.consumer),
            ("producer", self.producer),
        ] {
            if !map.is_empty() {
                out.insert(key, map);
            }
        }
    }
}

/// The user name and password of a PLAIN or SCRAM JAAS line.
fn jaas(config: &str) -> Result<(String, String), String> {
    if config.contains("Krb5LoginModule") {
        return Err(KERBEROS.into());
    }
    if !config.contains("PlainLoginModule") && !config.contains("ScramLoginModule") {
        return Err("only PLAIN and SCRAM logins can be carried over (as `security.sasl_username` and `sasl_password`)".into());
    }
    let option = |name: &str| -> Option<String> {
        let marker = format!("{name}=\"");
        let at = config.find(&marker)? + marker.len();
        let end = config[at..].find('"')?;
        Some(config[at..at + end].to_owned())
    };
    match (option("username"), option("password")) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err("the JAAS line has no username=\"…\" and password=\"…\"".into()),
    }
}

/// Reports the `acks` of a producer (Flume's sink defaults to 1): only `all` / `-1` is what
/// Sluice does.
fn acks(p: Option<Prop>, cx: &mut Cx) {
    if let Some(p) = p {
        if !matches!(p.trimmed(), "all" | "-1") {
            cx.skip_prop(&p, WHY_ACKS);
        }
    }
}

/// Reports `true` for `useFlumeEventFormat` / `parseAsFlumeEvent`-like settings.
fn avro_events(c: &mut Component, cx: &mut Cx, name: &str) -> Verdict {
    match c.take(name) {
        Some(p) if cx.boolean(&p) == Some(true) => Err(WHY_AVRO_EVENTS.into()),
        _ => Ok(()),
    }
}

/// `group_id` from `kafka.consumer.group.id` (or the older `groupId`, which it overrides, as
/// in Flume), else Flume's default group `flume`.
fn group_id(c: &mut Component, cx: &mut Cx, client: &mut Client, out: &mut Map) {
    let old_group = c.take("groupId");
    let group = match (client.group.take(), old_group) {
        (Some(g), Some(old)) => {
            cx.skip_prop(
                &old,
                format!("`{}` (line {}) is used instead, as in Flume", g.key, g.line),
            );
            Some(g)
        }
        (g, old) => g.or(old),
    };
    match group.and_then(|g| cx.text(&g)) {
        Some(g) => out.insert("group_id", g),
        None => {
            out.insert("group_id", "flume");
            out.comment(
                "group_id",
                "Flume's default group: the committed offsets carry over",
            );
        }
    }
}

/// `org.apache.flume.source.kafka.KafkaSource` → `kafka` source.
pub(super) fn source(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    avro_events(c, cx, "useFlumeEventFormat")?;
    out.insert("type", "kafka");
    let servers = cx.required(c, "kafka.bootstrap.servers")?;
    out.insert("bootstrap_servers", servers);
    let mut client = Client::default();
    client.read(c, cx, Role::Consumer);

    group_id(c, cx, &mut client, out);

    let regex = c.take("kafka.topics.regex");
    let topics = cx.take_first(c, &["kafka.topics", "topic"]);
    match (regex, topics) {
        (Some(r), topics) => {
            if let Some(t) = topics {
                cx.skip_prop(
                    &t,
                    format!("`{}` (line {}) wins over it, as in Flume", r.key, r.line),
                );
            }
            let pattern = cx
                .raw(&r)
                .ok_or("its `kafka.topics.regex` has no Sluice form")?;
            values::check_regex(&pattern)?;
            out.insert("topic_pattern", pattern);
        }
        (None, Some(t)) => {
            let list = cx.text(&t).ok_or("its `kafka.topics` has no Sluice form")?;
            let names: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if names.is_empty() {
                return Err("its `kafka.topics` names no topic".into());
            }
            out.insert("topics", yaml::strings(&names));
        }
        (None, None) => return Err("it has no `kafka.topics` or `kafka.topics.regex`".into()),
    }

    match client.offset_reset.take() {
        Some(p) => match p.trimmed().to_ascii_lowercase().as_str() {
            v @ ("earliest" | "latest") => out.insert("start_at", v),
            _ => cx.skip_prop(
                &p,
                "Sluice starts a group without offsets at `start_at`: earliest or latest",
            ),
        },
        None => {
            out.insert("start_at", "latest");
            out.comment(
                "start_at",
                "where Flume's consumer started a new group (Kafka's default)",
            );
        }
    }
    cx.field(c, "batchDurationMillis", out, "linger", Conv::Millis);
    cx.field(c, "batchSize", out, "batch_size", Conv::Int);
    out.comment(
        "type",
        "Flume's `topic`, `partition`, `offset` and `key` headers are `kafka.topic`, `kafka.partition`, `kafka.offset` and `kafka.key` in Sluice",
    );

    let why = "Sluice always puts the record's topic in the `kafka.topic` header";
    cx.unused(c, "setTopicHeader", why);
    cx.unused(c, "topicHeader", why);
    for (name, p) in c.take_prefix("header.") {
        if p.trimmed() != name {
            cx.skip_prop(&p, "Sluice copies every Kafka header under its own name; renaming one has no equivalent");
        }
    }
    let why = "Sluice's consumer waits on the broker for records: no polling backoff";
    cx.unused(c, "backoffSleepIncrement", why);
    cx.unused(c, "maxBackoffSleep", why);
    cx.unused(c, "migrateZookeeperOffsets", WHY_ZOOKEEPER);
    cx.unused(c, "zookeeperConnect", WHY_ZOOKEEPER);
    client.write(out);
    Ok(())
}

/// `org.apache.flume.sink.kafka.KafkaSink` → `kafka` sink.
pub(super) fn sink(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    avro_events(c, cx, "useFlumeEventFormat")?;
    out.insert("type", "kafka");
    let servers = cx
        .take_first(c, &["kafka.bootstrap.servers", "brokerList"])
        .ok_or("it has no `kafka.bootstrap.servers`")?;
    out.insert(
        "bootstrap_servers",
        cx.text(&servers)
            .ok_or("its `kafka.bootstrap.servers` has no Sluice form")?,
    );
    let topic = match cx.take_first(c, &["kafka.topic", "topic"]) {
        Some(p) => {
            let text = cx.text(&p).ok_or("its `kafka.topic` has no Sluice form")?;
            values::template(&text).map_err(|why| format!("its topic: {why}"))?
        }
        None => "default-flume-topic".to_owned(),
    };
    out.insert("topic", topic);
    // Flume uses the `key` header as the record key; rendered empty means no key, as in Flume.
    out.insert("key", "%{key}");

    let allow_override = c.take("allowTopicOverride");
    let topic_header = c.take("topicHeader");
    let override_off = allow_override
        .as_ref()
        .is_some_and(|p| values::java_bool(p.trimmed()) == Some(false));
    if override_off {
        if let Some(h) = topic_header {
            cx.skip_prop(
                &h,
                "allowTopicOverride is false: Flume does not read it either",
            );
        }
    } else {
        let header = topic_header
            .as_ref()
            .map_or("topic", |h| h.trimmed())
            .to_owned();
        let why = format!(
            "Flume sent an event carrying a `{header}` header to that topic; Sluice writes every event to `topic` (a template: `%{{{header}}}` if every event has the header)"
        );
        match (&allow_override, &topic_header) {
            (None, None) => out.comment("topic", why),
            _ => {
                for p in allow_override.iter().chain(topic_header.iter()) {
                    cx.skip_prop(p, why.clone());
                }
            }
        }
    }

    let mut client = Client::default();
    client.read(c, cx, Role::Producer);
    acks(cx.take_first(c, &["requiredAcks"]), cx);
    acks(client.acks.take(), cx);

    // Flume writes the body alone, plus the headers mapped by `header.<event header>`.
    let mapped = c.take_prefix("header.");
    let identical = mapped.iter().all(|(n, p)| p.trimmed() == n);
    if mapped.is_empty() || !identical {
        out.insert("headers", false);
        for (_, p) in &mapped {
            cx.skip_prop(p, "Sluice copies all event headers into Kafka headers, or none: renaming one has no equivalent");
        }
    } else {
        out.comment(
            "key",
            "Flume copied only the headers named by `header.*`; Sluice copies every event header",
        );
    }
    if let Some(p) = c.take("timestampHeader") {
        if p.trimmed() != "timestamp" {
            cx.skip_prop(
                &p,
                "Sluice takes the record timestamp from a numeric `timestamp` header",
            );
        }
    }
    cx.unused(c, "defaultPartitionId", WHY_PARTITION);
    cx.unused(c, "partitionIdHeader", WHY_PARTITION);
    if let Some(p) = cx.take_first(c, &["flumeBatchSize", "kafka.flumeBatchSize", "batchSize"]) {
        if let Some(v) = cx.value(&p, Conv::Int) {
            out.insert("batch_size", v);
        }
    }
    client.write(out);
    Ok(())
}

/// `org.apache.flume.channel.kafka.KafkaChannel` → `kafka` channel.
pub(super) fn channel(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "kafka");
    let servers = cx
        .take_first(c, &["kafka.bootstrap.servers", "brokerList"])
        .ok_or("it has no `kafka.bootstrap.servers`")?;
    out.insert(
        "bootstrap_servers",
        cx.text(&servers)
            .ok_or("its `kafka.bootstrap.servers` has no Sluice form")?,
    );
    let topic = match cx.take_first(c, &["kafka.topic", "topic"]) {
        Some(p) => cx.text(&p).ok_or("its `kafka.topic` has no Sluice form")?,
        None => "flume-channel".to_owned(),
    };
    out.insert("topic", topic);

    let mut client = Client::default();
    client.read(c, cx, Role::Consumer);
    client.read(c, cx, Role::Producer);
    group_id(c, cx, &mut client, out);
    if let Some(p) = client.offset_reset.take() {
        match p.trimmed().to_ascii_lowercase().as_str() {
            v @ ("earliest" | "latest") => client.consumer.insert("auto.offset.reset", v),
            _ => cx.skip_prop(&p, "librdkafka takes earliest or latest"),
        }
    }
    if let Some(p) = c.take("readSmallestOffset") {
        if cx.boolean(&p) != Some(true) {
            cx.skip_prop(
                &p,
                "a new Sluice channel group starts at the earliest offset",
            );
        }
    }
    acks(client.acks.take(), cx);

    let parse = c.take("parseAsFlumeEvent");
    let flume_format = match &parse {
        Some(p) => cx.boolean(p) != Some(false),
        None => true,
    };
    if flume_format {
        out.comment(
            "topic",
            "Flume wrote Avro-wrapped events here (parseAsFlumeEvent); Sluice writes the body as the value and headers as Kafka headers: start on an empty topic, or drain this one with Flume first",
        );
    }
    cx.unused(
        c,
        "pollTimeout",
        "Sluice's consumer waits on the broker for records",
    );
    cx.unused(c, "defaultPartitionId", WHY_PARTITION);
    cx.unused(c, "partitionIdHeader", WHY_PARTITION);
    cx.unused(c, "migrateZookeeperOffsets", WHY_ZOOKEEPER);
    cx.unused(c, "zookeeperConnect", WHY_ZOOKEEPER);
    cx.unused(c, "transactionCapacity", WHY_TRANSACTION_CAPACITY);
    client.write(out);
    Ok(())
}
