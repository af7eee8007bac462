//! `csv`: a CSV codec (SerDe) with RFC 4180 quoting, built on the `csv` crate.
//!
//! ```yaml
//! plugins:
//!   csv:
//!     path: csv.wasm
//!     config:
//!       has_header: true         # the default: the first row names the columns (decode),
//!                                # a header row is written first (encode)
//!       columns: [id, name, city] # optional: column names (decode: instead of the header
//!                                # row's, which is then skipped; encode: which keys, in order)
//!       delimiter: ","           # one ASCII character, e.g. ";" or "\t"
//!       header_columns: [id]     # decode: also copy these columns into event headers
//!       line_ending: lf          # lf | crlf (encode)
//! ```
//!
//! Decode: each data row becomes one event whose body is the JSON object
//! `{"column": "value", ...}` in column order (values are strings; CSV has no types). Quoted
//! fields may hold the delimiter, doubled quotes (`""`) and line breaks; blank lines are
//! skipped; a leading UTF-8 BOM is ignored. A row with the wrong number of fields, invalid
//! UTF-8 or a duplicate or empty column name fails the whole payload (the host dead-letters
//! it), the error naming the line. Headerless input needs `has_header: false` and `columns`.
//!
//! Encode: every body must be a JSON object. Columns are `columns`, or the keys of the first
//! event in its key order; a missing key is an empty field, keys outside the columns are left
//! out. Strings are written as they are, `null` as an empty field, other values as compact
//! JSON. Fields are quoted only when needed. An empty batch encodes to an empty payload.

use std::{borrow::Cow, collections::HashSet, sync::OnceLock};

use csv_crate::{ReaderBuilder, StringRecord, Terminator, WriterBuilder};
use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{Error, Event};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineEnding {
    #[default]
    Lf,
    Crlf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The payload has (decode) / gets (encode) a header row.
    #[serde(default = "yes")]
    pub has_header: bool,
    /// Column names; by default the header row's (decode) or the first event's keys (encode).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default = "comma")]
    pub delimiter: String,
    /// Columns also copied into event headers on decode.
    #[serde(default)]
    pub header_columns: Vec<String>,
    #[serde(default)]
    pub line_ending: LineEnding,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            has_header: true,
            columns: None,
            delimiter: comma(),
            header_columns: Vec::new(),
            line_ending: LineEnding::Lf,
        }
    }
}

fn yes() -> bool {
    true
}

fn comma() -> String {
    ",".to_owned()
}

/// The configured codec.
#[derive(Debug)]
pub struct CsvCodec {
    has_header: bool,
    columns: Option<Vec<String>>,
    delimiter: u8,
    header_columns: Vec<String>,
    line_ending: LineEnding,
}

impl CsvCodec {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let delimiter = match cfg.delimiter.as_bytes() {
            [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => *b,
            _ => {
                return Err(Error::new(format!(
                    "csv: delimiter must be one ASCII character other than a quote or a line break, not {:?}",
                    cfg.delimiter
                )));
            }
        };
        if let Some(columns) = &cfg.columns {
            check_columns(columns).map_err(|e| Error::new(format!("csv: columns: {e}")))?;
            if let Some(h) = cfg.header_columns.iter().find(|h| !columns.contains(h)) {
                return Err(Error::new(format!("csv: header_columns: `{h}` is not one of `columns`")));
            }
        } else if !cfg.has_header {
            return Err(Error::new("csv: `has_header: false` needs `columns` to name the fields"));
        }
        Ok(CsvCodec {
            has_header: cfg.has_header,
            columns: cfg.columns,
            delimiter,
            header_columns: cfg.header_columns,
            line_ending: cfg.line_ending,
        })
    }

    pub fn decode(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        // flexible: row lengths are checked below, to name the line. csv-core skips a leading BOM.
        let mut rdr =
            ReaderBuilder::new().delimiter(self.delimiter).has_headers(false).flexible(true).from_reader(payload);
        let mut record = StringRecord::new();
        let columns: Cow<'_, [String]> = match &self.columns {
            Some(c) => {
                if self.has_header && !rdr.read_record(&mut record).map_err(csv_err)? {
                    return Ok(Vec::new());
                }
                Cow::Borrowed(c)
            }
            None => {
                if !rdr.read_record(&mut record).map_err(csv_err)? {
                    return Ok(Vec::new());
                }
                let names: Vec<String> = record.iter().map(str::to_owned).collect();
                check_columns(&names).map_err(|e| Error::new(format!("csv: header row: {e}")))?;
                Cow::Owned(names)
            }
        };
        let to_header = self
            .header_columns
            .iter()
            .map(|h| match columns.iter().position(|c| c == h) {
                Some(i) => Ok((i, h.as_str())),
                None => Err(Error::new(format!("csv: header_columns: no column `{h}` in the header row"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // `"name":` for every column, escaped once per payload.
        let keys = columns.iter().map(|c| serde_json::to_string(c).map(|k| k + ":")).collect::<Result<Vec<_>, _>>()?;

        let mut out = Vec::new();
        while rdr.read_record(&mut record).map_err(csv_err)? {
            if record.len() != columns.len() {
                let line = record.position().map_or(0, |p| p.line());
                return Err(Error::new(format!(
                    "csv: line {line}: {} fields, expected {}",
                    record.len(),
                    columns.len()
                )));
            }
            let mut body =
                Vec::with_capacity(record.as_slice().len() + keys.iter().map(|k| k.len() + 3).sum::<usize>() + 2);
            body.push(b'{');
            for (i, (key, field)) in keys.iter().zip(record.iter()).enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(key.as_bytes());
                serde_json::to_writer(&mut body, field)?;
            }
            body.push(b'}');
            let mut ev = Event::new(body);
            for &(i, name) in &to_header {
                ev.set_header(name, &record[i]);
            }
            out.push(ev);
        }
        Ok(out)
    }

    pub fn encode(&self, events: &[Event]) -> Result<Vec<u8>, Error> {
        let rows = events
            .iter()
            .enumerate()
            .map(|(i, e)| match serde_json::from_slice::<Value>(e.body()) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(Error::new(format!("csv: event {i}: body is not a JSON object"))),
                Err(err) => Err(Error::new(format!("csv: event {i}: body is not JSON: {err}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = rows.first() else { return Ok(Vec::new()) };
        let columns: Cow<'_, [String]> = match &self.columns {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned(first.keys().cloned().collect()),
        };
        let terminator = match self.line_ending {
            LineEnding::Lf => Terminator::Any(b'\n'),
            LineEnding::Crlf => Terminator::CRLF,
        };
        let mut w = WriterBuilder::new().delimiter(self.delimiter).terminator(terminator).from_writer(Vec::new());
        if self.has_header {
            w.write_record(columns.iter()).map_err(csv_err)?;
        }
        for row in &rows {
            let fields: Vec<Cow<'_, str>> =
                columns.iter().map(|c| row.get(c).map_or(Cow::Borrowed(""), field_text)).collect();
            w.write_record(fields.iter().map(|f| f.as_bytes())).map_err(csv_err)?;
        }
        w.into_inner().map_err(|e| Error::new(format!("csv: {}", e.error())))
    }
}

/// Column names must be non-empty and unique (they become JSON object keys).
fn check_columns(columns: &[String]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() {
            return Err(format!("column {} has no name", i + 1));
        }
        if !seen.insert(c.as_str()) {
            return Err(format!("duplicate column `{c}`"));
        }
    }
    Ok(())
}

fn field_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

fn csv_err(e: csv_crate::Error) -> Error {
    Error::new(format!("csv: {e}"))
}

static CODEC: OnceLock<CsvCodec> = OnceLock::new();

fn codec() -> Result<&'static CsvCodec, Error> {
    CODEC.get().ok_or_else(|| Error::new("csv: not initialised"))
}

/// The plugin: a thin shell over the [`CsvCodec`] built by `init`.
pub struct Csv;

#[sluice_guest::serde]
impl sluice_guest::Codec for Csv {
    fn init(config: Value) -> Result<(), Error> {
        let cfg: Config =
            serde_json::from_value(config).map_err(|e| Error::new(format!("csv: invalid config: {e}")))?;
        CODEC.set(CsvCodec::new(cfg)?).map_err(|_| Error::new("csv: init called twice"))
    }

    fn decode(payload: &[u8], _content_type: &str) -> Result<Vec<Event>, Error> {
        codec()?.decode(payload)
    }

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {
        codec()?.encode(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::{Codec, testing::parts};

    fn codec(config: &str) -> CsvCodec {
        CsvCodec::new(serde_json::from_str(config).unwrap()).unwrap()
    }

    fn bodies(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| parts(e).1).collect()
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn decodes_rows_into_json_objects_in_column_order() {
        let out = codec("{}").decode(b"name,age,city\nann,31,Paris\r\nbob,,\n").unwrap();
        assert_eq!(
            bodies(&out),
            [r#"{"name":"ann","age":"31","city":"Paris"}"#, r#"{"name":"bob","age":"","city":""}"#]
        );
    }

    #[test]
    fn handles_rfc4180_quoting() {
        let payload = "id,text\n1,\"a, b\"\n2,\"she said \"\"hi\"\"\"\n3,\"two\r\nlines\"\n\n4,\"\"\n";
        let out = codec("{}").decode(payload.as_bytes()).unwrap();
        assert_eq!(
            bodies(&out),
            [
                r#"{"id":"1","text":"a, b"}"#,
                r#"{"id":"2","text":"she said \"hi\""}"#,
                r#"{"id":"3","text":"two\r\nlines"}"#,
                r#"{"id":"4","text":""}"#,
            ]
        );
    }

    #[test]
    fn columns_rename_or_name_headerless_input() {
        let renamed = codec(r#"{"columns": ["x", "y"]}"#).decode(b"a,b\n1,2\n").unwrap();
        assert_eq!(bodies(&renamed), [r#"{"x":"1","y":"2"}"#]);
        let headerless =
            codec(r#"{"has_header": false, "columns": ["x", "y"], "delimiter": ";"}"#).decode(b"1;2\n3;4").unwrap();
        assert_eq!(bodies(&headerless), [r#"{"x":"1","y":"2"}"#, r#"{"x":"3","y":"4"}"#]);
        let tabs = codec(r#"{"delimiter": "\t"}"#).decode(b"a\tb\n1,5\t2\n").unwrap();
        assert_eq!(bodies(&tabs), [r#"{"a":"1,5","b":"2"}"#]);
    }

    #[test]
    fn copies_header_columns_into_headers() {
        let out = codec(r#"{"header_columns": ["city", "id"]}"#).decode(b"\xEF\xBB\xBFid,city\n7,Oslo\n").unwrap();
        let (headers, body) = parts(&out[0]);
        assert_eq!(headers, [("city".to_owned(), "Oslo".to_owned()), ("id".to_owned(), "7".to_owned())]);
        assert_eq!(body, r#"{"id":"7","city":"Oslo"}"#, "the BOM is not part of the first column's name");
        let err = codec(r#"{"header_columns": ["zip"]}"#).decode(b"id\n1\n").unwrap_err();
        assert!(err.0.contains("no column `zip`"), "{err}");
    }

    #[test]
    fn malformed_payloads_fail_naming_the_line() {
        let err = codec("{}").decode(b"a,b\n1,2\n1,2,3\n").unwrap_err();
        assert_eq!(err.0, "csv: line 3: 3 fields, expected 2");
        assert!(codec("{}").decode(b"a,a\n1,2\n").unwrap_err().0.contains("duplicate column `a`"));
        assert!(codec("{}").decode(b"a,\n1,2\n").unwrap_err().0.contains("column 2 has no name"));
        assert!(codec("{}").decode(b"a\n\xff\n").unwrap_err().0.contains("utf-8"));
        assert!(codec("{}").decode(b"").unwrap().is_empty());
        assert!(codec("{}").decode(b"a,b\n").unwrap().is_empty());
    }

    #[test]
    fn encodes_with_a_header_row_from_the_first_event() {
        let events = [
            Event::new(r#"{"name":"ann","note":"a, \"b\"","n":1.50,"ok":true,"nil":null}"#),
            Event::new(r#"{"note":"two\nlines","extra":"dropped","name":"bob"}"#),
        ];
        let out = text(codec("{}").encode(&events).unwrap());
        assert_eq!(out, "name,note,n,ok,nil\nann,\"a, \"\"b\"\"\",1.50,true,\nbob,\"two\nlines\",,,\n");
    }

    #[test]
    fn encode_honours_columns_delimiter_and_line_ending() {
        let c = codec(r#"{"columns": ["b", "a"], "delimiter": ";", "line_ending": "crlf"}"#);
        let out = text(c.encode(&[Event::new(r#"{"a":"x;y","b":{"k":[1]}}"#)]).unwrap());
        assert_eq!(out, "b;a\r\n\"{\"\"k\"\":[1]}\";\"x;y\"\r\n");
        let no_header = codec(r#"{"has_header": false, "columns": ["a"]}"#);
        assert_eq!(text(no_header.encode(&[Event::new(r#"{"a":1}"#)]).unwrap()), "1\n");
        assert!(codec("{}").encode(&[]).unwrap().is_empty());
    }

    #[test]
    fn encode_refuses_bodies_that_are_not_objects() {
        let err = codec("{}").encode(&[Event::new("{}"), Event::new("[1]")]).unwrap_err();
        assert_eq!(err.0, "csv: event 1: body is not a JSON object");
        assert!(codec("{}").encode(&[Event::new("a,b")]).unwrap_err().0.starts_with("csv: event 0: body is not JSON"));
    }

    #[test]
    fn round_trips_awkward_text() {
        let c = codec("{}");
        let original = [Event::new(r#"{"k":"a,b \"q\"\r\nnext","e":""}"#), Event::new(r#"{"k":" lead","e":"ü"}"#)];
        let decoded = c.decode(&c.encode(&original).unwrap()).unwrap();
        assert_eq!(bodies(&decoded), bodies(&original));
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = |c: &str| CsvCodec::new(serde_json::from_str(c).unwrap()).unwrap_err().0;
        assert!(err(r#"{"delimiter": ";;"}"#).contains("delimiter"));
        assert!(err(r#"{"delimiter": "\""}"#).contains("delimiter"));
        assert!(err(r#"{"has_header": false}"#).contains("needs `columns`"));
        assert!(err(r#"{"columns": ["a"], "header_columns": ["b"]}"#).contains("`b`"));
        assert!(err(r#"{"columns": ["a", "a"]}"#).contains("duplicate"));
        assert!(serde_json::from_str::<Config>(r#"{"headers": true}"#).is_err());
    }

    #[test]
    fn codec_entry_points_use_the_init_config() {
        assert!(Csv::init(serde_json::json!({"delimiter": 5})).unwrap_err().0.starts_with("csv: invalid config"));
        Csv::init(serde_json::json!({"delimiter": "|"})).unwrap();
        let events = Csv::decode(b"a|b\n1|2\n", "text/csv").unwrap();
        assert_eq!(text(Csv::encode(&events).unwrap()), "a|b\n1|2\n");
    }
}
