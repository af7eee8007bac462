//! The Parquet writer of `format: parquet` (the `s3` sink: one file per object; the `file`
//! sink: one file per batch and path): the JSON-object bodies of one `encode` call become the
//! rows of one Parquet file, written with the `parquet` crate (no Arrow).
//!
//! Columns are the bodies' top-level fields: declared (`parquet.columns`), or inferred from
//! the object's events — in name order, each typed by what its values hold: only
//! booleans → `boolean`, only integers → `int64`, numbers → `double`, only strings →
//! `string`, anything else (objects, arrays, mixed) → `json` (the value's JSON text as a
//! string column). Every column is optional: a missing field or `null` is a null.
//! `timestamp_ms` (declared only) takes epoch milliseconds or RFC 3339 text. Rows are written
//! in row groups of `row_group_size`, each column compressed with `compression`.
//!
//! A body that is not a JSON object, or a value a declared column cannot hold, fails the
//! file's encoding with the event's place and field (the sink dead-letters the file's events
//! with the reason).

use std::sync::Arc;

use parquet::{
    basic::{Compression, ConvertedType, Repetition, Type as Physical, ZstdLevel},
    column::writer::ColumnWriter,
    data_type::ByteArray,
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::types::Type,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use sluice_core::event::{Event, codec::Codec};

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    String,
    Int64,
    Double,
    Boolean,
    Json,
    TimestampMs,
}

/// Column compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    None,
    #[default]
    Snappy,
    Gzip,
    Zstd,
    Lz4,
}

/// `parquet:` of a sink with `format: parquet`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSettings {
    /// Field → type, in column order; absent: inferred per object.
    #[serde(default)]
    pub columns: Option<Columns>,
    #[serde(default)]
    pub compression: ParquetCompression,
    #[serde(default = "default_row_group")]
    pub row_group_size: usize,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings {
            columns: None,
            compression: ParquetCompression::default(),
            row_group_size: default_row_group(),
        }
    }
}

fn default_row_group() -> usize {
    100_000
}

/// Declared columns, in the order they are written (a YAML mapping's order).
#[derive(Debug, Clone, PartialEq)]
pub struct Columns(pub Vec<(String, ColumnType)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of field names to column types")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Columns, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, ColumnType>()? {
                    out.push((k, v));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The encoder, as the sink's codec: one Parquet file per `encode` call (one object).
pub struct ParquetCodec {
    settings: ParquetSettings,
}

/// `format: parquet` for the engine's file sink.
pub fn native_format() -> sluice_core::registry::NativeFormat {
    sluice_core::registry::NativeFormat {
        name: "parquet",
        make: |settings| {
            let settings = match settings {
                None => ParquetSettings::default(),
                Some(v) => {
                    serde_json::from_value(v.clone()).map_err(|e| format!("`parquet`: {e}"))?
                }
            };
            Ok(Box::new(ParquetCodec::new(settings)?))
        },
    }
}

impl ParquetCodec {
    pub fn new(settings: ParquetSettings) -> Result<ParquetCodec, String> {
        if settings.row_group_size == 0 {
            return Err("`parquet.row_group_size` must be at least 1".into());
        }
        if let Some(c) = &settings.columns {
            if c.0.is_empty() {
                return Err("`parquet.columns`: name at least one column".into());
            }
        }
        Ok(ParquetCodec { settings })
    }
}

/// What the values of one field were seen to hold.
#[derive(Default, Clone, Copy)]
struct Seen {
    boolean: bool,
    int: bool,
    float: bool,
    string: bool,
    other: bool,
}

impl Seen {
    fn add(&mut self, v: &Value) {
        match v {
            Value::Null => {}
            Value::Bool(_) => self.boolean = true,
            Value::Number(n) if n.as_i64().is_some() => self.int = true,
            Value::Number(_) => self.float = true,
            Value::String(_) => self.string = true,
            _ => self.other = true,
        }
    }

    fn column_type(self) -> ColumnType {
        match (self.boolean, self.int, self.float, self.string, self.other) {
            (true, false, false, false, false) => ColumnType::Boolean,
            (false, true, false, false, false) => ColumnType::Int64,
            (false, _, true, false, false) => ColumnType::Double,
            (false, false, false, true, false) => ColumnType::String,
            (false, false, false, false, false) => ColumnType::String,
            _ => ColumnType::Json,
        }
    }
}

fn schema(columns: &[(String, ColumnType)]) -> Result<Type, String> {
    let fields = columns
        .iter()
        .map(|(name, t)| {
            let (physical, converted) = match t {
                ColumnType::String | ColumnType::Json => {
                    (Physical::BYTE_ARRAY, ConvertedType::UTF8)
                }
                ColumnType::Int64 => (Physical::INT64, ConvertedType::NONE),
                ColumnType::Double => (Physical::DOUBLE, ConvertedType::NONE),
                ColumnType::Boolean => (Physical::BOOLEAN, ConvertedType::NONE),
                ColumnType::TimestampMs => (Physical::INT64, ConvertedType::TIMESTAMP_MILLIS),
            };
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_converted_type(converted)
                .build()
                .map(Arc::new)
                .map_err(|e| format!("column {name:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Type::group_type_builder("event")
        .with_fields(fields)
        .build()
        .map_err(|e| e.to_string())
}

fn compression(c: ParquetCompression) -> Compression {
    match c {
        ParquetCompression::None => Compression::UNCOMPRESSED,
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Gzip => Compression::GZIP(Default::default()),
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        ParquetCompression::Lz4 => Compression::LZ4_RAW,
    }
}

/// `v` as epoch milliseconds: a number, or RFC 3339 text.
fn timestamp_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

impl Codec for ParquetCodec {
    fn whole_file(&self) -> bool {
        true
    }

    fn decode(&mut self, _payload: &[u8]) -> Result<Vec<Event>, String> {
        Err("parquet is an output format here (the s3 source reads Parquet objects)".into())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), String> {
        let rows: Vec<Map<String, Value>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| match serde_json::from_slice(&e.body) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(format!("parquet: event {i}: the body is not a JSON object")),
                Err(x) => Err(format!("parquet: event {i}: the body is not JSON: {x}")),
            })
            .collect::<Result<_, _>>()?;
        let columns: Vec<(String, ColumnType)> = match &self.settings.columns {
            Some(c) => c.0.clone(),
            None => {
                let mut seen: Vec<(String, Seen)> = Vec::new();
                for row in &rows {
                    for (k, v) in row {
                        match seen.iter_mut().find(|(n, _)| n == k) {
                            Some((_, s)) => s.add(v),
                            None => {
                                let mut s = Seen::default();
                                s.add(v);
                                seen.push((k.clone(), s));
                            }
                        }
                    }
                }
                if seen.is_empty() {
                    return Err("parquet: the events have no fields to make columns of".into());
                }
                // Name order, whatever order the JSON maps keep.
                seen.sort_by(|a, b| a.0.cmp(&b.0));
                seen.into_iter()
                    .map(|(k, s)| (k, s.column_type()))
                    .collect()
            }
        };
        let schema = Arc::new(schema(&columns).map_err(|e| format!("parquet: {e}"))?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(compression(self.settings.compression))
                .set_max_row_group_size(self.settings.row_group_size)
                .build(),
        );
        let fail = |e: parquet::errors::ParquetError| format!("parquet: {e}");
        let mut writer = SerializedFileWriter::new(&mut *out, schema, props).map_err(fail)?;
        for (g, group) in rows.chunks(self.settings.row_group_size).enumerate() {
            let first = g * self.settings.row_group_size;
            let mut rg = writer.next_row_group().map_err(fail)?;
            let mut c = 0;
            while let Some(mut col) = rg.next_column().map_err(fail)? {
                let (name, t) = &columns[c];
                let mut def = Vec::with_capacity(group.len());
                let bad = |i: usize, v: &Value| {
                    format!(
                        "parquet: event {}: field {name:?} is {v}, which a {t:?} column cannot hold",
                        first + i
                    )
                };
                match col.untyped() {
                    ColumnWriter::Int64ColumnWriter(w) => {
                        let mut vals = Vec::new();
                        for (i, row) in group.iter().enumerate() {
                            match row.get(name) {
                                None | Some(Value::Null) => def.push(0),
                                Some(v) => {
                                    let n = if *t == ColumnType::TimestampMs {
                                        timestamp_ms(v)
                                    } else {
                                        v.as_i64()
                                    };
                                    vals.push(n.ok_or_else(|| bad(i, v))?);
                                    def.push(1);
                                }
                            }
                        }
                        w.write_batch(&vals, Some(&def), None).map_err(fail)?;
                    }
                    ColumnWriter::DoubleColumnWriter(w) => {
                        let mut vals = Vec::new();
                        for (i, row) in group.iter().enumerate() {
                            match row.get(name) {
                                None | Some(Value::Null) => def.push(0),
                                Some(v) => {
                                    vals.push(v.as_f64().ok_or_else(|| bad(i, v))?);
                                    def.push(1);
                                }
                            }
                        }
                        w.write_batch(&vals, Some(&def), None).map_err(fail)?;
                    }
                    ColumnWriter::BoolColumnWriter(w) => {
                        let mut vals = Vec::new();
                        for (i, row) in group.iter().enumerate() {
                            match row.get(name) {
                                None | Some(Value::Null) => def.push(0),
                                Some(v) => {
                                    vals.push(v.as_bool().ok_or_else(|| bad(i, v))?);
                                    def.push(1);
                                }
                            }
                        }
                        w.write_batch(&vals, Some(&def), None).map_err(fail)?;
                    }
                    ColumnWriter::ByteArrayColumnWriter(w) => {
                        let mut vals: Vec<ByteArray> = Vec::new();
                        for (i, row) in group.iter().enumerate() {
                            match row.get(name) {
                                None | Some(Value::Null) => def.push(0),
                                Some(Value::String(s)) => {
                                    vals.push(ByteArray::from(s.as_str()));
                                    def.push(1);
                                }
                                Some(v) if *t == ColumnType::Json => {
                                    vals.push(ByteArray::from(v.to_string().into_bytes()));
                                    def.push(1);
                                }
                                Some(v) => return Err(bad(i, v)),
                            }
                        }
                        w.write_batch(&vals, Some(&def), None).map_err(fail)?;
                    }
                    _ => return Err(format!("parquet: column {name:?}: unexpected writer")),
                }
                col.close().map_err(fail)?;
                c += 1;
            }
            rg.close().map_err(fail)?;
        }
        writer.close().map_err(fail)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn encode(settings: ParquetSettings, bodies: &[&str]) -> Result<Vec<u8>, String> {
        let events: Vec<Event> = bodies.iter().map(|b| Event::new(b.to_string())).collect();
        let mut out = Vec::new();
        ParquetCodec::new(settings)?.encode(&events, &mut out)?;
        Ok(out)
    }

    #[test]
    fn infers_columns_and_writes_row_groups() {
        let bodies: Vec<String> = (0..25)
            .map(|i| format!(r#"{{"id": {i}, "name": "n{i}", "score": {i}.5, "ok": true, "tags": [1], "maybe": null}}"#))
            .collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let settings = ParquetSettings {
            row_group_size: 10,
            ..Default::default()
        };
        let file = encode(settings, &refs).unwrap();
        let r = SerializedFileReader::new(bytes::Bytes::from(file)).unwrap();
        let meta = r.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 25);
        assert_eq!(meta.num_row_groups(), 3);
        let schema = meta.file_metadata().schema_descr();
        let cols: Vec<(String, Physical)> = schema
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.physical_type()))
            .collect();
        assert_eq!(
            cols,
            [
                ("id".into(), Physical::INT64),
                ("maybe".into(), Physical::BYTE_ARRAY),
                ("name".into(), Physical::BYTE_ARRAY),
                ("ok".into(), Physical::BOOLEAN),
                ("score".into(), Physical::DOUBLE),
                ("tags".into(), Physical::BYTE_ARRAY),
            ]
        );
    }

    #[test]
    fn declared_columns_are_enforced() {
        let settings: ParquetSettings = serde_json::from_str(
            r#"{"columns": {"ts": "timestamp_ms", "n": "int64"}, "compression": "zstd"}"#,
        )
        .unwrap();
        let file = encode(
            settings.clone(),
            &[
                r#"{"ts": "2026-12-07T10:00:00Z", "n": 1, "extra": 2}"#,
                r#"{"ts": 1, "n": null}"#,
            ],
        )
        .unwrap();
        assert!(file.starts_with(b"PAR1") && file.ends_with(b"PAR1"));
        let e = encode(settings, &[r#"{"ts": 1, "n": "x"}"#]).unwrap_err();
        assert!(e.contains("event 0: field \"n\""), "{e}");
        let e = encode(ParquetSettings::default(), &["[1]"]).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}
