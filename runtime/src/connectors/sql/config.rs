//! Settings of the `sql` sink: each event becomes one row of one table in PostgreSQL or
//! MySQL/MariaDB, inserted (or upserted) in one transaction per batch.
//!
//! The database is named by `url` (`postgres://user:password@host:port/db` or
//! `mysql://...`, `mariadb://...`), kept in a [`Secret`] because it may carry a password:
//! `Debug` prints `***` and the sink logs only `host:port/db`. Write it as `"${DATABASE_URL}"`
//! to keep the password out of the file.
//!
//! `columns` maps each table column to where its value comes from, in file order:
//!
//! ```yaml
//! columns:
//!   id: { json: /id }             # a JSON pointer into the body
//!   name: { json: /user/name }
//!   origin: { header: source }    # an event header
//!   raw: body                     # the whole body, as text
//!   loader: { value: sluice }     # the same value on every row
//! ```
//!
//! Checks that need more than types (names, pointers, which options go together) are made by
//! the sink's constructor, each error naming its field.

use std::{fmt, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};

use sluice_core::config::{Secret, units::HumanDuration};

/// How rows are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlMode {
    /// Plain `INSERT`: a row whose key already exists is refused (and dead-lettered).
    #[default]
    Insert,
    /// Insert, or update the existing row with the same `key`: PostgreSQL
    /// `ON CONFLICT (key) DO UPDATE`, MySQL/MariaDB `ON DUPLICATE KEY UPDATE`. The last event
    /// for a key wins, within a batch too.
    Upsert,
    /// Insert, and leave a row whose `key` exists already as it is (PostgreSQL
    /// `ON CONFLICT (key) DO NOTHING`, MySQL/MariaDB `ON DUPLICATE KEY UPDATE k = k`); the
    /// event counts as delivered. Keyed on a column that holds the event id
    /// (`{ header: sluice.id }` with `event_id` on the source), a batch written again after
    /// a crash or a retry adds no row twice: an idempotent sink.
    InsertNew,
}

/// Where one column's value comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnSource {
    /// A JSON pointer (RFC 6901) into the body, e.g. `/user/name`, `/tags/0`; `""` is the
    /// whole body. A missing member or a JSON `null` is SQL NULL. The body must be JSON: an
    /// event whose body is not is dead-lettered.
    Json(String),
    /// An event header; NULL when the event does not have it.
    Header(String),
    /// The whole body as text (it must be UTF-8).
    Body,
    /// A constant written on every row (`null` for NULL).
    Value(serde_json::Value),
}

/// The column mapping, in the order written in the file (the order of the INSERT's columns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlColumns(pub Vec<(String, ColumnSource)>);

impl<'de> Deserialize<'de> for SqlColumns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Columns;

        impl<'de> Visitor<'de> for Columns {
            type Value = SqlColumns;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a mapping of column name to its source (`{ json: /pointer }`, `{ header: name }`, `body` or `{ value: ... }`)",
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SqlColumns, A::Error> {
                let mut out = Vec::new();
                while let Some((name, source)) = map.next_entry::<String, ColumnSource>()? {
                    out.push((name, source));
                }
                Ok(SqlColumns(out))
            }
        }

        d.deserialize_map(Columns)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSinkConfig {
    /// `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL (a secret: never logged).
    pub url: Secret,
    /// The table rows go to: `name` or `schema.name` (PostgreSQL schema, MySQL database).
    /// Names are quoted, so they match exactly as written.
    pub table: String,
    /// Column name → source of its value, in order.
    pub columns: SqlColumns,
    /// `insert` (default), `upsert` or `insert_new`.
    #[serde(default)]
    pub mode: SqlMode,
    /// `upsert` and `insert_new`: the columns of the primary key or unique index rows are
    /// matched on (they must be among `columns`; they are not updated).
    #[serde(default)]
    pub key: Vec<String>,
    /// How long connecting, and each statement, may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::{de::from_node, node::Node};

    fn parse(text: &str) -> Result<SqlSinkConfig, String> {
        let node = Node::parse(text, &|_| None).map_err(|e| e[0].message.clone())?;
        from_node::<SqlSinkConfig>(&node).map_err(|e| e.message)
    }

    #[test]
    fn columns_keep_their_order_and_shapes() {
        let c = parse(
            "url: postgres://u:hunter2@db/x
table: app.events
columns:
  zeta: { json: /id }
  alpha: { json: /user/name }
  mid: { header: source }
  raw: body
  n: { value: 5 }
  s: { value: sluice }
  z: { value: null }
mode: upsert
key: [zeta]
timeout: 5s
",
        )
        .unwrap();
        assert_eq!(
            c.columns.0,
            [
                ("zeta".to_owned(), ColumnSource::Json("/id".into())),
                ("alpha".to_owned(), ColumnSource::Json("/user/name".into())),
                ("mid".to_owned(), ColumnSource::Header("source".into())),
                ("raw".to_owned(), ColumnSource::Body),
                ("n".to_owned(), ColumnSource::Value(serde_json::json!(5))),
                (
                    "s".to_owned(),
                    ColumnSource::Value(serde_json::json!("sluice"))
                ),
                ("z".to_owned(), ColumnSource::Value(serde_json::Value::Null)),
            ]
        );
        assert_eq!(c.mode, SqlMode::Upsert);
        assert_eq!(c.key, ["zeta"]);
        assert_eq!(c.timeout.0, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = parse("url: mysql://root@h/db\ntable: t\ncolumns: { a: body }\n").unwrap();
        assert_eq!(c.mode, SqlMode::Insert);
        assert!(c.key.is_empty());
        assert_eq!(c.timeout.0, Duration::from_secs(30));
        let e = parse("url: x\ntable: t\ncolumns: { a: { jsn: /a } }\n").unwrap_err();
        assert!(e.contains("unknown variant `jsn`"), "{e}");
        let e = parse("url: x\ntable: t\ncolumns: [a]\n").unwrap_err();
        assert!(e.contains("mapping of column name"), "{e}");
        let e = parse("url: x\ntable: t\ncolumns: { a: body }\nmax_connections: 2\n").unwrap_err();
        assert!(e.contains("unknown field `max_connections`"), "{e}");
    }
}
