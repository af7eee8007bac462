//! Reads a pipeline file's [`Node`] tree into a [`Pipeline`], component by component.
//!
//! Each component is a mapping with a `type` key plus fields; the registry entry of its type
//! reads the type's own fields, this module the fields every component of its kind has and
//! the sections that are the engine's own (plugins, sink groups, settings). References to
//! other components are collected with their positions for [`super::validate`].

use super::{
    Collector,
    model::*,
    node::{Node, NodeKind, Pos},
    units::HumanDuration,
};
use crate::registry::{ReadCx, Registry, Table};

const TOP_LEVEL: &[&str] = &[
    "plugins",
    "channels",
    "sources",
    "sinks",
    "sink_groups",
    "admin",
    "dlq",
    "shutdown_timeout",
];

pub(super) fn read_pipeline(root: &Node, cx: &mut Collector, registry: &Registry) -> Pipeline {
    let mut p = Pipeline {
        file: cx.file.clone(),
        ..Pipeline::default()
    };
    if !matches!(root.kind, NodeKind::Map(_)) {
        cx.push(
            root.pos,
            None,
            format!("a pipeline file is a mapping, found {}", root.kind_name()),
        );
        return p;
    }
    for (k, _) in root.entries() {
        match k.as_str() {
            Some(key) if TOP_LEVEL.contains(&key) => {}
            other => cx.push(
                k.pos,
                None,
                format!(
                    "unknown top-level key `{}`, expected one of: {}",
                    other.unwrap_or("?"),
                    TOP_LEVEL.join(", ")
                ),
            ),
        }
    }
    for (section_key, kind) in [
        ("plugins", RefKind::Plugin),
        ("channels", RefKind::Channel),
        ("sinks", RefKind::Sink),
    ] {
        if let Some(n) = root.get(section_key) {
            p.declared.extend(
                n.entries()
                    .iter()
                    .filter_map(|(k, _)| Some((kind, k.as_str()?.to_owned()))),
            );
        }
    }
    let plugins = section(root, "plugins", cx);
    match (&registry.plugins, plugins.first()) {
        (None, Some((_, pos, _))) => cx.push(
            *pos,
            None,
            format!(
                "plugins need the `wasm` feature; this build has: {}",
                registry.features_list()
            ),
        ),
        (None, None) => {}
        (Some(support), _) => {
            for (name, pos, node) in plugins {
                let component = format!("plugins.{name}");
                if let Some(spec) = cx.read::<PluginConfig>(node, Some(&component)) {
                    let at = node.get("path").map_or(pos, |n| n.pos);
                    if let Err(e) = (support.check_path)(&spec.path) {
                        cx.push(at, Some(&component), e);
                    }
                    p.plugins.push(Named {
                        name,
                        pos,
                        kind: "plugin".into(),
                        spec,
                    });
                }
            }
        }
    }
    for (name, pos, node) in section(root, "channels", cx) {
        if let Some(spec) = read_channel(&name, pos, node, cx, &mut p.refs, registry) {
            p.channels.push(named(name, pos, node, spec));
        }
    }
    for (name, pos, node) in section(root, "sources", cx) {
        if let Some(spec) = read_source(&name, pos, node, cx, &mut p.refs, registry) {
            p.sources.push(named(name, pos, node, spec));
        }
    }
    for (name, pos, node) in section(root, "sinks", cx) {
        if let Some(spec) = read_sink(&name, pos, node, cx, &mut p.refs, registry) {
            p.sinks.push(named(name, pos, node, spec));
        }
    }
    for (name, pos, node) in section(root, "sink_groups", cx) {
        if let Some(spec) = read_sink_group(&name, node, cx, &mut p.refs) {
            p.sink_groups.push(named(name, pos, node, spec));
        }
    }
    if let Some(node) = root.get("admin") {
        p.admin = cx
            .read::<AdminConfig>(node, Some("admin"))
            .and_then(|a| admin_token(a, node, cx));
    }
    if let Some(node) = root.get("dlq") {
        if let Some(name) = cx.read::<String>(node, Some("dlq")) {
            push_ref(&mut p.refs, RefKind::Channel, &name, node.pos, "dlq");
            p.settings.dlq = Some(name);
        }
    }
    if let Some(node) = root.get("shutdown_timeout") {
        if let Some(d) = cx.read::<HumanDuration>(node, Some("shutdown_timeout")) {
            p.settings.shutdown_timeout = d.0;
        }
    }
    p.fingerprints = fingerprints(root);
    p
}

/// A source's settings in two fingerprints: where its events go (`channels`, `selector`,
/// `interceptors`, `dlq`: a live reload swaps these between batches) and the rest (which
/// needs the source itself rebuilt).
fn source_parts(node: &Node) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    const ROUTE: &[&str] = &["channels", "selector", "interceptors", "dlq", "event_id"];
    let (mut route, mut body) = (
        std::hash::DefaultHasher::new(),
        std::hash::DefaultHasher::new(),
    );
    for (k, v) in node.entries() {
        let h = if k.as_str().is_some_and(|k| ROUTE.contains(&k)) {
            &mut route
        } else {
            &mut body
        };
        k.fingerprint().hash(h);
        v.fingerprint().hash(h);
    }
    (route.finish(), body.finish())
}

/// Each component's fingerprint under `<section>.<name>`, each other top-level key's under
/// its name.
fn fingerprints(root: &Node) -> std::collections::BTreeMap<String, u64> {
    const SECTIONS: &[&str] = &["plugins", "channels", "sources", "sinks", "sink_groups"];
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in root.entries() {
        let Some(key) = k.as_str() else { continue };
        match &v.kind {
            NodeKind::Map(entries) if SECTIONS.contains(&key) => {
                for (name, node) in entries {
                    if let Some(name) = name.as_str() {
                        out.insert(format!("{key}.{name}"), node.fingerprint());
                        if key == "sources" {
                            let (route, body) = source_parts(node);
                            out.insert(format!("sources.{name}#route"), route);
                            out.insert(format!("sources.{name}#body"), body);
                        }
                    }
                }
            }
            _ => {
                out.insert(key.to_owned(), v.fingerprint());
            }
        }
    }
    out
}

/// The named entries of a top-level section, each a mapping.
fn section<'a>(root: &'a Node, key: &str, cx: &mut Collector) -> Vec<(String, Pos, &'a Node)> {
    let Some(node) = root.get(key) else {
        return Vec::new();
    };
    match &node.kind {
        NodeKind::Null => Vec::new(),
        NodeKind::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| {
                let Some(name) = k.as_str() else {
                    cx.push(k.pos, None, format!("{key}: component names are strings"));
                    return None;
                };
                if !matches!(v.kind, NodeKind::Map(_)) {
                    cx.push(
                        v.pos,
                        Some(&format!("{key}.{name}")),
                        format!("expected a mapping of settings, found {}", v.kind_name()),
                    );
                    return None;
                }
                Some((name.to_owned(), k.pos, v))
            })
            .collect(),
        _ => {
            cx.push(
                node.pos,
                None,
                format!("`{key}` must be a mapping of name → settings"),
            );
            Vec::new()
        }
    }
}

/// A component read from `node`, with its `type` (already checked) as its kind.
fn named<T>(name: String, pos: Pos, node: &Node, spec: T) -> Named<T> {
    let kind = match node.get("type").map(|t| &t.kind) {
        Some(NodeKind::Null) => "null".to_owned(),
        _ => node
            .get("type")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    Named {
        name,
        pos,
        kind,
        spec,
    }
}

/// Reads the `type` key against `known` names, reporting a missing or unknown one.
fn component_type<'n>(
    node: &'n Node,
    component: &str,
    known: &[&'static str],
    cx: &mut Collector,
) -> Option<&'n str> {
    let Some(t) = node.get("type") else {
        cx.push(
            node.pos,
            Some(component),
            format!("missing field `type` (one of: {})", known.join(", ")),
        );
        return None;
    };
    // `type: null` is YAML's null scalar, but here it names the null sink.
    let name = match &t.kind {
        NodeKind::Null => Some("null"),
        _ => t.as_str(),
    };
    match name {
        Some(s) if known.contains(&s) => Some(s),
        _ => {
            let found = t
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| t.kind_name().into());
            cx.push(
                t.pos,
                Some(component),
                format!(
                    "unknown type `{found}`, expected one of: {}",
                    known.join(", ")
                ),
            );
            None
        }
    }
}

/// Reads a component's `type` and hands its own settings (`body`) to the type's registry
/// entry; a type this build left out is refused naming the feature it needs.
#[allow(clippy::too_many_arguments)]
fn read_typed<S: ?Sized>(
    table: &Table<S>,
    kind: &str,
    registry: &Registry,
    component: &str,
    pos: Pos,
    node: &Node,
    body: Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<std::sync::Arc<S>> {
    let ty = component_type(node, component, &table.names(), cx)?;
    if let Some(missing) = table.missing(ty) {
        let at = node.get("type").map_or(pos, |t| t.pos);
        cx.push(at, Some(component), registry.feature_message(kind, missing));
        return None;
    }
    let entry = table.get(ty)?;
    let mut rcx = ReadCx {
        collector: cx,
        refs,
        component,
        pos,
        body,
    };
    (entry.read)(&mut rcx)
}

fn push_ref(refs: &mut Vec<Reference>, kind: RefKind, name: &str, pos: Pos, component: &str) {
    refs.push(Reference {
        kind,
        name: name.to_owned(),
        pos,
        component: component.to_owned(),
    });
}

/// Records a reference for each string in the list under `key`.
fn list_refs(node: &Node, key: &str, kind: RefKind, component: &str, refs: &mut Vec<Reference>) {
    if let Some(NodeKind::Seq(items)) = node.get(key).map(|n| &n.kind) {
        for item in items {
            if let Some(name) = item.as_str() {
                push_ref(refs, kind, name, item.pos, component);
            }
        }
    }
}

fn read_channel(
    name: &str,
    pos: Pos,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
    registry: &Registry,
) -> Option<std::sync::Arc<dyn crate::registry::ChannelSpec>> {
    let component = format!("channels.{name}");
    let body = node.filter_keys(|k| k != "type");
    read_typed(
        &registry.channels,
        "channels",
        registry,
        &component,
        pos,
        node,
        body,
        cx,
        refs,
    )
}

const SOURCE_COMMON: &[&str] = &[
    "channels",
    "selector",
    "interceptors",
    "dlq",
    "batch_size",
    "event_id",
];

fn read_source(
    name: &str,
    pos: Pos,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
    registry: &Registry,
) -> Option<SourceConfig> {
    let component = format!("sources.{name}");
    let common_node = node.filter_keys(|k| SOURCE_COMMON.contains(&k) && k != "interceptors");
    let common: Option<SourceCommon> = cx.read(&common_node, Some(&component));
    let interceptors = read_interceptors(node.get("interceptors"), &component, cx, refs);
    list_refs(node, "channels", RefKind::Channel, &component, refs);
    if let Some(dlq) = node.get("dlq").filter(|d| d.as_str().is_some()) {
        push_ref(
            refs,
            RefKind::Channel,
            dlq.as_str().unwrap_or_default(),
            dlq.pos,
            &component,
        );
    }
    if let Some(sel) = node.get("selector") {
        selector_refs(sel, &component, refs);
    }
    let body = node.filter_keys(|k| k != "type" && !SOURCE_COMMON.contains(&k));
    let spec = read_typed(
        &registry.sources,
        "sources",
        registry,
        &component,
        pos,
        node,
        body,
        cx,
        refs,
    )?;
    let mut common = common?;
    common.interceptors = interceptors?;
    Some(SourceConfig { common, spec })
}

fn selector_refs(sel: &Node, component: &str, refs: &mut Vec<Reference>) {
    if let Some(p) = sel.get("plugin").filter(|p| p.as_str().is_some()) {
        push_ref(
            refs,
            RefKind::Plugin,
            p.as_str().unwrap_or_default(),
            p.pos,
            component,
        );
    }
    list_refs(sel, "optional", RefKind::Channel, component, refs);
    list_refs(sel, "default", RefKind::Channel, component, refs);
    for key in ["mapping", "optional"] {
        if let Some(map) = sel.get(key) {
            for (_, v) in map.entries() {
                if let NodeKind::Seq(items) = &v.kind {
                    for item in items {
                        if let Some(n) = item.as_str() {
                            push_ref(refs, RefKind::Channel, n, item.pos, component);
                        }
                    }
                }
            }
        }
    }
}

fn read_interceptors(
    node: Option<&Node>,
    component: &str,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<Vec<InterceptorRef>> {
    let Some(node) = node else {
        return Some(Vec::new());
    };
    let NodeKind::Seq(items) = &node.kind else {
        cx.push(node.pos, Some(component), "`interceptors` must be a list");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match &item.kind {
            NodeKind::Str(plugin) => {
                push_ref(refs, RefKind::Plugin, plugin, item.pos, component);
                out.push(InterceptorRef::Plugin(plugin.clone()));
            }
            NodeKind::Map(_) => {
                const KNOWN: &[&str] = &[
                    "timestamp",
                    "host",
                    "static",
                    "remove_header",
                    "regex_filter",
                    "regex_extractor",
                    "uuid",
                    "search_replace",
                    "dedup",
                ];
                let Some(ty) = component_type(item, component, KNOWN, cx) else {
                    ok = false;
                    continue;
                };
                // Re-shape `{type: x, a: 1}` into the externally tagged `{x: {a: 1}}`.
                let body = item.filter_keys(|k| k != "type");
                let tagged = Node {
                    pos: item.pos,
                    kind: NodeKind::Map(vec![(
                        Node {
                            pos: item.pos,
                            kind: NodeKind::Str(ty.to_owned()),
                        },
                        body,
                    )]),
                };
                match cx.read::<BuiltinInterceptor>(&tagged, Some(component)) {
                    Some(b) => out.push(InterceptorRef::Builtin(b)),
                    None => ok = false,
                }
            }
            _ => {
                cx.push(
                    item.pos,
                    Some(component),
                    "an interceptor is a plugin name or a mapping with `type`",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

const SINK_COMMON: &[&str] = &["channel", "dlq", "batch_size", "retry", "delivery"];

fn read_sink(
    name: &str,
    pos: Pos,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
    registry: &Registry,
) -> Option<SinkConfig> {
    let component = format!("sinks.{name}");
    let common: Option<SinkCommon> = cx.read(
        &node.filter_keys(|k| SINK_COMMON.contains(&k)),
        Some(&component),
    );
    for key in ["channel", "dlq"] {
        if let Some(n) = node.get(key).filter(|n| n.as_str().is_some()) {
            push_ref(
                refs,
                RefKind::Channel,
                n.as_str().unwrap_or_default(),
                n.pos,
                &component,
            );
        }
    }
    let body = node.filter_keys(|k| k != "type" && !SINK_COMMON.contains(&k));
    let spec = read_typed(
        &registry.sinks,
        "sinks",
        registry,
        &component,
        pos,
        node,
        body,
        cx,
        refs,
    )?;
    let mut common = common?;
    common.delivery_pos = node.get("delivery").map_or(pos, |n| n.pos);
    Some(SinkConfig { common, spec })
}

fn read_sink_group(
    name: &str,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<SinkGroupConfig> {
    let component = format!("sink_groups.{name}");
    let ty = component_type(node, &component, &["failover", "load_balance"], cx);
    let common: Option<SinkGroupCommon> =
        cx.read(&node.filter_keys(|k| k == "sinks"), Some(&component));
    list_refs(node, "sinks", RefKind::Sink, &component, refs);
    if let Some(prio) = node.get("priorities") {
        for (k, _) in prio.entries() {
            if let Some(n) = k.as_str() {
                push_ref(refs, RefKind::Sink, n, k.pos, &component);
            }
        }
    }
    let body = node.filter_keys(|k| k != "type" && k != "sinks");
    let kind = match ty? {
        "failover" => SinkGroupKind::Failover(cx.read(&body, Some(&component))?),
        "load_balance" => SinkGroupKind::LoadBalance(cx.read(&body, Some(&component))?),
        _ => return None,
    };
    Some(SinkGroupConfig {
        sinks: common?.sinks,
        kind,
    })
}

/// Reads the admin token from its environment variable, and refuses an admin server that
/// other hosts can reach without one: `/plugins` shows plugin state and its reload endpoint
/// changes what runs.
fn admin_token(mut a: AdminConfig, node: &Node, cx: &mut Collector) -> Option<AdminConfig> {
    let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
    match &a.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.is_empty() => a.token = Some(super::secret::Secret::new(t)),
            _ => {
                cx.push(
                    at("token_env"),
                    Some("admin"),
                    format!("`token_env`: the environment variable {var} is not set (or empty)"),
                );
                return None;
            }
        },
        None if !a.listen.ip().is_loopback() => {
            cx.push(
                at("listen"),
                Some("admin"),
                format!(
                    "`listen`: {} is reachable from other hosts; set `token_env` to an \
                     environment variable holding a bearer token, or listen on a loopback \
                     address",
                    a.listen
                ),
            );
            return None;
        }
        None => {}
    }
    Some(a)
}
