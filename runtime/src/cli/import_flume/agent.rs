//! One agent's components, gathered from its properties: `a1.sources = r1 r2` lists them and
//! `a1.sources.r1.<property>` configures them. Each [`Component`] hands its properties out
//! one by one as the translation uses them, so whatever is left at the end is known not to
//! have been carried over.

use std::collections::{HashMap, HashSet};

use super::{properties::Property, translate::Cx};

/// The four kinds of component an agent lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Channel,
    Source,
    Sink,
    SinkGroup,
}

impl Kind {
    /// In the order Sluice's file is written (and names are given out).
    pub(super) const ALL: [Kind; 4] = [Kind::Channel, Kind::Source, Kind::Sink, Kind::SinkGroup];

    /// The list key under the agent (`a1.sources`), also the prefix of the components' keys.
    pub(super) fn section(self) -> &'static str {
        match self {
            Kind::Channel => "channels",
            Kind::Source => "sources",
            Kind::Sink => "sinks",
            Kind::SinkGroup => "sinkgroups",
        }
    }

    pub(super) fn noun(self) -> &'static str {
        match self {
            Kind::Channel => "channel",
            Kind::Source => "source",
            Kind::Sink => "sink",
            Kind::SinkGroup => "sink group",
        }
    }

    fn from_section(section: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.section() == section)
    }
}

/// A property: its whole key as written, its value and the line it is on.
#[derive(Debug, Clone)]
pub(super) struct Prop {
    pub key: String,
    pub value: String,
    pub line: usize,
}

impl Prop {
    /// The value without surrounding blanks (Flume trims the values it interprets).
    pub(super) fn trimmed(&self) -> &str {
        self.value.trim()
    }
}

/// A component (or a part of one: an interceptor, a serializer) and the properties not yet
/// translated.
#[derive(Debug)]
pub(super) struct Component {
    pub name: String,
    /// The keys' common prefix, with its trailing dot (`a1.sources.r1.`).
    pub prefix: String,
    /// Its `type` property.
    pub ty: Option<Prop>,
    /// The line of the list that names it.
    pub listed_at: usize,
    /// Property name (the key after `prefix`) and property, in file order.
    props: Vec<(String, Prop)>,
}

impl Component {
    fn new(name: &str, prefix: String, listed_at: usize) -> Self {
        Component {
            name: name.to_owned(),
            prefix,
            ty: None,
            listed_at,
            props: Vec::new(),
        }
    }

    /// The line to point at for the whole component: its `type`, else where it is listed.
    pub(super) fn line(&self) -> usize {
        self.ty.as_ref().map_or(self.listed_at, |t| t.line)
    }

    /// The key to name the whole component by: its `type` key, else its prefix.
    pub(super) fn key(&self) -> String {
        match &self.ty {
            Some(t) => t.key.clone(),
            None => self.prefix.trim_end_matches('.').to_owned(),
        }
    }

    /// The `type` as written, trimmed (empty when there is none).
    pub(super) fn type_name(&self) -> &str {
        self.ty.as_ref().map_or("", |t| t.trimmed())
    }

    /// The whole key of one of its properties.
    pub(super) fn full_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Takes a property out.
    pub(super) fn take(&mut self, name: &str) -> Option<Prop> {
        let i = self.props.iter().position(|(k, _)| k == name)?;
        Some(self.props.remove(i).1)
    }

    /// Looks at a property, leaving it in.
    pub(super) fn peek(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|(k, _)| k == name).map(|(_, p)| p)
    }

    /// Looks at every property under `prefix` (with the rest of its name), leaving them in.
    pub(super) fn peek_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Prop)> + 'a {
        self.props
            .iter()
            .filter_map(move |(k, p)| Some((k.strip_prefix(prefix)?, p)))
    }

    /// Takes every property under `prefix`, with the rest of its name, in file order.
    pub(super) fn take_prefix(&mut self, prefix: &str) -> Vec<(String, Prop)> {
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        for (k, p) in std::mem::take(&mut self.props) {
            match k.strip_prefix(prefix) {
                Some(rest) => taken.push((rest.to_owned(), p)),
                None => kept.push((k, p)),
            }
        }
        self.props = kept;
        taken
    }

    /// Takes the properties under `prefix` as a part of its own (`interceptors.i1.` → the
    /// interceptor `i1`), named `name`, listed on `listed_at`.
    pub(super) fn split(&mut self, name: &str, prefix: &str, listed_at: usize) -> Component {
        let mut part = Component::new(name, format!("{}{prefix}", self.prefix), listed_at);
        part.props = self.take_prefix(prefix);
        part.ty = part.take("type").filter(|t| !t.trimmed().is_empty());
        part
    }

    /// Takes whatever is left.
    pub(super) fn drain(&mut self) -> Vec<(String, Prop)> {
        std::mem::take(&mut self.props)
    }
}

/// The components of one agent, each kind in the order of its list.
#[derive(Debug, Default)]
pub(super) struct Agent {
    pub channels: Vec<Component>,
    pub sources: Vec<Component>,
    pub sinks: Vec<Component>,
    pub groups: Vec<Component>,
    /// Whether the file has any property of this agent.
    pub found: bool,
}

impl Agent {
    pub(super) fn list(&self, kind: Kind) -> &[Component] {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Source => &self.sources,
            Kind::Sink => &self.sinks,
            Kind::SinkGroup => &self.groups,
        }
    }

    fn list_mut(&mut self, kind: Kind) -> &mut Vec<Component> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Source => &mut self.sources,
            Kind::Sink => &mut self.sinks,
            Kind::SinkGroup => &mut self.groups,
        }
    }
}

/// The names of the agents a file configures: the `X` of its `X.sources`, `X.channels`,
/// `X.sinks` and `X.sinkgroups` lists, in order of first appearance.
pub(super) fn agents(props: &[Property]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in props {
        let Some((agent, rest)) = p.key.split_once('.') else {
            continue;
        };
        if Kind::from_section(rest).is_some() && !out.iter().any(|a| a == agent) {
            out.push(agent.to_owned());
        }
    }
    out
}

/// Gathers agent `agent`'s components from `props`. Keys that belong to no listed component,
/// and values overridden by a later line, are reported through `cx`; keys of other agents
/// are none of this agent's business and are ignored.
pub(super) fn read(props: &[Property], agent: &str, cx: &mut Cx) -> Agent {
    let prefix = format!("{agent}.");
    // The last line setting a key wins, as in Java and Flume.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, p) in props.iter().enumerate() {
        if p.key.starts_with(&prefix) {
            last.insert(p.key.as_str(), i);
        }
    }
    let mut out = Agent {
        found: !last.is_empty(),
        ..Agent::default()
    };
    for kind in Kind::ALL {
        let key = format!("{prefix}{}", kind.section());
        let Some(&i) = last.get(key.as_str()) else {
            continue;
        };
        let p = &props[i];
        let mut seen = HashSet::new();
        for name in p.value.split_whitespace() {
            if seen.insert(name) {
                out.list_mut(kind)
                    .push(Component::new(name, format!("{key}.{name}."), p.line));
            }
        }
    }

    // Properties of components the lists do not name: reported once per component.
    let mut unlisted: Vec<(Kind, String, usize, usize)> = Vec::new();
    for (i, p) in props.iter().enumerate() {
        let Some(sub) = p.key.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(&winner) = last.get(p.key.as_str()) {
            if winner != i {
                let later = props[winner].line;
                cx.skip(
                    p.line,
                    &p.key,
                    format!("set again on line {later}, and the last value wins (as in Flume)"),
                );
                continue;
            }
        }
        if Kind::from_section(sub).is_some() {
            continue;
        }
        let Some((section, rest)) = sub.split_once('.') else {
            cx.skip(p.line, &p.key, not_agent_setting(sub, agent));
            continue;
        };
        let Some(kind) = Kind::from_section(section) else {
            cx.skip(p.line, &p.key, not_agent_setting(section, agent));
            continue;
        };
        let (name, property) = match rest.split_once('.') {
            Some((n, k)) if !n.is_empty() && !k.is_empty() => (n, k),
            _ => {
                cx.skip(p.line, &p.key, "names no property of a component");
                continue;
            }
        };
        let prop = Prop {
            key: p.key.clone(),
            value: p.value.clone(),
            line: p.line,
        };
        match out.list_mut(kind).iter_mut().find(|c| c.name == name) {
            Some(c) if property == "type" => {
                c.ty = Some(prop).filter(|t| !t.trimmed().is_empty());
            }
            Some(c) => c.props.push((property.to_owned(), prop)),
            None => match unlisted
                .iter_mut()
                .find(|(k, n, _, _)| *k == kind && n == name)
            {
                Some(entry) => entry.3 += 1,
                None => unlisted.push((kind, name.to_owned(), p.line, 1)),
            },
        }
    }
    for (kind, name, line, count) in unlisted {
        let section = kind.section();
        let what = if count == 1 { "property" } else { "properties" };
        cx.skip(
            line,
            format!("{prefix}{section}.{name}"),
            format!(
                "`{name}` is not in `{prefix}{section}`, so Flume ignores its {count} {what} too"
            ),
        );
    }
    out
}

fn not_agent_setting(sub: &str, agent: &str) -> String {
    if sub == "configfilters" {
        format!(
            "config filters fetch values from elsewhere at start; Sluice reads `${{NAME}}` from the environment (agent `{agent}`)"
        )
    } else {
        format!("`{sub}` is not a section of a Flume agent (sources, channels, sinks, sinkgroups)")
    }
}
