//! A pipeline's topology as a graph — sources, their interceptor chains, channels, sinks and
//! sink groups, with the selector's routing on the edges — for `sluice graph` (DOT and
//! Mermaid text) and the admin server's console (JSON). Built from the configuration alone,
//! so it draws a pipeline before (or without) running it.

use std::{collections::BTreeMap, fmt::Write};

use serde::Serialize;

use crate::config::{InterceptorRef, Pipeline, SelectorConfig, model::BuiltinInterceptor};

/// What a node is in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Source,
    Interceptor,
    Channel,
    Sink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    /// Unique in the graph: `source:in`, `interceptor:in:0`, `channel:c`, `sink:out`.
    pub id: String,
    pub role: Role,
    /// The component's name (an interceptor's: its type or plugin name).
    pub name: String,
    /// Its `type` (`kafka`, `rocksdb`, `timestamp`, `plugin`).
    pub kind: String,
    /// The sink group a sink belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The selector's rule for this channel (`type=a|b`, `default`, `optional`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A dead-letter route, not the normal flow.
    pub dead_letter: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<Edge>,
}

fn channel_id(name: &str) -> String {
    format!("channel:{name}")
}

fn interceptor_name(i: &InterceptorRef) -> (String, String) {
    match i {
        InterceptorRef::Plugin(name) => (name.clone(), "plugin".into()),
        InterceptorRef::Builtin(b) => {
            let kind = match b {
                BuiltinInterceptor::Timestamp { .. } => "timestamp",
                BuiltinInterceptor::Host { .. } => "host",
                BuiltinInterceptor::Static { .. } => "static",
                BuiltinInterceptor::RemoveHeader { .. } => "remove_header",
                BuiltinInterceptor::RegexFilter { .. } => "regex_filter",
                BuiltinInterceptor::RegexExtractor { .. } => "regex_extractor",
                BuiltinInterceptor::Uuid { .. } => "uuid",
                BuiltinInterceptor::SearchReplace { .. } => "search_replace",
                BuiltinInterceptor::Dedup { .. } => "dedup",
            };
            (kind.into(), kind.into())
        }
    }
}

/// The label of each channel a selector writes to, in the order first named.
fn routes(selector: &SelectorConfig, channels: &[String]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut add = |c: &str, label: Option<String>| match out.iter_mut().find(|(n, _)| n == c) {
        Some((_, Some(l))) => {
            if let Some(new) = label {
                l.push_str(", ");
                l.push_str(&new);
            }
        }
        Some((_, l)) => *l = label,
        None => out.push((c.to_owned(), label)),
    };
    match selector {
        SelectorConfig::Replicating { optional } => {
            for c in channels {
                add(c, optional.contains(c).then(|| "optional".to_owned()));
            }
        }
        SelectorConfig::Multiplexing {
            header,
            mapping,
            default,
            optional,
        } => {
            // Values per channel, so one edge says every value that leads there.
            let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (v, cs) in mapping {
                for c in cs {
                    values.entry(c).or_default().push(v);
                }
            }
            let mut optional_values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (v, cs) in optional {
                for c in cs {
                    optional_values.entry(c).or_default().push(v);
                }
            }
            let mut unique: Vec<&String> = Vec::new();
            for c in channels
                .iter()
                .chain(mapping.values().flatten())
                .chain(optional.values().flatten())
                .chain(default)
            {
                if !unique.contains(&c) {
                    unique.push(c);
                }
            }
            for c in unique {
                let mut parts = Vec::new();
                if let Some(vs) = values.get(c.as_str()) {
                    parts.push(format!("{header}={}", vs.join("|")));
                }
                if let Some(vs) = optional_values.get(c.as_str()) {
                    parts.push(format!("{header}={} (optional)", vs.join("|")));
                }
                if default.contains(c) {
                    parts.push("default".into());
                }
                add(c, (!parts.is_empty()).then(|| parts.join(", ")));
            }
        }
        SelectorConfig::Wasm { plugin } => {
            for c in channels {
                add(c, Some(format!("plugin {plugin}")));
            }
        }
    }
    out
}

impl Graph {
    /// The graph of `p`: every component, the flow between them, and the DLQ routes.
    pub fn of(p: &Pipeline) -> Graph {
        let mut g = Graph::default();
        for c in &p.channels {
            g.nodes.push(GraphNode {
                id: channel_id(&c.name),
                role: Role::Channel,
                name: c.name.clone(),
                kind: c.kind.clone(),
                group: None,
            });
        }
        let pipeline_dlq = p.settings.dlq.as_deref();
        for s in &p.sources {
            let id = format!("source:{}", s.name);
            g.nodes.push(GraphNode {
                id: id.clone(),
                role: Role::Source,
                name: s.name.clone(),
                kind: s.kind.clone(),
                group: None,
            });
            let common = &s.spec.common;
            let mut last = id.clone();
            for (n, i) in common.interceptors.iter().enumerate() {
                let (name, kind) = interceptor_name(i);
                let iid = format!("interceptor:{}:{n}", s.name);
                g.nodes.push(GraphNode {
                    id: iid.clone(),
                    role: Role::Interceptor,
                    name,
                    kind,
                    group: None,
                });
                g.edge(&last, &iid, None, false);
                last = iid;
            }
            for (c, label) in routes(&common.selector, &common.channels) {
                g.edge(&last, &channel_id(&c), label, false);
            }
            if let Some(dlq) = common.dlq.as_deref().or(pipeline_dlq) {
                g.edge(&id, &channel_id(dlq), Some("dlq".into()), true);
            }
        }
        let group_of = |sink: &str| {
            p.sink_groups
                .iter()
                .find(|g| g.spec.sinks.iter().any(|s| s == sink))
                .map(|g| g.name.clone())
        };
        for k in &p.sinks {
            let id = format!("sink:{}", k.name);
            g.nodes.push(GraphNode {
                id: id.clone(),
                role: Role::Sink,
                name: k.name.clone(),
                kind: k.kind.clone(),
                group: group_of(&k.name),
            });
            g.edge(&channel_id(&k.spec.common.channel), &id, None, false);
            if let Some(dlq) = k.spec.common.dlq.as_deref().or(pipeline_dlq) {
                g.edge(&id, &channel_id(dlq), Some("dlq".into()), true);
            }
        }
        g
    }

    fn edge(&mut self, from: &str, to: &str, label: Option<String>, dead_letter: bool) {
        self.edges.push(Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            label,
            dead_letter,
        });
    }

    /// Sink groups and their members, in the order the sinks appear.
    fn groups(&self) -> Vec<(&str, Vec<&GraphNode>)> {
        let mut out: Vec<(&str, Vec<&GraphNode>)> = Vec::new();
        for n in &self.nodes {
            if let Some(group) = &n.group {
                match out.iter_mut().find(|(g, _)| g == group) {
                    Some((_, members)) => members.push(n),
                    None => out.push((group, vec![n])),
                }
            }
        }
        out
    }

    /// Graphviz DOT text (`sluice graph p.yaml | dot -Tsvg`).
    pub fn to_dot(&self, title: &str) -> String {
        fn quote(s: &str) -> String {
            let mut q = String::with_capacity(s.len() + 2);
            q.push('"');
            for ch in s.chars() {
                match ch {
                    '"' | '\\' => {
                        q.push('\\');
                        q.push(ch);
                    }
                    '\n' => q.push_str("\\n"),
                    _ => q.push(ch),
                }
            }
            q.push('"');
            q
        }
        let node = |out: &mut String, n: &GraphNode, indent: &str| {
            let shape = match n.role {
                Role::Source => "shape=box",
                Role::Interceptor => "shape=ellipse",
                Role::Channel => "shape=cylinder",
                Role::Sink => "shape=box, style=rounded",
            };
            let _ = writeln!(
                out,
                "{indent}{} [label={}, {shape}];",
                quote(&n.id),
                quote(&format!("{}\n{}", n.name, n.kind))
            );
        };
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(title));
        out.push_str("  rankdir=LR;\n");
        for n in self.nodes.iter().filter(|n| n.group.is_none()) {
            node(&mut out, n, "  ");
        }
        for (i, (group, members)) in self.groups().into_iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_{i} {{");
            let _ = writeln!(out, "    label={};", quote(&format!("group {group}")));
            for n in members {
                node(&mut out, n, "    ");
            }
            out.push_str("  }\n");
        }
        for e in &self.edges {
            let mut attrs = Vec::new();
            if let Some(l) = &e.label {
                attrs.push(format!("label={}", quote(l)));
            }
            if e.dead_letter {
                attrs.push("style=dashed".into());
            }
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            };
            let _ = writeln!(out, "  {} -> {}{attrs};", quote(&e.from), quote(&e.to));
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart text (renders in GitHub and GitLab Markdown).
    pub fn to_mermaid(&self) -> String {
        // Mermaid ids must be plain words: nodes are numbered, names go in labels.
        let ids: BTreeMap<&str, String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), format!("n{i}")))
            .collect();
        let text = |s: &str| s.replace('"', "#quot;");
        let node = |out: &mut String, n: &GraphNode, indent: &str| {
            let label = format!("{}<br/><i>{}</i>", text(&n.name), text(&n.kind));
            let id = &ids[n.id.as_str()];
            let _ = match n.role {
                Role::Source => writeln!(out, "{indent}{id}[\"{label}\"]"),
                Role::Interceptor => writeln!(out, "{indent}{id}([\"{label}\"])"),
                Role::Channel => writeln!(out, "{indent}{id}[(\"{label}\")]"),
                Role::Sink => writeln!(out, "{indent}{id}(\"{label}\")"),
            };
        };
        let mut out = String::from("flowchart LR\n");
        for n in self.nodes.iter().filter(|n| n.group.is_none()) {
            node(&mut out, n, "  ");
        }
        for (i, (group, members)) in self.groups().into_iter().enumerate() {
            let _ = writeln!(out, "  subgraph g{i} [\"group {}\"]", text(group));
            for n in members {
                node(&mut out, n, "    ");
            }
            out.push_str("  end\n");
        }
        for e in &self.edges {
            // An edge to a channel that does not exist (an invalid file) is left out.
            let (Some(from), Some(to)) = (ids.get(e.from.as_str()), ids.get(e.to.as_str())) else {
                continue;
            };
            let arrow = if e.dead_letter { "-.->" } else { "-->" };
            match &e.label {
                Some(l) => {
                    let _ = writeln!(out, "  {from} {arrow}|\"{}\"| {to}", text(l));
                }
                None => {
                    let _ = writeln!(out, "  {from} {arrow} {to}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, registry::Registry};

    fn pipeline(yaml: &str) -> Pipeline {
        config::load_str(
            std::path::Path::new("p.yaml"),
            yaml,
            &|_| None,
            &Registry::builtin(),
        )
        .expect("valid pipeline")
    }

    const FANOUT: &str = "
dlq: dead
channels:
  a: { type: memory }
  b: { type: memory }
  dead: { type: memory }
sources:
  in:
    type: generator
    interceptors: [{ type: timestamp }, { type: static, key: k, value: v }]
    selector: { type: multiplexing, header: kind, mapping: { x: [a], y: [a, b] }, default: [b] }
sinks:
  one: { type: null, channel: a }
  two: { type: logger, channel: b }
  three: { type: null, channel: b }
  bin: { type: null, channel: dead }
sink_groups:
  g: { type: failover, sinks: [two, three] }
";

    #[test]
    fn the_flow_goes_through_the_interceptors_and_the_selector_labels_its_edges() {
        let g = Graph::of(&pipeline(FANOUT));
        let e = |from: &str, to: &str| {
            g.edges
                .iter()
                .find(|e| e.from == from && e.to == to)
                .unwrap_or_else(|| panic!("no edge {from} -> {to}: {:?}", g.edges))
        };
        e("source:in", "interceptor:in:0");
        e("interceptor:in:0", "interceptor:in:1");
        assert_eq!(
            e("interceptor:in:1", "channel:a").label.as_deref(),
            Some("kind=x|y")
        );
        assert_eq!(
            e("interceptor:in:1", "channel:b").label.as_deref(),
            Some("kind=y, default")
        );
        assert!(e("source:in", "channel:dead").dead_letter);
        assert!(e("sink:two", "channel:dead").dead_letter);
        assert!(!e("channel:a", "sink:one").dead_letter);
        let two = g.nodes.iter().find(|n| n.id == "sink:two").unwrap();
        assert_eq!(
            (two.kind.as_str(), two.group.as_deref()),
            ("logger", Some("g"))
        );
        let ts = g.nodes.iter().find(|n| n.id == "interceptor:in:0").unwrap();
        assert_eq!(ts.kind, "timestamp");
    }

    #[test]
    fn dot_and_mermaid_name_every_component_and_group() {
        let g = Graph::of(&pipeline(FANOUT));
        let dot = g.to_dot("p");
        assert!(dot.starts_with("digraph \"p\" {"), "{dot}");
        assert!(dot.contains("subgraph cluster_0"), "{dot}");
        assert!(
            dot.contains("\"interceptor:in:1\" -> \"channel:a\" [label=\"kind=x|y\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"sink:bin\" -> \"channel:dead\" [label=\"dlq\", style=dashed];"),
            "{dot}"
        );
        let m = g.to_mermaid();
        assert!(m.starts_with("flowchart LR\n"), "{m}");
        for name in ["in", "a", "b", "dead", "one", "two", "three", "bin"] {
            assert!(
                m.contains(&format!("\"{name}<br/>")),
                "{name} missing in {m}"
            );
        }
        assert!(m.contains("subgraph g0 [\"group g\"]"), "{m}");
        assert!(m.contains("-.->|\"dlq\"|"), "{m}");
        assert_eq!(m.matches("-->").count(), 2 + 2 + 4, "{m}");
    }
}
