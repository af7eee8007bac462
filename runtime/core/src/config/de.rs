//! A serde `Deserializer` over [`Node`] whose errors carry the position of the offending value.
//!
//! serde's derived code raises errors (unknown field, wrong type, bad duration) without knowing
//! where they happened; this deserializer stamps each error with the position of the node being
//! read when it passes through, innermost first. Internally tagged enums and `flatten` are not
//! used in config types because serde buffers those and the positions would be lost.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::node::{Node, NodeKind, Pos};

#[derive(Debug, Clone)]
pub struct DeError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl DeError {
    fn at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
        }
    }
}

/// Deserializes a `T` from `node`.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node)).map_err(|e| e.at(node.pos))
}

struct NodeDe<'a>(&'a Node);

impl NodeDe<'_> {
    fn pos(&self) -> Pos {
        self.0.pos
    }

    fn invalid<E>(&self, exp: &dyn de::Expected) -> Result<E, DeError> {
        let unexp = match &self.0.kind {
            NodeKind::Null => de::Unexpected::Unit,
            NodeKind::Bool(b) => de::Unexpected::Bool(*b),
            NodeKind::Int(i) => de::Unexpected::Signed(*i),
            NodeKind::Float(f) => de::Unexpected::Float(*f),
            NodeKind::Str(s) => de::Unexpected::Str(s),
            NodeKind::Seq(_) => de::Unexpected::Seq,
            NodeKind::Map(_) => de::Unexpected::Map,
        };
        Err(<DeError as de::Error>::invalid_type(unexp, exp).at(self.pos()))
    }
}

macro_rules! parse_from_str {
    ($($method:ident => $visit:ident : $ty:ty),* $(,)?) => {$(
        /// Numbers and booleans may arrive as strings after `${ENV}` interpolation.
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            if let NodeKind::Str(s) = &self.0.kind {
                return match s.trim().parse::<$ty>() {
                    Ok(v) => visitor.$visit(v).map_err(|e: DeError| e.at(self.pos())),
                    Err(_) => self.invalid(&visitor),
                };
            }
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        let r = match &self.0.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Bool(b) => visitor.visit_bool(*b),
            NodeKind::Int(i) => visitor.visit_i64(*i),
            NodeKind::Float(f) => visitor.visit_f64(*f),
            NodeKind::Str(s) => visitor.visit_str(s),
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess { iter: items.iter() }),
            NodeKind::Map(entries) => {
                let mut access = MapAccess {
                    iter: entries.iter(),
                    value: None,
                };
                visitor.visit_map(&mut access)
            }
        };
        r.map_err(|e: DeError| e.at(pos))
    }

    parse_from_str! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i64: i64,
        deserialize_i16 => visit_i64: i64,
        deserialize_i32 => visit_i64: i64,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u64: u64,
        deserialize_u16 => visit_u64: u64,
        deserialize_u32 => visit_u64: u64,
        deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f64: f64,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    /// Plain scalars such as `8080` or `true` are accepted where a string is expected.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        let r = match &self.0.kind {
            NodeKind::Str(s) => visitor.visit_str(s),
            NodeKind::Int(i) => visitor.visit_string(i.to_string()),
            NodeKind::Float(f) => visitor.visit_string(f.to_string()),
            NodeKind::Bool(b) => visitor.visit_string(b.to_string()),
            _ => return self.invalid(&visitor),
        };
        r.map_err(|e: DeError| e.at(pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.kind {
            NodeKind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.pos();
        match &self.0.kind {
            NodeKind::Str(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: DeError| e.at(pos)),
            NodeKind::Map(entries) if entries.len() == 1 => visitor
                .visit_enum(EnumAccess {
                    key: &entries[0].0,
                    value: &entries[0].1,
                })
                .map_err(|e| e.at(pos)),
            _ => self.invalid(&visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
        ignored_any i128 u128
    }
}

struct SeqAccess<'a> {
    iter: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(n) => seed
                .deserialize(NodeDe(n))
                .map(Some)
                .map_err(|e| e.at(n.pos)),
            None => Ok(None),
        }
    }
}

struct MapAccess<'a> {
    iter: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(NodeDe(k))
                    .map(Some)
                    .map_err(|e| e.at(k.pos))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value without key"))?;
        seed.deserialize(NodeDe(v)).map_err(|e| e.at(v.pos))
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let v = seed
            .deserialize(NodeDe(self.key))
            .map_err(|e| e.at(self.key.pos))?;
        Ok((v, NodeDe(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.0.kind {
            NodeKind::Null => Ok(()),
            _ => self.invalid(&"no value"),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
        name: Option<String>,
    }

    fn parse(text: &str) -> Node {
        Node::parse(text, &|_| None).unwrap()
    }

    #[test]
    fn unknown_field_points_at_key() {
        let n = parse("port: 1\nnmae: x\n");
        let e = from_node::<Inner>(&n).unwrap_err();
        assert!(e.message.contains("unknown field `nmae`"), "{e}");
        assert_eq!(e.pos, Some(Pos { line: 2, col: 1 }));
    }

    #[test]
    fn wrong_type_points_at_value() {
        let n = parse("port: [1]\n");
        let e = from_node::<Inner>(&n).unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 1, col: 7 }), "{e}");
    }

    #[test]
    fn string_numbers_from_env_are_accepted() {
        let n = parse("port: \"8080\"\nname: 12\n");
        let v = from_node::<Inner>(&n).unwrap();
        assert_eq!(v.port, 8080);
        assert_eq!(v.name.as_deref(), Some("12"));
    }

    #[test]
    fn missing_field_points_at_mapping() {
        let n = parse("x:\n  name: a\n");
        let e = from_node::<Inner>(n.get("x").unwrap()).unwrap_err();
        assert!(e.message.contains("missing field `port`"));
        assert_eq!(e.pos, Some(Pos { line: 2, col: 3 }));
    }
}
