//! Flume sources: `exec` running a plain `tail -F` and `TAILDIR` → `file`, `seq` and the
//! stress source → `generator`, `http` → `http`, the Kafka source → `kafka` ([`super::kafka`]);
//! and what every source has: `channels`, the channel selector and the interceptors.

use super::{
    agent::{Component, Kind},
    channels::{home, parent_dir},
    interceptors, kafka,
    translate::{Conv, Cx, NO_TYPE, Names, Verdict, custom_class},
    values,
    yaml::{self, Map, Value},
};

const WHY_AVRO_RPC: &str = "Flume's Avro RPC is not spoken by Sluice: once the agents sending here run Sluice, give this one a `sluice` source (listen: host:port) and them `sluice` sinks";
const WHY_THRIFT_RPC: &str = "Flume's Thrift RPC is not spoken by Sluice: once the agents sending here run Sluice, give this one a `sluice` source (listen: host:port) and them `sluice` sinks";
const WHY_SPOOLDIR: &str = "Sluice has no spooling-directory source: its `file` source could follow the directory's files (`paths: [<dir>/*]`) but never renames or deletes them, and would read files Flume already marked .COMPLETED again";
const WHY_SYSLOG: &str = "Sluice has no syslog source";

/// Translates source `c` into `out`.
pub(super) fn translate(c: &mut Component, cx: &mut Cx, out: &mut Map, names: &Names) -> Verdict {
    let ty = c.type_name().to_owned();
    let channels: Vec<String> = match c.take("channels") {
        Some(p) => p.value.split_whitespace().map(str::to_owned).collect(),
        None => Vec::new(),
    };
    if channels.is_empty() {
        return Err("it has no `channels`, so Flume does not start it either".into());
    }
    // `type` first, then the channels; the type's own fields follow.
    out.insert("type", Value::Null);
    out.insert("channels", names.list(Kind::Channel, &channels));
    let mut pre: Vec<Value> = Vec::new();
    match ty.to_ascii_lowercase().as_str() {
        "exec" | "org.apache.flume.source.execsource" => exec(c, cx, out)?,
        "taildir" | "org.apache.flume.source.taildir.taildirsource" => {
            taildir(c, cx, out, &mut pre)?
        }
        "seq" | "org.apache.flume.source.sequencegeneratorsource" => seq(c, cx, out)?,
        "org.apache.flume.source.stresssource" => stress(c, cx, out)?,
        "http" | "org.apache.flume.source.http.httpsource" => http(c, cx, out)?,
        "org.apache.flume.source.kafka.kafkasource" => kafka::source(c, cx, out)?,
        "avro" | "org.apache.flume.source.avrosource" => return Err(WHY_AVRO_RPC.into()),
        "thrift" | "org.apache.flume.source.thriftsource" => return Err(WHY_THRIFT_RPC.into()),
        "netcat" | "org.apache.flume.source.netcatsource" => {
            return Err("Sluice has no TCP line source (its `http` source with `codec: lines` takes lines over HTTP)".into());
        }
        "netcatudp" | "org.apache.flume.source.netcatudpsource" => {
            return Err("Sluice has no UDP source".into());
        }
        "syslogtcp"
        | "multiport_syslogtcp"
        | "syslogudp"
        | "org.apache.flume.source.syslogtcpsource"
        | "org.apache.flume.source.multiportsyslogtcpsource"
        | "org.apache.flume.source.syslogudpsource" => return Err(WHY_SYSLOG.into()),
        "spooldir" | "org.apache.flume.source.spooldirectorysource" => {
            return Err(WHY_SPOOLDIR.into());
        }
        "jms" | "org.apache.flume.source.jms.jmssource" => {
            return Err(
                "Sluice has no JMS source (its queue sources are Kafka, RabbitMQ, SQS and Redis)"
                    .into(),
            );
        }
        "org.apache.flume.source.twitter.twittersource" => {
            return Err("Sluice has no Twitter source".into());
        }
        "org.apache.flume.source.scribe.scribesource" => {
            return Err("Sluice has no Scribe source".into());
        }
        "org.apache.flume.source.avrolegacy.avrolegacysource"
        | "org.apache.flume.source.thriftlegacy.thriftlegacysource" => {
            return Err("Flume 0.9 legacy sources have no Sluice equivalent".into());
        }
        "" => return Err(NO_TYPE.into()),
        _ => return Err(custom_class(&ty, "source")),
    }
    if let Some(selector) = selector(c, cx, &channels, names)? {
        out.insert("selector", selector);
    }
    let mut chain = pre;
    chain.extend(interceptors::translate(c, cx));
    if !chain.is_empty() {
        out.insert("interceptors", Value::List(chain));
    }
    Ok(())
}

/// The channel selector: `replicating` (with `optional` channels) or `multiplexing`.
fn selector(
    c: &mut Component,
    cx: &mut Cx,
    channels: &[String],
    names: &Names,
) -> Result<Option<Map>, String> {
    let ty = c
        .take("selector.type")
        .map(|p| p.trimmed().to_owned())
        .unwrap_or_default();
    match ty.to_ascii_lowercase().as_str() {
        "" | "replicating" | "org.apache.flume.channel.replicatingchannelselector" => {
            Ok(replicating(c, cx, channels, names))
        }
        "multiplexing" | "org.apache.flume.channel.multiplexingchannelselector" => {
            multiplexing(c, cx, names).map(Some)
        }
        "load_balancing" | "org.apache.flume.channel.loadbalancingchannelselector" => Err(
            "its load_balancing selector spreads events over its channels; Sluice's selectors replicate or multiplex (a `selector` Wasm plugin could spread them)".into(),
        ),
        _ => Err(format!(
            "{}; a `selector` Wasm plugin can take its place",
            custom_class(&ty, "channel selector")
        )),
    }
}

fn replicating(c: &mut Component, cx: &mut Cx, channels: &[String], names: &Names) -> Option<Map> {
    let p = c.take("selector.optional")?;
    let mut optional: Vec<String> = Vec::new();
    for n in p.value.split_whitespace() {
        if channels.iter().any(|ch| ch == n) {
            optional.push(n.to_owned());
        } else {
            cx.skip_prop(
                &p,
                format!("`{n}` is not one of the source's `channels`, so it is not written to"),
            );
        }
    }
    if optional.is_empty() {
        return None;
    }
    let mut m = Map::new();
    m.insert("type", "replicating");
    m.insert("optional", names.list(Kind::Channel, &optional));
    Some(m)
}

/// Flume's multiplexing semantics, made explicit for Sluice: a value with only optional
/// channels also goes to the default channels, and a channel both required and optional for
/// a value is required.
fn multiplexing(c: &mut Component, cx: &mut Cx, names: &Names) -> Result<Map, String> {
    let header = match c.take("selector.header") {
        Some(p) => cx
            .text(&p)
            .ok_or("its `selector.header` has no Sluice form")?,
        None => "flume.selector.header".to_owned(),
    };
    let split = |v: &str| -> Vec<String> { v.split_whitespace().map(str::to_owned).collect() };
    let default = c
        .take("selector.default")
        .map(|p| split(&p.value))
        .unwrap_or_default();
    let mut mapping: Vec<(String, Vec<String>)> = Vec::new();
    for (value, p) in c.take_prefix("selector.mapping.") {
        let list = split(&p.value);
        if list.is_empty() {
            cx.skip_prop(&p, "maps the value to no channel");
        } else {
            mapping.push((value, list));
        }
    }
    let mut optional: Vec<(String, Vec<String>)> = Vec::new();
    let mut defaulted: Vec<String> = Vec::new();
    for (value, p) in c.take_prefix("selector.optional.") {
        let existing = mapping
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, list)| list.clone());
        let required = match existing {
            Some(list) => list,
            None if !default.is_empty() => {
                mapping.push((value.clone(), default.clone()));
                defaulted.push(value.clone());
                default.clone()
            }
            None => Vec::new(),
        };
        let list: Vec<String> = split(&p.value)
            .into_iter()
            .filter(|ch| !required.contains(ch))
            .collect();
        if !list.is_empty() {
            optional.push((value, list));
        }
    }
    if mapping.is_empty() && default.is_empty() {
        return Err(
            "its multiplexing selector has neither `selector.mapping.*` nor `selector.default`, so it writes nowhere".into(),
        );
    }
    let lists = |entries: &[(String, Vec<String>)]| -> Map {
        let mut m = Map::new();
        for (value, list) in entries {
            m.insert(value.clone(), names.list(Kind::Channel, list));
        }
        m
    };
    let mut m = Map::new();
    m.insert("type", "multiplexing");
    m.insert("header", header);
    if !mapping.is_empty() {
        m.insert("mapping", lists(&mapping));
    }
    if !defaulted.is_empty() {
        m.comment(
            "mapping",
            format!(
                "{} also go to the default channels, as in Flume (their only mapping was optional)",
                defaulted.join(", ")
            ),
        );
    }
    if !default.is_empty() {
        m.insert("default", names.list(Kind::Channel, &default));
    }
    if !optional.is_empty() {
        m.insert("optional", lists(&optional));
    }
    Ok(m)
}

/// `exec` whose command is a plain `tail -F <files>` → a `file` source.
fn exec(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    let command = cx.required(c, "command")?;
    let shell = c.take("shell");
    let tail = values::tail_command(&command, shell.is_some()).map_err(|why| {
        format!("its command `{command}` is not a plain `tail -F` Sluice's `file` source can replace: {why}")
    })?;
    out.insert("type", "file");
    out.comment("type", format!("was an exec source running `{command}`"));
    out.insert("paths", yaml::strings(&tail.paths));
    out.insert("position_file", format!("sluice-positions/{}.json", c.name));
    out.comment(
        "position_file",
        "the exec source kept no position; the file source needs a file of its own (relative to the working directory)",
    );
    match tail.from_start {
        Some(true) => {}
        Some(false) => out.insert("start_at", "end"),
        None => {
            out.insert("start_at", "end");
            out.comment(
                "start_at",
                "tail began with the last 10 lines; Sluice starts at the end of the files it finds on its first run",
            );
        }
    }
    // The exec source puts no header; the file source would add `file`.
    let mut headers = Map::new();
    headers.insert("file", Value::Null);
    out.insert("headers", headers);
    cx.field(c, "batchSize", out, "batch_size", Conv::Int);
    let why = "Sluice reads the files itself: there is no command to restart or log";
    for name in ["restart", "restartThrottle", "logStdErr"] {
        cx.unused(c, name, why);
    }
    cx.unused(
        c,
        "batchTimeout",
        "Sluice's file source hands lines on as soon as they are read",
    );
    charset(c, cx);
    Ok(())
}

/// Accepts a UTF-8 `charset`; reports another.
fn charset(c: &mut Component, cx: &mut Cx) {
    if let Some(p) = c.take("charset") {
        let name = p.trimmed().to_ascii_uppercase();
        if name != "UTF-8" && name != "UTF8" {
            cx.skip_prop(
                &p,
                "Sluice splits lines on `\\n` and passes the bytes on as they are",
            );
        }
    }
}

/// `TAILDIR` → `file`: each file group's regex on file names becomes a glob.
fn taildir(c: &mut Component, cx: &mut Cx, out: &mut Map, pre: &mut Vec<Value>) -> Verdict {
    out.insert("type", "file");
    let groups = c
        .take("filegroups")
        .ok_or("it has no `filegroups`, which it needs")?;
    let group_names: Vec<String> = groups.value.split_whitespace().map(str::to_owned).collect();
    let mut paths: Vec<String> = Vec::new();
    let mut from: Vec<String> = Vec::new();
    for g in &group_names {
        let Some(p) = c.take(&format!("filegroups.{g}")) else {
            cx.skip_prop(&groups, format!("file group `{g}` has no `filegroups.{g}`"));
            continue;
        };
        let Some(path) = cx.text(&p) else {
            continue;
        };
        let path = home(&path);
        match values::taildir_glob(&path) {
            Ok(glob) => {
                from.push(format!("{g} = {path}"));
                paths.push(glob);
            }
            Err(why) => cx.skip_prop(&p, why),
        }
    }
    if paths.is_empty() {
        return Err("none of its file groups can be followed by Sluice's `file` source".into());
    }
    out.insert("paths", yaml::strings(&paths));
    out.comment(
        "paths",
        format!(
            "Flume's file groups, regexes on file names: {}",
            from.join("; ")
        ),
    );
    for (name, p) in c.take_prefix("filegroups.") {
        cx.skip_prop(
            &p,
            format!("`{name}` is not in `filegroups`: Flume ignores it too"),
        );
    }

    let (position, note) = match c.take("positionFile").and_then(|p| cx.text(&p)) {
        Some(file) => {
            let file = home(&file);
            let dir = parent_dir(&file);
            let path = match dir {
                Some(dir) => format!("{dir}/sluice-{}.json", c.name),
                None => format!("sluice-{}.json", c.name),
            };
            (path, format!("beside Flume's {file}, whose format differs: Sluice starts its own"))
        }
        None => (
            format!("${{HOME}}/.flume/sluice-{}.json", c.name),
            "beside Flume's default ~/.flume/taildir_position.json, whose format differs: Sluice starts its own".to_owned(),
        ),
    };
    out.insert("position_file", position);
    out.comment("position_file", note);

    if let Some(p) = c.take("skipToEnd") {
        if cx.boolean(&p) == Some(true) {
            out.insert("start_at", "end");
            out.comment(
                "start_at",
                "Flume skipped to the end of files missing from its position file; Sluice does so on its first run",
            );
        }
    }

    let mut headers = Map::new();
    let file_header = c.take("fileHeader");
    let file_key = c.take("fileHeaderKey");
    let with_file = file_header.as_ref().and_then(|p| cx.boolean(p)) == Some(true);
    if with_file {
        let key = file_key
            .and_then(|k| cx.text(&k))
            .unwrap_or_else(|| "file".to_owned());
        headers.insert("file", key);
    } else {
        headers.insert("file", Value::Null);
        if let Some(k) = file_key {
            cx.skip_prop(&k, "fileHeader is not true: Flume does not use it either");
        }
    }
    if let Some(p) = c.take("byteOffsetHeader") {
        if cx.boolean(&p) == Some(true) {
            headers.insert("offset", "byteoffset");
        }
    }
    out.insert("headers", headers);

    // `headers.<group>.<name> = value`: with one group, static headers for every event.
    let group_headers = c.take_prefix("headers.");
    for (rest, p) in group_headers {
        let (group, name) = rest.split_once('.').unwrap_or((rest.as_str(), ""));
        if name.is_empty() || !group_names.iter().any(|g| g == group) {
            cx.skip_prop(
                &p,
                format!("`{group}` is not one of its file groups: Flume ignores it too"),
            );
        } else if group_names.len() > 1 {
            cx.skip_prop(
                &p,
                "Sluice's file source has no per-file-group headers (with one group per source they become `static` interceptors)",
            );
        } else if let Some(value) = cx.raw(&p) {
            let mut m = Map::new();
            m.insert("type", "static");
            // A header name from a property key: literal, never a reference.
            m.insert("key", values::literal(name));
            m.insert("value", value);
            m.insert("preserve_existing", false);
            m.comment(
                "type",
                format!("Flume's header `{name}` of file group `{group}`"),
            );
            pre.push(Value::Map(m));
        }
    }

    cx.field(c, "batchSize", out, "batch_size", Conv::Int);
    cx.unused(
        c,
        "idleTimeout",
        "Sluice keeps followed files open (a rotated one is closed after `rotate_wait`)",
    );
    cx.unused(
        c,
        "writePosInterval",
        "Sluice writes positions after every committed batch",
    );
    cx.unused(
        c,
        "maxBatchCount",
        "Sluice reads the files it follows in turn, batch by batch",
    );
    let why = "Sluice is woken by file change notifications (`poll_interval` is its fallback)";
    cx.unused(c, "backoffSleepIncrement", why);
    cx.unused(c, "maxBackoffSleep", why);
    cx.unused(
        c,
        "cachePatternMatching",
        "Sluice watches the directories for new files",
    );
    Ok(())
}

/// `seq` → `generator`: Flume's bodies are the counter, from 0, unpadded.
fn seq(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "generator");
    cx.field(c, "totalEvents", out, "count", Conv::Int);
    out.insert("body_size", 1i64);
    out.comment(
        "body_size",
        "the body is the counter from 0, as in Flume: a body_size of 1 leaves it unpadded",
    );
    cx.field(c, "batchSize", out, "batch_size", Conv::Int);
    Ok(())
}

/// The stress source (`org.apache.flume.source.StressSource`) → `generator`.
fn stress(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "generator");
    out.comment(
        "type",
        "was Flume's stress source: bodies are the event number padded with `.` instead of a fixed buffer",
    );
    let mut count: Option<Value> = None;
    for name in ["maxTotalEvents", "maxSuccessfulEvents"] {
        if let Some(p) = c.take(name) {
            match cx.value(&p, Conv::Int) {
                Some(Value::Int(n)) if n <= 0 => {}
                Some(Value::Int(n)) => {
                    let smaller = match &count {
                        Some(Value::Int(m)) => n.min(*m),
                        _ => n,
                    };
                    count = Some(Value::Int(smaller));
                }
                Some(v) => count = Some(v),
                None => {}
            }
        }
    }
    if let Some(v) = count {
        out.insert("count", v);
    }
    match c.take("size") {
        Some(p) => {
            if let Some(v) = cx.value(&p, Conv::Int) {
                out.insert("body_size", v);
            }
        }
        None => out.insert("body_size", 500i64),
    }
    if let Some(p) = c.take("maxEventsPerSecond") {
        match cx.value(&p, Conv::Int) {
            Some(Value::Int(n)) if n <= 0 => {}
            Some(v) => out.insert("rate", v),
            None => {}
        }
    }
    cx.field(c, "batchSize", out, "batch_size", Conv::Int);
    Ok(())
}

/// `http` → `http`: Flume's default JSON handler takes an array of `{headers, body}`
/// objects, which is Sluice's `json` codec.
fn http(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "http");
    let port = cx.required(c, "port")?;
    let bind = match c.take("bind") {
        Some(p) => cx.text(&p).ok_or("its `bind` has no Sluice form")?,
        None => "0.0.0.0".to_owned(),
    };
    out.insert("listen", values::listen(&bind, &port)?);
    out.comment(
        "listen",
        "Flume took requests on any path; Sluice takes them on `paths` (default: /)",
    );
    if let Some(p) = cx.take_first(c, &["ssl", "enableSSL"]) {
        if cx.boolean(&p) == Some(true) {
            return Err("it serves TLS from a Java keystore: convert the keystore to PEM files and add `tls: { cert, key }` to an `http` source by hand".into());
        }
    }
    let why = "TLS is off (`ssl` is not true): nothing to carry over";
    for name in [
        "keystore",
        "keystore-password",
        "keystorePassword",
        "keystore-type",
        "exclude-protocols",
        "excludeProtocols",
        "include-protocols",
        "exclude-cipher-suites",
        "include-cipher-suites",
    ] {
        cx.unused(c, name, why);
    }
    let handler = c.take("handler");
    match handler.as_ref().map(|h| h.trimmed()) {
        None | Some("org.apache.flume.source.http.JSONHandler") => {
            out.insert("codec", "json");
            cx.unused_prefix(c, "handler.", "the JSON handler has no settings");
        }
        Some("org.apache.flume.sink.solr.morphline.BlobHandler") => {
            out.insert("codec", "raw");
            out.comment(
                "codec",
                "Flume's BlobHandler: the body is one event (its request parameters are not copied into headers)",
            );
            cx.field(c, "handler.maxBlobLength", out, "max_body", Conv::Int);
            cx.unused_prefix(
                c,
                "handler.",
                "no Sluice equivalent for this BlobHandler setting",
            );
        }
        Some(other) => {
            return Err(format!(
                "its handler `{other}` is a Java class: Sluice's http source decodes with a codec (raw, lines, ndjson, json, or a `serde` Wasm plugin)"
            ));
        }
    }
    let why = "a Jetty setting: Sluice's http source is not Jetty";
    for prefix in [
        "QueuedThreadPool.",
        "HttpConfiguration.",
        "SslContextFactory.",
        "ServerConnector.",
    ] {
        cx.unused_prefix(c, prefix, why);
    }
    Ok(())
}
