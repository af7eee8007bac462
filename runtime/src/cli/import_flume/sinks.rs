//! Flume sinks — `logger`, `null`, `file_roll` → `file`, `http`, the Kafka sink → `kafka`
//! ([`super::kafka`]) — and sink groups: the `failover` and `load_balance` processors.

use std::collections::{HashMap, HashSet};

use super::{
    agent::{Component, Kind},
    channels::home,
    kafka,
    translate::{Conv, Cx, NO_TYPE, Names, Verdict, custom_class},
    values,
    yaml::{Map, Value},
};

const WHY_HTTP_STATUS: &str = "Sluice's http sink decides by status itself: 2xx is delivered; connection errors, 408, 425, 429 and 5xx are retried with backoff; other codes send the event to the DLQ";

/// Translates sink `c` into `out`.
pub(super) fn translate(c: &mut Component, cx: &mut Cx, out: &mut Map, names: &Names) -> Verdict {
    let ty = c.type_name().to_owned();
    let channel = c
        .take("channel")
        .map(|p| p.trimmed().to_owned())
        .filter(|ch| !ch.is_empty())
        .ok_or("it has no `channel`, so Flume does not start it either")?;
    // `type` first, then the channel; the type's own fields follow.
    out.insert("type", Value::Null);
    out.insert("channel", names.get(Kind::Channel, &channel));
    match ty.to_ascii_lowercase().as_str() {
        "logger" | "org.apache.flume.sink.loggersink" => {
            out.insert("type", "logger");
            cx.field(c, "maxBytesToLog", out, "max_body", Conv::Int);
            Ok(())
        }
        "null" | "org.apache.flume.sink.nullsink" => {
            out.insert("type", "null");
            cx.field(c, "batchSize", out, "batch_size", Conv::Int);
            Ok(())
        }
        "file_roll" | "org.apache.flume.sink.rollingfilesink" => file_roll(c, cx, out),
        "http" | "org.apache.flume.sink.http.httpsink" => http(c, cx, out),
        "org.apache.flume.sink.kafka.kafkasink" => kafka::sink(c, cx, out),
        "hdfs" | "org.apache.flume.sink.hdfs.hdfseventsink" => Err(
            "HDFS is not a Sluice sink (Sluice writes files with `file` and objects with `s3`)"
                .into(),
        ),
        "hive" | "org.apache.flume.sink.hive.hivesink" => {
            Err("Hive is not a Sluice sink (its `sql` sink writes to PostgreSQL and MySQL)".into())
        }
        "hbase"
        | "hbase2"
        | "asynchbase"
        | "org.apache.flume.sink.hbase.hbasesink"
        | "org.apache.flume.sink.hbase2.hbase2sink"
        | "org.apache.flume.sink.hbase.asynchbasesink" => {
            Err("HBase is not a Sluice sink".into())
        }
        "elasticsearch" | "org.apache.flume.sink.elasticsearch.elasticsearchsink" => {
            Err("Elasticsearch is not a Sluice sink (its `http` sink can post to the bulk API, in another format)".into())
        }
        "org.apache.flume.sink.solr.morphline.morphlinesolrsink" => {
            Err("Solr (MorphlineSolrSink) is not a Sluice sink".into())
        }
        "org.apache.flume.sink.kite.datasetsink" => {
            Err("Kite datasets are not a Sluice sink".into())
        }
        "irc" | "org.apache.flume.sink.irc.ircsink" => Err("IRC is not a Sluice sink".into()),
        "avro" | "org.apache.flume.sink.avrosink" => Err(
            "Flume's Avro RPC is not spoken by Sluice: once the next agent runs Sluice, use a `sluice` sink (endpoints: [host:port]) and a `sluice` source there".into(),
        ),
        "thrift" | "org.apache.flume.sink.thriftsink" => Err(
            "Flume's Thrift RPC is not spoken by Sluice: once the next agent runs Sluice, use a `sluice` sink (endpoints: [host:port]) and a `sluice` source there".into(),
        ),
        "" => Err(NO_TYPE.into()),
        _ => Err(custom_class(&ty, "sink")),
    }
}

/// `file_roll` → `file`: one file rolled every `sink.rollInterval` seconds.
fn file_roll(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "file");
    let dir = home(&cx.required(c, "sink.directory")?);
    let serializer = c.take("sink.serializer");
    match serializer
        .as_ref()
        .map(|p| p.trimmed().to_ascii_lowercase())
    {
        None => {}
        Some(s)
            if s == "text"
                || s == "org.apache.flume.serialization.bodytexteventserializer$builder" => {}
        Some(_) => {
            let name = serializer.as_ref().map_or("", |p| p.trimmed());
            return Err(format!(
                "its `{name}` serializer: Sluice's file sink writes lines, NDJSON or a `serde` Wasm plugin's format"
            ));
        }
    }
    if let Some(p) = c.take("sink.serializer.appendNewline") {
        if cx.boolean(&p) == Some(false) {
            cx.skip_prop(
                &p,
                "Sluice's `lines` format ends every event with a newline",
            );
        }
    }
    cx.unused_prefix(
        c,
        "sink.serializer.",
        "no Sluice equivalent for this serializer setting",
    );
    if let Some(p) = c.take("sink.pathManager") {
        if !p.trimmed().eq_ignore_ascii_case("default") {
            cx.skip_prop(
                &p,
                "only the default file naming has an equivalent (see `path`)",
            );
        }
    }
    let prefix = match c.take("sink.pathManager.prefix") {
        Some(p) => cx.text(&p).unwrap_or_default(),
        None => String::new(),
    };
    let extension = match c.take("sink.pathManager.extension") {
        Some(p) => cx
            .text(&p)
            .filter(|e| !e.is_empty())
            .map(|e| format!(".{e}"))
            .unwrap_or_default(),
        None => String::new(),
    };
    cx.unused_prefix(
        c,
        "sink.pathManager.",
        "no Sluice equivalent for this path manager setting",
    );
    let (dir, name) = (dir.trim_end_matches('/'), &c.name);
    let path = format!("{dir}/{prefix}{name}{extension}");
    out.insert("path", values::literal_template(&path));
    let roll = c.take("sink.rollInterval");
    let no_roll = roll.as_ref().is_some_and(|p| p.trimmed() == "0");
    if no_roll {
        out.comment(
            "path",
            "Flume wrote one file, <prefix><start time>-1<.extension>, in sink.directory; Sluice appends to `path`",
        );
    } else {
        let interval = match &roll {
            Some(p) => match cx.value(p, Conv::Int) {
                Some(Value::Int(n)) => Some(Value::Str(values::duration(
                    u64::try_from(n).unwrap_or(0).saturating_mul(1000),
                ))),
                Some(Value::Str(s)) => Some(Value::Str(format!("{s}s"))),
                _ => None,
            },
            None => Some(Value::Str("30s".to_owned())),
        };
        if let Some(interval) = interval {
            out.insert("roll_interval", interval);
        }
        out.comment(
            "path",
            "Flume named files <prefix><start time>-<n><.extension> in sink.directory; Sluice writes <path>.0, <path>.1, … and continues the highest after a restart",
        );
    }
    cx.field(c, "sink.batchSize", out, "batch_size", Conv::Int);
    Ok(())
}

/// `http` → `http`: one POST per event, the body as is.
fn http(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "http");
    let endpoint = cx.required(c, "endpoint")?;
    out.insert("url", values::literal_template(&endpoint));
    let mut headers = Map::new();
    for (from, name) in [
        ("contentTypeHeader", "Content-Type"),
        ("acceptHeader", "Accept"),
    ] {
        let value = match c.take(from) {
            Some(p) => cx.text(&p).unwrap_or_else(|| "text/plain".to_owned()),
            None => "text/plain".to_owned(),
        };
        headers.insert(name, values::literal_template(&value));
    }
    out.insert("headers", headers);
    let connect = c.take("connectTimeout");
    let request = c.take("requestTimeout");
    if connect.is_some() || request.is_some() {
        let mut ms: i64 = 0;
        let mut known = true;
        for p in [&connect, &request] {
            match p {
                Some(p) => match cx.number(p) {
                    Some(n) => ms = ms.saturating_add(n),
                    None => known = false,
                },
                None => ms = ms.saturating_add(5000),
            }
        }
        if known {
            out.insert("timeout", values::duration(u64::try_from(ms).unwrap_or(0)));
            out.comment(
                "timeout",
                "Flume's connectTimeout + requestTimeout: Sluice's timeout covers the whole request",
            );
        }
    }
    for name in [
        "defaultBackoff",
        "defaultRollback",
        "defaultIncrementMetrics",
    ] {
        cx.unused(c, name, WHY_HTTP_STATUS);
    }
    for prefix in ["backoff.", "rollback.", "incrementMetrics."] {
        cx.unused_prefix(c, prefix, WHY_HTTP_STATUS);
    }
    Ok(())
}

/// What a sink group may contain.
pub(super) struct Members<'a> {
    /// The agent's sinks.
    pub listed: &'a HashSet<String>,
    /// The sinks translated, with the channel each reads.
    pub kept: &'a HashMap<String, String>,
    /// Sinks already in a group, and which.
    pub grouped: &'a mut HashMap<String, String>,
}

/// A sink group. An empty `out` means no Sluice group is needed (Flume's `default`
/// processor, whose one sink runs on its own).
pub(super) fn group(
    c: &mut Component,
    cx: &mut Cx,
    out: &mut Map,
    names: &Names,
    m: &mut Members,
) -> Verdict {
    let list = c
        .take("sinks")
        .ok_or("it has no `sinks`, so Flume does not start it either")?;
    let mut members: Vec<String> = Vec::new();
    for s in list.value.split_whitespace() {
        if members.iter().any(|x| x == s) {
            continue;
        }
        let why = if !m.listed.contains(s) {
            Some(format!("`{s}` is not a sink of this agent"))
        } else if !m.kept.contains_key(s) {
            Some(format!(
                "its sink `{s}` was left out, so the group runs without it"
            ))
        } else {
            m.grouped
                .get(s)
                .map(|g| format!("sink `{s}` is already in group `{g}`"))
        };
        match why {
            Some(why) => cx.skip_prop(&list, why),
            None => members.push(s.to_owned()),
        }
    }
    if members.is_empty() {
        return Err("none of its sinks was translated".into());
    }
    let first = &members[0];
    if let Some(other) = members.iter().find(|s| m.kept.get(*s) != m.kept.get(first)) {
        return Err(format!(
            "its sinks read different channels (`{first}` reads `{}`, `{other}` reads `{}`): the sinks of a Sluice group share one channel",
            m.kept.get(first).map_or("", String::as_str),
            m.kept.get(other).map_or("", String::as_str),
        ));
    }

    let ty = c
        .take("processor.type")
        .map(|p| p.trimmed().to_owned())
        .unwrap_or_default();
    match ty.to_ascii_lowercase().as_str() {
        "" | "default" | "org.apache.flume.sink.defaultsinkprocessor" => {
            if members.len() > 1 {
                return Err("the default processor takes one sink (Flume refuses more)".into());
            }
        }
        "failover" | "org.apache.flume.sink.failoversinkprocessor" => {
            failover(c, cx, out, names, &members);
        }
        "load_balance" | "org.apache.flume.sink.loadbalancingsinkprocessor" => {
            load_balance(c, cx, out, names, &members);
        }
        _ => return Err(custom_class(&ty, "sink processor")),
    }
    for s in members {
        m.grouped.insert(s, c.name.clone());
    }
    Ok(())
}

fn failover(c: &mut Component, cx: &mut Cx, out: &mut Map, names: &Names, members: &[String]) {
    out.insert("type", "failover");
    out.insert("sinks", names.list(Kind::Sink, members));
    let mut set: Vec<(String, Value)> = Vec::new();
    for (sink, p) in c.take_prefix("processor.priority.") {
        if !members.contains(&sink) {
            cx.skip_prop(&p, format!("`{sink}` is not a sink of this group"));
        } else if let Some(v) = cx.value(&p, Conv::Int) {
            if set.iter().any(|(_, other)| *other == v) {
                cx.skip_prop(
                    &p,
                    "another sink of the group has this priority: Flume leaves this sink out of the failover order, Sluice keeps list order between equals",
                );
            }
            set.push((sink, v));
        }
    }
    if !set.is_empty() {
        // Flume gives the sinks without a priority -1, -2, … in list order.
        let mut priorities = Map::new();
        let mut next = 0i64;
        for s in members {
            let v = match set.iter().find(|(n, _)| n == s) {
                Some((_, v)) => v.clone(),
                None => {
                    next -= 1;
                    Value::Int(next)
                }
            };
            priorities.insert(names.get(Kind::Sink, s), v);
        }
        out.insert("priorities", priorities);
    }
    cx.field(c, "processor.maxpenalty", out, "max_penalty", Conv::Millis);
}

fn load_balance(c: &mut Component, cx: &mut Cx, out: &mut Map, names: &Names, members: &[String]) {
    out.insert("type", "load_balance");
    out.insert("sinks", names.list(Kind::Sink, members));
    if let Some(p) = c.take("processor.selector") {
        match p.trimmed().to_ascii_lowercase().as_str() {
            v @ ("round_robin" | "random") => out.insert("selector", v),
            _ => cx.skip_prop(
                &p,
                "a custom sink selector is a Java class: Sluice balances `round_robin` or `random`",
            ),
        }
    }
    // Flume's default is no backoff; Sluice's is backoff.
    match c.take("processor.backoff") {
        Some(p) => {
            if let Some(v) = cx.value(&p, Conv::Flag) {
                out.insert("backoff", v);
            }
        }
        None => out.insert("backoff", false),
    }
    cx.field(
        c,
        "processor.selector.maxTimeOut",
        out,
        "max_backoff",
        Conv::Millis,
    );
}
