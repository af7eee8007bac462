//! The translation of one agent: channels first, then sources, sinks and sink groups, each
//! kind in the order Flume lists it, so that a component whose channel (or whose sinks) were
//! left out can be left out too, and the file that comes out stays consistent.

use std::collections::{HashMap, HashSet};

use super::{
    Skipped, Translation,
    agent::{self, Component, Kind, Prop},
    channels, properties, sinks, sources, values,
    yaml::{self, Map, Value},
};

/// `Err` carries why a whole component is left out.
pub(super) type Verdict = Result<(), String>;

/// The reason for a component without a `type`.
pub(super) const NO_TYPE: &str = "it has no `type`, so Flume does not start it either";

/// The reason for a type that is a Java class (or a name Flume does not know).
pub(super) fn custom_class(ty: &str, kind: &str) -> String {
    if ty.contains('.') {
        format!("`{ty}` is a Java class (a custom {kind}): Sluice cannot run Java code")
    } else {
        format!("`{ty}` is not a Flume {kind} type that Sluice has an equivalent for")
    }
}

/// How a property value becomes a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conv {
    /// A string (trimmed), `${…}` references converted.
    Text,
    /// A whole number.
    Int,
    /// Milliseconds, as a duration.
    Millis,
    /// A Java boolean.
    Flag,
}

/// What the translation collects as it goes: the items left out, and the file's top-level
/// properties (for `${NAME}` references to them).
pub(super) struct Cx<'a> {
    pub skipped: Vec<Skipped>,
    globals: &'a HashMap<String, String>,
}

impl Cx<'_> {
    pub(super) fn skip(&mut self, line: usize, key: impl Into<String>, why: impl Into<String>) {
        self.skipped.push(Skipped {
            line,
            key: key.into(),
            why: why.into(),
        });
    }

    pub(super) fn skip_prop(&mut self, p: &Prop, why: impl Into<String>) {
        self.skip(p.line, &p.key, why);
    }

    /// Reports property `name` of `c`, when it is set, as having no use in Sluice.
    pub(super) fn unused(&mut self, c: &mut Component, name: &str, why: &str) {
        if let Some(p) = c.take(name) {
            self.skip_prop(&p, why);
        }
    }

    /// Reports every property of `c` under `prefix` as having no use in Sluice.
    pub(super) fn unused_prefix(&mut self, c: &mut Component, prefix: &str, why: &str) {
        for (_, p) in c.take_prefix(prefix) {
            self.skip_prop(&p, why);
        }
    }

    /// Reports whatever is left in `c`: nothing in Sluice stands for it.
    pub(super) fn leftovers(&mut self, c: &mut Component, what: &str) {
        for (name, p) in c.drain() {
            self.skip_prop(&p, format!("no Sluice equivalent for `{name}` of {what}"));
        }
    }

    /// The value, trimmed, with its `${…}` references in Sluice's form; `None` (reported)
    /// when one has no Sluice form.
    pub(super) fn text(&mut self, p: &Prop) -> Option<String> {
        self.convert(p, p.trimmed())
    }

    /// As [`Cx::text`], keeping surrounding blanks (regexes, replacements, header values).
    pub(super) fn raw(&mut self, p: &Prop) -> Option<String> {
        self.convert(p, &p.value)
    }

    fn convert(&mut self, p: &Prop, value: &str) -> Option<String> {
        match values::env_refs(value, self.globals) {
            Ok(v) => Some(v),
            Err(why) => {
                self.skip_prop(p, why);
                None
            }
        }
    }

    /// The value as a field of kind `conv`.
    pub(super) fn value(&mut self, p: &Prop, conv: Conv) -> Option<Value> {
        let v = self.text(p)?;
        let from_env = values::has_ref(&v);
        match conv {
            Conv::Text => Some(Value::Str(v)),
            Conv::Int if from_env => Some(Value::Str(v)),
            Conv::Int => match v.parse::<i64>() {
                Ok(n) => Some(Value::Int(n)),
                Err(_) => {
                    self.skip_prop(p, format!("`{v}` is not a whole number"));
                    None
                }
            },
            Conv::Millis if from_env => Some(Value::Str(format!("{v}ms"))),
            Conv::Millis => match v.parse::<u64>() {
                Ok(ms) => Some(Value::Str(values::duration(ms))),
                Err(_) => {
                    self.skip_prop(p, format!("`{v}` is not a number of milliseconds"));
                    None
                }
            },
            Conv::Flag => Some(match values::java_bool(&v) {
                Some(b) => Value::Bool(b),
                None => Value::Str(v),
            }),
        }
    }

    /// Moves property `from` of `c`, when it is set, to field `to` of `out`.
    pub(super) fn field(
        &mut self,
        c: &mut Component,
        from: &str,
        out: &mut Map,
        to: &str,
        conv: Conv,
    ) {
        if let Some(p) = c.take(from) {
            if let Some(v) = self.value(&p, conv) {
                out.insert(to, v);
            }
        }
    }

    /// A whole number the translation needs to know now.
    pub(super) fn number(&mut self, p: &Prop) -> Option<i64> {
        match self.value(p, Conv::Int)? {
            Value::Int(n) => Some(n),
            _ => {
                self.skip_prop(
                    p,
                    "comes from the environment, but the translation needs its value",
                );
                None
            }
        }
    }

    /// A boolean the translation needs to know now.
    pub(super) fn boolean(&mut self, p: &Prop) -> Option<bool> {
        let v = self.text(p)?;
        let b = values::java_bool(&v);
        if b.is_none() {
            self.skip_prop(
                p,
                "comes from the environment, but the translation needs its value",
            );
        }
        b
    }

    /// A property the component cannot do without: its value, or why it is missing.
    pub(super) fn required(&mut self, c: &mut Component, name: &str) -> Result<String, String> {
        let p = c
            .take(name)
            .ok_or_else(|| format!("it has no `{name}`, which it needs"))?;
        values::env_refs(p.trimmed(), self.globals).map_err(|why| format!("`{name}`: {why}"))
    }

    /// The first set among several spellings of one property (the current one first, then
    /// deprecated ones); the others, when also set, are reported as overridden.
    pub(super) fn take_first(&mut self, c: &mut Component, names: &[&str]) -> Option<Prop> {
        let mut found: Option<Prop> = None;
        for name in names {
            let Some(p) = c.take(name) else {
                continue;
            };
            match found
                .as_ref()
                .map(|w| format!("`{}` (line {}) is used instead, as in Flume", w.key, w.line))
            {
                Some(why) => self.skip_prop(&p, why),
                None => found = Some(p),
            }
        }
        found
    }
}

/// Translates `c` with `f`, which fills the component's settings or says why it cannot be
/// translated. On success whatever `f` left in `c` is reported (`what` names the component
/// in those reports); on failure the component is reported once, and the reports about its
/// single properties are dropped (the component is gone anyway).
pub(super) fn component(
    c: &mut Component,
    cx: &mut Cx,
    what: &str,
    f: impl FnOnce(&mut Component, &mut Cx, &mut Map) -> Verdict,
) -> Option<Map> {
    let mark = cx.skipped.len();
    let mut out = Map::new();
    match f(c, cx, &mut out) {
        Ok(()) => {
            cx.leftovers(c, what);
            Some(out)
        }
        Err(why) => {
            cx.skipped.truncate(mark);
            cx.skip(c.line(), c.key(), why);
            None
        }
    }
}

/// Sluice names are unique across channels, sources, sinks and sink groups; Flume's are
/// unique per kind. A name taken by an earlier kind gets the kind as a suffix.
pub(super) struct Names {
    map: HashMap<(Kind, String), String>,
}

impl Names {
    fn new(agent: &agent::Agent) -> Names {
        let mut used: HashSet<String> = HashSet::new();
        let mut map = HashMap::new();
        for kind in Kind::ALL {
            for c in agent.list(kind) {
                let mut name = c.name.clone();
                if used.contains(&name) {
                    let base = format!("{}_{}", c.name, kind.noun().replace(' ', "_"));
                    name = base.clone();
                    let mut n = 2;
                    while used.contains(&name) {
                        name = format!("{base}{n}");
                        n += 1;
                    }
                }
                used.insert(name.clone());
                map.insert((kind, c.name.clone()), name);
            }
        }
        Names { map }
    }

    /// The Sluice name of Flume's component `name` of `kind`.
    pub(super) fn get(&self, kind: Kind, name: &str) -> String {
        self.map
            .get(&(kind, name.to_owned()))
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// The Sluice names of several components of one kind.
    pub(super) fn list(&self, kind: Kind, names: &[String]) -> Value {
        let mapped: Vec<String> = names.iter().map(|n| self.get(kind, n)).collect();
        yaml::strings(&mapped)
    }
}

/// The channel names a source refers to: its `channels` and its selector's.
fn channel_refs(c: &Component) -> Vec<String> {
    let mut refs: Vec<String> = Vec::new();
    let mut add = |list: &str| {
        for n in list.split_whitespace() {
            if !refs.iter().any(|r| r == n) {
                refs.push(n.to_owned());
            }
        }
    };
    for name in ["channels", "selector.default", "selector.optional"] {
        if let Some(p) = c.peek(name) {
            add(&p.value);
        }
    }
    for prefix in ["selector.mapping.", "selector.optional."] {
        for (_, p) in c.peek_prefix(prefix) {
            add(&p.value);
        }
    }
    refs
}

/// Why a component cannot use channel `name`, if it cannot.
fn unusable_channel(
    name: &str,
    listed: &HashSet<String>,
    kept: &HashSet<String>,
) -> Option<String> {
    if kept.contains(name) {
        None
    } else if listed.contains(name) {
        Some(format!("its channel `{name}` was left out"))
    } else {
        Some(format!(
            "`{name}` is not a channel of this agent (not in its `channels` list)"
        ))
    }
}

/// Places a translated component in its section under its Sluice name.
fn add(section: &mut Map, names: &Names, kind: Kind, name: &str, body: Map) {
    let out = names.get(kind, name);
    section.insert(out.clone(), body);
    if out != name {
        section.comment(
            &out,
            format!(
                "`{name}` in Flume: Sluice names are unique across channels, sources, sinks and sink groups"
            ),
        );
    }
}

pub(super) fn run(text: &str, agent: &str) -> Translation {
    let props = properties::parse(text);
    let prefix = format!("{agent}.");
    let globals: HashMap<String, String> = props
        .iter()
        .filter(|p| !p.key.starts_with(&prefix))
        .map(|p| (p.key.clone(), p.value.trim().to_owned()))
        .collect();
    let mut cx = Cx {
        skipped: Vec::new(),
        globals: &globals,
    };
    let mut model = agent::read(&props, agent, &mut cx);
    let names = Names::new(&model);
    let listed = |kind: Kind| -> HashSet<String> {
        model.list(kind).iter().map(|c| c.name.clone()).collect()
    };
    let (listed_channels, listed_sinks) = (listed(Kind::Channel), listed(Kind::Sink));

    let mut channels_out = Map::new();
    let mut kept_channels: HashSet<String> = HashSet::new();
    for c in &mut model.channels {
        let what = format!("a Flume `{}` channel", c.type_name());
        if let Some(body) = component(c, &mut cx, &what, channels::translate) {
            kept_channels.insert(c.name.clone());
            add(&mut channels_out, &names, Kind::Channel, &c.name, body);
        }
    }

    let mut sources_out = Map::new();
    for c in &mut model.sources {
        let refs = channel_refs(c);
        if let Some(why) = refs
            .iter()
            .find_map(|r| unusable_channel(r, &listed_channels, &kept_channels))
        {
            cx.skip(c.line(), c.key(), why);
            continue;
        }
        let what = format!("a Flume `{}` source", c.type_name());
        let body = component(c, &mut cx, &what, |c, cx, out| {
            sources::translate(c, cx, out, &names)
        });
        if let Some(body) = body {
            add(&mut sources_out, &names, Kind::Source, &c.name, body);
        }
    }

    let mut sinks_out = Map::new();
    // Sink → the channel it reads (Flume names), for the sink groups.
    let mut kept_sinks: HashMap<String, String> = HashMap::new();
    // Channel → the sinks that read it in Flume.
    let mut readers: HashMap<String, Vec<String>> = HashMap::new();
    for c in &mut model.sinks {
        let channel = c.peek("channel").map(|p| p.trimmed().to_owned());
        if let Some(ch) = &channel {
            readers.entry(ch.clone()).or_default().push(c.name.clone());
        }
        if let Some(why) = channel
            .as_deref()
            .and_then(|ch| unusable_channel(ch, &listed_channels, &kept_channels))
        {
            cx.skip(c.line(), c.key(), why);
            continue;
        }
        let what = format!("a Flume `{}` sink", c.type_name());
        let body = component(c, &mut cx, &what, |c, cx, out| {
            sinks::translate(c, cx, out, &names)
        });
        if let (Some(body), Some(channel)) = (body, channel) {
            kept_sinks.insert(c.name.clone(), channel);
            add(&mut sinks_out, &names, Kind::Sink, &c.name, body);
        }
    }
    // A channel whose every sink was left out fills up, then holds its sources back.
    for ch in &kept_channels {
        let Some(all) = readers.get(ch) else {
            continue;
        };
        if !all.iter().any(|s| kept_sinks.contains_key(s)) {
            let out = names.get(Kind::Channel, ch);
            let list: Vec<String> = all.iter().map(|s| format!("`{s}`")).collect();
            channels_out.comment(
                &out,
                format!(
                    "no sink reads this channel any more ({} left out): once full, it holds back the sources writing to it",
                    list.join(", ")
                ),
            );
        }
    }

    let mut groups_out = Map::new();
    let mut grouped: HashMap<String, String> = HashMap::new();
    for c in &mut model.groups {
        let what = format!("a Flume sink group (processor `{}`)", processor(c));
        let mut members = sinks::Members {
            listed: &listed_sinks,
            kept: &kept_sinks,
            grouped: &mut grouped,
        };
        let body = component(c, &mut cx, &what, |c, cx, out| {
            sinks::group(c, cx, out, &names, &mut members)
        });
        // An empty body is a `default` processor: its one sink runs on its own, as in Flume.
        if let Some(body) = body.filter(|b| !b.is_empty()) {
            add(&mut groups_out, &names, Kind::SinkGroup, &c.name, body);
        }
    }

    let mut doc = Map::new();
    let mut components = 0;
    for (key, section) in [
        ("channels", channels_out),
        ("sources", sources_out),
        ("sinks", sinks_out),
        ("sink_groups", groups_out),
    ] {
        if !section.is_empty() {
            components += section.len();
            doc.insert(key, section);
        }
    }

    let mut skipped = cx.skipped;
    skipped.sort_by_key(|s| s.line);
    let mut header = vec![format!("Translated from {agent} by sluice import-flume")];
    if !model.found {
        let others = super::agents(text);
        header.push(if others.is_empty() {
            format!("The file has no property of agent `{agent}`.")
        } else {
            format!(
                "The file has no property of agent `{agent}`; it configures: {}.",
                others.join(", ")
            )
        });
    }
    if !skipped.is_empty() {
        header.push(format!("Left out ({}):", skipped.len()));
        for s in &skipped {
            header.push(format!("  {s}"));
        }
    }
    Translation {
        yaml: yaml::emit(&doc, &header),
        skipped,
        components,
    }
}

/// A sink group's processor type as written (for messages).
fn processor(c: &Component) -> String {
    c.peek("processor.type")
        .map_or_else(|| "default".to_owned(), |p| p.trimmed().to_owned())
}
