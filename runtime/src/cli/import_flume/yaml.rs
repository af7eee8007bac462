//! A small YAML writer over an ordered tree: the translated pipeline comes out in the order
//! it was built (channels, sources, sinks, sink groups, each in Flume's listed order), with
//! comments where a translation needs explaining, and every string quoted when YAML would
//! read it as something else (a number, a boolean, null) or could not read it plainly.

/// A value of the tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Map(Map),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

/// A list of strings.
pub(super) fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::List(items.iter().map(|s| Value::from(s.as_ref())).collect())
}

/// A mapping that keeps its keys in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Map {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    value: Value,
    /// Comment lines written just above the key.
    comments: Vec<String>,
}

impl Map {
    pub(super) fn new() -> Self {
        Map::default()
    }

    /// Sets `key`, in place when it is already there, else at the end.
    pub(super) fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let (key, value) = (key.into(), value.into());
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value,
            None => self.entries.push(Entry {
                key,
                value,
                comments: Vec::new(),
            }),
        }
    }

    /// Adds a comment above `key` (nothing happens when the key is not there).
    pub(super) fn comment(&mut self, key: &str, text: impl Into<String>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.comments.push(text.into());
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Longest key written the usual way (`key: value`); YAML's limit is 1024 characters.
const MAX_IMPLICIT_KEY: usize = 1000;

/// The whole document: `header` lines as comments, then `doc`.
pub(super) fn emit(doc: &Map, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        push_comment(&mut out, 0, line);
    }
    entries(&mut out, doc, 0, false);
    out
}

/// Writes a mapping's entries at `indent`. With `first_inline`, the first key continues a
/// line already started (after a list item's `- `).
fn entries(out: &mut String, map: &Map, indent: usize, first_inline: bool) {
    for (i, e) in map.entries.iter().enumerate() {
        let inline = first_inline && i == 0;
        if !inline {
            for c in &e.comments {
                push_comment(out, indent, c);
            }
            pad(out, indent);
        }
        let k = key(&e.key);
        if k.len() > MAX_IMPLICIT_KEY {
            // YAML allows implicit keys of at most 1024 characters: a longer one is explicit.
            out.push_str("? ");
            out.push_str(&k);
            out.push('\n');
            pad(out, indent);
        } else {
            out.push_str(&k);
        }
        out.push(':');
        after_key(out, &e.value, indent);
    }
}

/// Writes a value after `key:`, on the same line when it is short, else below.
fn after_key(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            entries(out, m, indent + 2, false);
        }
        Value::List(items) if !is_flow(items) => {
            out.push('\n');
            block_list(out, items, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// A list written `- item` per line.
fn block_list(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        match item {
            Value::Map(m) if !m.is_empty() => {
                // The first entry's comments go above the `- ` line.
                for c in &m.entries[0].comments {
                    push_comment(out, indent, c);
                }
                pad(out, indent);
                out.push_str("- ");
                entries(out, m, indent + 2, true);
            }
            Value::List(inner) if !is_flow(inner) => {
                pad(out, indent);
                out.push_str("-\n");
                block_list(out, inner, indent + 2);
            }
            other => {
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

/// Lists of scalars (and empty lists) are written inline: `[a, b]`.
fn is_flow(items: &[Value]) -> bool {
    items.iter().all(|v| match v {
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => true,
    })
}

/// A value on one line.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "~".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Str(s) => scalar(s),
        Value::List(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Map(m) => {
            let parts: Vec<String> = m
                .entries
                .iter()
                .map(|e| format!("{}: {}", key(&e.key), inline(&e.value)))
                .collect();
            if parts.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", parts.join(", "))
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A comment of one or more lines. Its text comes from the input file, so a character YAML
/// would not accept, or would read as a line break (ending the comment and starting YAML of
/// the input's choosing), is written as an escape instead.
fn push_comment(out: &mut String, indent: usize, text: &str) {
    for line in text.split('\n') {
        pad(out, indent);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            for c in line.chars() {
                if needs_escape(c) {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push(c);
                }
            }
            out.push('\n');
        }
    }
}

/// Whether `c` cannot stand as itself inside a comment or a quoted scalar: outside YAML's
/// printable set, a control character, or a line break of YAML 1.1 or 1.2 (`\r`, NEL, LS,
/// PS), or a byte order mark.
fn needs_escape(c: char) -> bool {
    let printable = matches!(c,
        '\t' | ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
    !printable || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

/// A mapping key. Keys come from the Flume file (component names, header values, property
/// names) and are never references, but Sluice expands `${…}` in keys too: so `${` is escaped.
fn key(k: &str) -> String {
    scalar(&super::values::literal(k))
}

/// A string as a YAML scalar: plain when that reads back as the same string, else quoted.
pub(super) fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if s.chars().any(|c| c == '\t' || needs_escape(c)) {
        double_quoted(s)
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Whether `s` may be written without quotes: only unremarkable characters, not starting
/// with an indicator, and not a word or number YAML (1.1 or 1.2) reads as another type.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let ordinary = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '+');
    if !s.chars().all(ordinary) {
        return false;
    }
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/' || first == '.') {
        // Digits start numbers; `-` and `+` start numbers or list items. Durations and
        // sizes (`30s`, `64MiB`) are the exception: digits then letters only.
        return first.is_ascii_digit() && is_number_with_unit(s);
    }
    if first == '.' && !s[1..].starts_with(['/', '.']) {
        return false; // `.inf`, `.nan`, `.5`
    }
    const WORDS: &[&str] = &["true", "false", "yes", "no", "on", "off", "y", "n", "null"];
    !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// `30s`, `250ms`, `64MiB`: digits, then at least one letter, letters only after that (`0x1f`
/// and `1e5` are numbers to YAML, so they do not pass).
fn is_number_with_unit(s: &str) -> bool {
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit());
    !unit.is_empty()
        && unit.chars().all(|c| c.is_ascii_alphabetic())
        && !unit.starts_with(['e', 'E', 'x', 'X', 'o', 'O', 'b', 'B'])
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_from_the_input_cannot_break_the_document() {
        // NUL, DEL, a C1 control, CR, NEL and LS, BOM, U+FFFE: in a comment and in values.
        let nasty = "a\u{0}b\u{7f}c\u{9b}d\re: [x]\u{85}f\u{2028}g\u{feff}h\u{fffe}i";
        let mut doc = Map::default();
        doc.insert("key", Value::Str(nasty.to_owned()));
        doc.insert(nasty, Value::Str("v".to_owned()));
        doc.comment("key", nasty);
        let text = emit(&doc, &[nasty.to_owned()]);
        let node = sluice_core::config::Node::parse(&text, &|_| None)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert_eq!(
            node.get("key").and_then(|n| n.as_str()),
            Some(nasty),
            "{text}"
        );
        assert_eq!(node.entries().len(), 2, "a comment became YAML:\n{text}");
    }

    #[test]
    fn a_key_too_long_for_yaml_s_implicit_keys_is_written_explicitly() {
        let long = "k\u{0}".repeat(600);
        let mut inner = Map::default();
        inner.insert(long.clone(), Value::Str("v".to_owned()));
        inner.insert("after", Value::Str("w".to_owned()));
        let mut doc = Map::default();
        doc.insert("m", Value::Map(inner));
        let text = emit(&doc, &[]);
        let node = sluice_core::config::Node::parse(&text, &|_| None)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let m = node.get("m").expect("m");
        assert_eq!(m.get(&long).and_then(|n| n.as_str()), Some("v"), "{text}");
        assert_eq!(m.get("after").and_then(|n| n.as_str()), Some("w"), "{text}");
    }

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        for plain in [
            "memory",
            "c1",
            "mem-channel-1",
            "/var/log/x.log",
            "./out",
            "30s",
            "64MiB",
            "session.timeout.ms",
            "_x",
        ] {
            assert_eq!(scalar(plain), plain);
        }
        for (s, quoted) in [
            ("", "''"),
            ("true", "'true'"),
            ("Yes", "'Yes'"),
            ("null", "'null'"),
            ("~", "'~'"),
            ("10", "'10'"),
            ("1e5", "'1e5'"),
            ("0x1f", "'0x1f'"),
            ("10.1.1.100", "'10.1.1.100'"),
            (".inf", "'.inf'"),
            ("-x", "'-x'"),
            ("a: b", "'a: b'"),
            ("a #b", "'a #b'"),
            ("%{host}", "'%{host}'"),
            ("${HOME}/x", "'${HOME}/x'"),
            ("*.log", "'*.log'"),
            ("&a", "'&a'"),
            ("!x", "'!x'"),
            ("@x", "'@x'"),
            ("`x`", "'`x`'"),
            ("it's", "'it''s'"),
            ("\"q\"", "'\"q\"'"),
            ("^\\S", "'^\\S'"),
            ("a\nb", "\"a\\nb\""),
            ("tab\there", "\"tab\\there\""),
        ] {
            assert_eq!(scalar(s), quoted, "{s:?}");
        }
    }

    #[test]
    fn documents_keep_order_comments_and_nesting() {
        let mut src = Map::new();
        src.insert("type", "file");
        src.insert("paths", strings(&["/var/log/*.log"]));
        src.insert("channels", strings(&["c1"]));
        let mut ts = Map::new();
        ts.insert("type", "timestamp");
        ts.comment("type", "from interceptor i1");
        let mut st = Map::new();
        st.insert("type", "static");
        st.insert("key", "dc");
        st.insert("value", "NY");
        src.insert("interceptors", Value::List(vec![ts.into(), st.into()]));
        src.insert("headers", {
            let mut h = Map::new();
            h.insert("file", Value::Null);
            h
        });
        src.insert("batch_size", 100i64);
        src.insert("empty", Value::List(Vec::new()));
        src.comment("paths", "a comment\non two lines");
        let mut sources = Map::new();
        sources.insert("r1", src);
        let mut doc = Map::new();
        doc.insert("sources", sources);
        let text = emit(&doc, &["header".to_owned()]);
        assert_eq!(
            text,
            "# header
sources:
  r1:
    type: file
    # a comment
    # on two lines
    paths: ['/var/log/*.log']
    channels: [c1]
    interceptors:
      # from interceptor i1
      - type: timestamp
      - type: static
        key: dc
        value: NY
    headers:
      file: ~
    batch_size: 100
    empty: []
"
        );
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut m = Map::new();
        m.insert("a", 1i64);
        m.insert("b", 2i64);
        m.insert("a", 3i64);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), Some(&Value::Int(3)));
        m.insert("b", true);
        assert_eq!(emit(&m, &[]), "a: 3\nb: true\n");
    }
}
