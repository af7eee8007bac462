//! Cross-component checks: every reference resolves, names are unique, groups are coherent.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Collector,
    model::{Pipeline, RefKind, SelectorConfig},
};

pub(super) fn check(p: &Pipeline, cx: &mut Collector) {
    let declared = |kind: RefKind| -> BTreeSet<&str> {
        p.declared
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.as_str())
            .collect()
    };
    let (channels, sinks, plugins) = (
        declared(RefKind::Channel),
        declared(RefKind::Sink),
        declared(RefKind::Plugin),
    );

    for r in &p.refs {
        let (known, what) = match r.kind {
            RefKind::Channel => (&channels, "channel"),
            RefKind::Sink => (&sinks, "sink"),
            RefKind::Plugin => (&plugins, "plugin"),
        };
        if !known.contains(r.name.as_str()) {
            let hint = if known.is_empty() {
                format!("no {what}s are defined")
            } else {
                format!(
                    "defined {what}s: {}",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                )
            };
            cx.push(
                r.pos,
                Some(&r.component),
                format!("unknown {what} `{}` ({hint})", r.name),
            );
        }
    }

    // Names are unique across sources, channels, sinks and sink groups: metrics and the
    // summary identify components by name alone.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let all = p
        .sources
        .iter()
        .map(|c| ("sources", &c.name, c.pos))
        .chain(p.channels.iter().map(|c| ("channels", &c.name, c.pos)))
        .chain(p.sinks.iter().map(|c| ("sinks", &c.name, c.pos)))
        .chain(
            p.sink_groups
                .iter()
                .map(|c| ("sink_groups", &c.name, c.pos)),
        );
    for (section, name, pos) in all {
        if let Some(first) = seen.insert(name, section) {
            cx.push(
                pos,
                Some(&format!("{section}.{name}")),
                format!("duplicate component name `{name}` (also used in `{first}`)"),
            );
        }
    }

    // A durable channel locks its directory, and a file source's position file is its own:
    // two components on one path could never both work.
    let mut paths: BTreeMap<&std::path::Path, String> = BTreeMap::new();
    let claims = p
        .channels
        .iter()
        .filter_map(|c| {
            let dir = c.spec.storage_dir()?;
            Some(("channels", &c.name, c.pos, "path", dir))
        })
        .chain(p.sources.iter().flat_map(|s| {
            s.spec
                .spec
                .exclusive_paths()
                .into_iter()
                .map(|(field, path)| ("sources", &s.name, s.pos, field, path))
        }));
    for (section, name, pos, field, path) in claims {
        let kind = section.trim_end_matches('s');
        if let Some(first) = paths.insert(path, format!("{kind} `{name}`")) {
            cx.push(
                pos,
                Some(&format!("{section}.{name}")),
                format!("{field} `{}` is already used by {first}", path.display()),
            );
        }
    }

    // A sink's `delivery:` holds on every path into it.
    if p.sinks.iter().any(|k| k.spec.common.delivery.is_some()) {
        let all = crate::guarantee::paths(p);
        for k in &p.sinks {
            let Some(want) = k.spec.common.delivery else {
                continue;
            };
            for path in crate::guarantee::short_of(&all, &k.name, want) {
                cx.push(
                    k.spec.common.delivery_pos,
                    Some(&format!("sinks.{}", k.name)),
                    format!(
                        "delivery: {}: the path {} → {} → {} is {}: {}",
                        want.level(),
                        path.source,
                        path.channel,
                        path.sink,
                        path.level,
                        path.why.join("; ")
                    ),
                );
            }
        }
    }

    for s in &p.sources {
        let component = format!("sources.{}", s.name);
        let c = &s.spec.common;
        if c.batch_size == 0 {
            cx.push(s.pos, Some(&component), "batch_size must be at least 1");
        }
        match &c.selector {
            SelectorConfig::Replicating { optional } => {
                if c.channels.is_empty() {
                    cx.push(
                        s.pos,
                        Some(&component),
                        "missing field `channels` (a list of channel names)",
                    );
                }
                for o in optional {
                    if !c.channels.contains(o) {
                        cx.push(
                            s.pos,
                            Some(&component),
                            format!("optional channel `{o}` is not in this source's `channels`"),
                        );
                    }
                }
            }
            SelectorConfig::Wasm { .. } => {
                if c.channels.is_empty() {
                    cx.push(
                        s.pos,
                        Some(&component),
                        "a wasm selector needs `channels` (the list its routes index into)",
                    );
                }
            }
            SelectorConfig::Multiplexing {
                mapping, default, ..
            } => {
                if mapping.is_empty() && default.is_empty() {
                    cx.push(
                        s.pos,
                        Some(&component),
                        "a multiplexing selector needs `mapping` or `default`",
                    );
                }
            }
        }
    }

    let mut grouped: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &p.sink_groups {
        let component = format!("sink_groups.{}", g.name);
        if g.spec.sinks.is_empty() {
            cx.push(
                g.pos,
                Some(&component),
                "a sink group needs at least one sink",
            );
        }
        let mut group_channel: Option<&str> = None;
        for name in &g.spec.sinks {
            if let Some(other) = grouped.insert(name, &g.name) {
                cx.push(
                    g.pos,
                    Some(&component),
                    format!("sink `{name}` is already in group `{other}`"),
                );
            }
            let Some(sink) = p.sinks.iter().find(|s| &s.name == name) else {
                continue;
            };
            let ch = sink.spec.common.channel.as_str();
            match group_channel {
                None => group_channel = Some(ch),
                Some(first) if first != ch => cx.push(
                    g.pos,
                    Some(&component),
                    format!("all sinks of a group read one channel: `{name}` reads `{ch}`, not `{first}`"),
                ),
                _ => {}
            }
        }
    }

    for s in &p.sinks {
        let component = format!("sinks.{}", s.name);
        let c = &s.spec.common;
        if c.batch_size == 0 {
            cx.push(s.pos, Some(&component), "batch_size must be at least 1");
        }
        if c.retry.max_attempts == 0 {
            cx.push(
                s.pos,
                Some(&component),
                "retry.max_attempts must be at least 1",
            );
        }
        // The pipeline-wide DLQ does not apply to the sinks that drain it.
        if c.dlq.as_ref() == Some(&c.channel) {
            cx.push(
                s.pos,
                Some(&component),
                format!(
                    "the dead-letter channel `{}` cannot be the channel this sink reads",
                    c.channel
                ),
            );
        }
    }
}
