//! Flume channels: `memory` → `memory`, `file` → `rocksdb`, `SPILLABLEMEMORY` → `spillable`
//! (or `memory` / `rocksdb` when one of its tiers is turned off), the Kafka channel → `kafka`.

use super::{
    agent::Component,
    kafka,
    translate::{Conv, Cx, NO_TYPE, Verdict, custom_class},
    yaml::{Map, Value},
};

/// Why `transactionCapacity` is not carried over (memory, file and spillable channels).
pub(super) const WHY_TRANSACTION_CAPACITY: &str = "Sluice channels have no transaction capacity: a source's and a sink's `batch_size` bound their transactions";
const WHY_KEEP_ALIVE: &str =
    "a put into a full Sluice channel waits for room without a time limit (backpressure)";
const WHY_BYTE_BUFFER: &str =
    "Sluice's `max_bytes` counts headers and bodies exactly: no allowance is needed";
const WHY_CHECKPOINT: &str =
    "RocksDB keeps its own write-ahead log: Sluice's durable channels have no separate checkpoint";
const WHY_ENCRYPTION: &str = "Sluice's durable channels do not encrypt their files: the events would be stored in clear (use an encrypted filesystem)";

pub(super) fn translate(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    let ty = c.type_name().to_owned();
    match ty.to_ascii_lowercase().as_str() {
        "memory" | "org.apache.flume.channel.memorychannel" => memory(c, cx, out),
        "file" | "org.apache.flume.channel.file.filechannel" => file(c, cx, out),
        "spillablememory" | "org.apache.flume.channel.spillablememorychannel" => {
            spillable(c, cx, out)
        }
        "org.apache.flume.channel.kafka.kafkachannel" => kafka::channel(c, cx, out),
        "jdbc" | "org.apache.flume.channel.jdbc.jdbcchannel" => {
            Err("Sluice has no JDBC channel: `rocksdb` is its durable channel on local disk".into())
        }
        "org.apache.flume.channel.pseudotxnmemorychannel" => {
            Err("Sluice has no channel without transactions: `memory` is the closest".into())
        }
        "" => Err(NO_TYPE.into()),
        _ => Err(custom_class(&ty, "channel")),
    }
}

fn memory(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "memory");
    cx.field(c, "capacity", out, "capacity", Conv::Int);
    byte_capacity(c, cx, out);
    cx.unused(c, "byteCapacityBufferPercentage", WHY_BYTE_BUFFER);
    cx.unused(c, "transactionCapacity", WHY_TRANSACTION_CAPACITY);
    cx.unused(c, "keep-alive", WHY_KEEP_ALIVE);
    Ok(())
}

/// `byteCapacity` → `max_bytes` (0 is Flume's "no limit" of about 200 GB).
fn byte_capacity(c: &mut Component, cx: &mut Cx, out: &mut Map) {
    let Some(p) = c.take("byteCapacity") else {
        return;
    };
    match cx.value(&p, Conv::Int) {
        Some(Value::Int(0)) | None => {}
        Some(v) => {
            out.insert("max_bytes", v);
            out.comment(
                "max_bytes",
                "Flume counted event bodies only; Sluice counts headers too",
            );
        }
    }
}

fn file(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "rocksdb");
    disk(c, cx, out, "path");
    cx.field(c, "capacity", out, "capacity", Conv::Int);
    fsync(c, cx, out);
    file_channel_unused(c, cx);
    cx.unused(c, "keep-alive", WHY_KEEP_ALIVE);
    Ok(())
}

/// Flume's spillable channel keeps `memoryCapacity` events in memory and overflows into an
/// embedded file channel of `overflowCapacity`; a 0 turns a tier off.
fn spillable(c: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    let memory = c.take("memoryCapacity");
    let overflow = c.take("overflowCapacity");
    let memory_capacity = match &memory {
        Some(p) => cx.value(p, Conv::Int),
        None => Some(Value::Int(10_000)),
    };
    let overflow_capacity = match &overflow {
        Some(p) => cx.value(p, Conv::Int),
        None => Some(Value::Int(100_000_000)),
    };
    let overflow_off = overflow_capacity == Some(Value::Int(0));
    let memory_off = memory_capacity == Some(Value::Int(0));
    if overflow_off {
        out.insert("type", "memory");
        out.comment(
            "type",
            "Flume's spillable channel with overflowCapacity 0: memory only",
        );
        if let Some(v) = memory_capacity {
            out.insert("capacity", v);
        }
        byte_capacity(c, cx, out);
        let why = "the overflow tier is off (overflowCapacity = 0)";
        for name in ["checkpointDir", "dataDirs", "backupCheckpointDir"] {
            cx.unused(c, name, why);
        }
    } else if memory_off {
        out.insert("type", "rocksdb");
        out.comment(
            "type",
            "Flume's spillable channel with memoryCapacity 0: disk only",
        );
        disk(c, cx, out, "path");
        if let Some(v) = overflow_capacity {
            out.insert("capacity", v);
        }
        fsync(c, cx, out);
        cx.unused(
            c,
            "byteCapacity",
            "the memory tier is off (memoryCapacity = 0)",
        );
    } else {
        out.insert("type", "spillable");
        if let Some(v) = memory_capacity {
            out.insert("memory_capacity", v);
        }
        disk(c, cx, out, "path");
        if let Some(v) = overflow_capacity {
            out.insert("disk_capacity", v);
        }
        fsync(c, cx, out);
        cx.unused(
            c,
            "byteCapacity",
            "Flume's byteCapacity bounds the memory tier; Sluice's `max_bytes` bounds the disk tier",
        );
    }
    let why = "Sluice's spillable channel spills as soon as its memory tier is full, and drains the disk tier before memory takes events again";
    cx.unused(c, "overflowTimeout", why);
    cx.unused(c, "overflowDeactivationThreshold", why);
    cx.unused(
        c,
        "avgEventSize",
        "Sluice counts events and bytes exactly: no estimate is needed",
    );
    cx.unused(c, "byteCapacityBufferPercentage", WHY_BYTE_BUFFER);
    cx.unused(c, "keep-alive", WHY_KEEP_ALIVE);
    file_channel_unused(c, cx);
    Ok(())
}

/// The directory of a durable channel (field `field`), derived from Flume's `dataDirs`: a new
/// directory beside Flume's, since the formats differ.
fn disk(c: &mut Component, cx: &mut Cx, out: &mut Map, field: &str) {
    let dirs: Option<String> = c.take("dataDirs").and_then(|p| cx.text(&p));
    let list: Vec<String> = dirs
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(home)
        .collect();
    let (parent, from) = match list.first() {
        Some(first) => (parent_dir(first), format!("`{first}`")),
        None => (
            Some("${HOME}/.flume/file-channel".to_owned()),
            "~/.flume/file-channel/data (Flume's default)".to_owned(),
        ),
    };
    let path = match parent {
        Some(dir) => format!("{dir}/sluice-{}", c.name),
        None => format!("sluice-{}", c.name),
    };
    let mut note = format!(
        "Flume kept this channel's data in {from}, in a format Sluice does not read: drain the Flume channel before switching"
    );
    if list.len() > 1 {
        note.push_str("; Sluice keeps a channel in one directory");
    }
    out.insert(field, path);
    out.comment(field, note);
}

/// `fsyncPerTransaction = false` (with `fsyncInterval` seconds) → `fsync: { interval }`.
fn fsync(c: &mut Component, cx: &mut Cx, out: &mut Map) {
    let per_txn = c.take("fsyncPerTransaction");
    let interval = c.take("fsyncInterval");
    let Some(p) = per_txn else {
        if let Some(i) = interval {
            cx.skip_prop(&i, "only used with fsyncPerTransaction = false");
        }
        return;
    };
    if cx.boolean(&p) != Some(false) {
        if let Some(i) = interval {
            cx.skip_prop(&i, "only used with fsyncPerTransaction = false");
        }
        return;
    }
    let seconds = match &interval {
        Some(i) => match cx.value(i, Conv::Int) {
            Some(Value::Int(n)) => Value::Str(format!("{n}s")),
            Some(Value::Str(s)) => Value::Str(format!("{s}s")),
            _ => return,
        },
        None => Value::Str("5s".to_owned()),
    };
    let mut f = Map::new();
    f.insert("interval", seconds);
    out.insert("fsync", f);
}

/// File-channel settings with no Sluice counterpart.
fn file_channel_unused(c: &mut Component, cx: &mut Cx) {
    for name in [
        "checkpointDir",
        "backupCheckpointDir",
        "useDualCheckpoints",
        "compressBackupCheckpoint",
        "checkpointInterval",
        "checkpointOnClose",
    ] {
        cx.unused(c, name, WHY_CHECKPOINT);
    }
    cx.unused(c, "transactionCapacity", WHY_TRANSACTION_CAPACITY);
    cx.unused(c, "maxFileSize", "RocksDB sizes its own files");
    cx.unused(
        c,
        "minimumRequiredSpace",
        "Sluice keeps a 4 MiB reserve file, refuses puts while the disk is full and resumes when space returns",
    );
    for name in ["use-log-replay-v1", "use-fast-replay"] {
        cx.unused(c, name, "replay is RocksDB's own");
    }
    cx.unused_prefix(c, "encryption.", WHY_ENCRYPTION);
}

/// `~/x` → `${HOME}/x` (Sluice reads `${HOME}` from the environment; it does not expand `~`).
pub(super) fn home(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("${{HOME}}/{rest}"),
        None if path == "~" => "${HOME}".to_owned(),
        None => path.to_owned(),
    }
}

/// The directory holding `path` (`None` for a bare name).
pub(super) fn parent_dir(path: &str) -> Option<String> {
    path.trim_end_matches('/')
        .rsplit_once('/')
        .map(|(dir, _)| dir.to_owned())
}
