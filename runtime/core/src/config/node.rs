//! A YAML tree that remembers where every value came from.
//!
//! The pipeline file is parsed once into [`Node`]s carrying line and column, with `${ENV}`
//! interpolation applied to string scalars. Typed config is then deserialized from these nodes
//! (see [`super::de`]), so every error — even one found after deserialization, such as a
//! dangling channel reference — can point at the exact place in the file.

use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A 1-based line and column in the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys are kept in file order; the YAML loader already refuses duplicate keys.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

/// A problem found while reading the YAML itself (syntax or interpolation).
#[derive(Debug, Clone)]
pub struct NodeError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// A hash of the value with positions left out, so that a component whose settings did
    /// not change between two readings of a file has the same fingerprint (live reload keeps
    /// it running). Map keys are hashed in file order: reordering keys counts as a change,
    /// which only restarts the component.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        fn walk(n: &Node, h: &mut std::hash::DefaultHasher) {
            std::mem::discriminant(&n.kind).hash(h);
            match &n.kind {
                NodeKind::Null => {}
                NodeKind::Bool(b) => b.hash(h),
                NodeKind::Int(i) => i.hash(h),
                NodeKind::Float(f) => f.to_bits().hash(h),
                NodeKind::Str(s) => s.hash(h),
                NodeKind::Seq(items) => {
                    items.len().hash(h);
                    for i in items {
                        walk(i, h);
                    }
                }
                NodeKind::Map(entries) => {
                    entries.len().hash(h);
                    for (k, v) in entries {
                        walk(k, h);
                        walk(v, h);
                    }
                }
            }
        }
        let mut h = std::hash::DefaultHasher::new();
        walk(self, &mut h);
        h.finish()
    }

    /// Parses a YAML document. `lookup_env` resolves `${NAME}` references (injected for tests).
    pub fn parse(
        text: &str,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Node, Vec<NodeError>> {
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            vec![NodeError {
                pos: Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                message: format!("invalid YAML: {}", e.info()),
            }]
        })?;
        let mut errors = Vec::new();
        let node = match docs.into_iter().next() {
            Some(doc) => convert(doc, lookup_env, &mut errors),
            None => Node {
                pos: Pos { line: 1, col: 1 },
                kind: NodeKind::Map(Vec::new()),
            },
        };
        if errors.is_empty() {
            Ok(node)
        } else {
            Err(errors)
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.kind {
            NodeKind::Map(m) => m,
            _ => &[],
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The key node itself (its position is where a reader looks for the field name).
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    /// A copy of this mapping keeping only the entries whose key passes `keep`.
    pub fn filter_keys(&self, keep: impl Fn(&str) -> bool) -> Node {
        match &self.kind {
            NodeKind::Map(m) => Node {
                pos: self.pos,
                kind: NodeKind::Map(
                    m.iter()
                        .filter(|(k, _)| k.as_str().is_none_or(&keep))
                        .cloned()
                        .collect(),
                ),
            },
            _ => self.clone(),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

fn convert(
    yaml: MarkedYaml<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<NodeError>,
) -> Node {
    let start = yaml.span.start;
    let pos = Pos {
        line: start.line(),
        col: start.col() + 1,
    };
    let kind = match yaml.data {
        YamlData::Value(Scalar::Null) => NodeKind::Null,
        YamlData::Value(Scalar::Boolean(b)) => NodeKind::Bool(b),
        YamlData::Value(Scalar::Integer(i)) => NodeKind::Int(i),
        YamlData::Value(Scalar::FloatingPoint(f)) => NodeKind::Float(f.into_inner()),
        YamlData::Value(Scalar::String(s)) => match interpolate(&s, env) {
            Ok(s) => NodeKind::Str(s),
            Err(message) => {
                errors.push(NodeError { pos, message });
                NodeKind::Str(s.into_owned())
            }
        },
        YamlData::Representation(s, _, _) => NodeKind::Str(s.into_owned()),
        YamlData::Sequence(items) => {
            NodeKind::Seq(items.into_iter().map(|n| convert(n, env, errors)).collect())
        }
        YamlData::Mapping(map) => NodeKind::Map(
            map.into_iter()
                .map(|(k, v)| (convert(k, env, errors), convert(v, env, errors)))
                .collect(),
        ),
        YamlData::Tagged(_, inner) => return convert(*inner, env, errors),
        YamlData::Alias(_) | YamlData::BadValue => {
            errors.push(NodeError {
                pos,
                message: "unsupported YAML value".into(),
            });
            NodeKind::Null
        }
    };
    Node { pos, kind }
}

/// Replaces `${NAME}` and `${NAME:-default}`; `$${` escapes a literal `${`.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err(format!("unterminated `${{` in {s:?}"));
        };
        let expr = &rest[i + 2..i + end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        match (
            env(name).filter(|v| !v.is_empty() || default.is_none()),
            default,
        ) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                ));
            }
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "8080".to_owned())
    }

    #[test]
    fn interpolation_forms() {
        assert_eq!(interpolate("a:${PORT}", &env).unwrap(), "a:8080");
        assert_eq!(
            interpolate("${NOPE:-x}-${PORT:-1}", &env).unwrap(),
            "x-8080"
        );
        assert_eq!(interpolate("$${PORT}", &env).unwrap(), "${PORT}");
        assert!(
            interpolate("${NOPE}", &env)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(interpolate("${PORT", &env).is_err());
    }

    #[test]
    fn positions_are_one_based() {
        let n = Node::parse("a:\n  b: 1\n", &env).unwrap();
        let b = n.get("a").unwrap().get("b").unwrap();
        assert_eq!(b.pos, Pos { line: 2, col: 6 });
        assert_eq!(
            n.get("a").unwrap().key("b").unwrap().pos,
            Pos { line: 2, col: 3 }
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let e = Node::parse("a: [1, 2\nb: 3\n", &env).unwrap_err();
        assert!(e[0].pos.line >= 1, "{e:?}");
        assert!(e[0].message.contains("invalid YAML"));
    }
}
