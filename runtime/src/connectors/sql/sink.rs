//! The `sql` sink: each event becomes one row of one table in PostgreSQL or MySQL/MariaDB,
//! and each batch is written in one transaction.
//!
//! Rows go out as multi-row `INSERT ... VALUES (...), (...)` statements (as many rows per
//! statement as the 65,535 bind parameters and a 4 MiB payload allow), or as upserts
//! (`ON CONFLICT (key) DO UPDATE` on PostgreSQL, `ON DUPLICATE KEY UPDATE` on MySQL/MariaDB).
//! Every value is bound as text and the database converts it: on PostgreSQL through an
//! explicit `CAST($n AS <column type>)`, with the types read from the catalog when connecting
//! (without length modifiers, so a too-long value is refused rather than cut); MySQL converts
//! strings by itself. From a JSON body: strings are bound unescaped, numbers exactly as
//! written (no float rounding), booleans as `true`/`false` (PostgreSQL) or `1`/`0` (MySQL),
//! objects and arrays as their JSON text, and a JSON `null` or a missing member as NULL.
//! Columns of a JSON type (`json`/`jsonb`, MySQL `JSON`, MariaDB's `JSON` alias with its
//! `json_valid` check) get the JSON text of any value, so a JSON string stays a JSON string.
//!
//! When a statement fails because of the data (SQLSTATE classes 21, 22, 23 and 54, a trigger's
//! `RAISE`/`SIGNAL`, or the MySQL errors of that kind), the transaction is rolled back and the
//! batch is written again one row at a time in one transaction, each row behind a savepoint:
//! the rows the database refuses go to the DLQ with its message, the others commit. Anything
//! else (connection loss, timeouts, deadlocks and serialization failures, a missing table or
//! column) makes the whole batch retriable; the connection is dropped (the server rolls back
//! what was left open) and made again on the next attempt, which also reads the table's
//! columns afresh. An event whose body is not JSON while a column reads from it is
//! dead-lettered before any SQL is sent.
//!
//! One connection per sink, not a pool: the sink writes one batch at a time in one
//! transaction, so a second connection would sit idle (and a pool pings every connection it
//! takes back, a round trip per batch). The url may carry a password: only `host:port/db` is
//! ever logged.

// With one database compiled in, the other's dialect, SQL text and error tables stay (they are
// plain logic, tested either way) but go unused.
#![cfg_attr(
    not(all(feature = "sql-postgres", feature = "sql-mysql")),
    allow(dead_code)
)]

use futures_util::future::BoxFuture;
use std::{
    fmt::Write as _,
    io,
    ops::Range,
    str::FromStr,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
#[cfg(feature = "sql-mysql")]
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError,
};
use sqlx::{ConnectOptions as _, Connection as _};
#[cfg(feature = "sql-postgres")]
use sqlx::{
    Postgres,
    postgres::{PgArguments, PgConnectOptions, PgConnection, PgDatabaseError},
};

use sluice_core::{
    event::Event,
    sink::{Batch, DeliveryError, Sink},
};

use super::config::{ColumnSource, SqlMode, SqlSinkConfig};

/// Bind parameters one statement may carry (both protocols count them in 16 bits).
const MAX_PARAMS: usize = 65_535;
/// Value bytes per statement, at most (a single larger row still goes alone): keeps each
/// statement well under MySQL's `max_allowed_packet`.
const CHUNK_BYTES: usize = 4 << 20;
/// Statement texts kept per connection (by row count); the server keeps them prepared.
const CACHED_STATEMENTS: usize = 8;
/// Longest table, schema or column name accepted (PostgreSQL's limit; MySQL allows 64).
const MAX_NAME: usize = 63;
/// A connection unused for longer is checked (one round trip) before the next batch: servers
/// and proxies close idle connections, and a batch should not fail and wait for that.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(60);

/// Settings the sink refuses; the text names the field.
#[derive(Debug, thiserror::Error)]
pub enum SqlConfigError {
    /// sqlx's own reading of the url (it never shows the password).
    #[error("`url`: {0}")]
    Url(#[source] sqlx::Error),
    #[error("`url`: PostgreSQL needs the `sql-postgres` feature")]
    NoPostgres,
    #[error("`url`: MySQL and MariaDB need the `sql-mysql` feature")]
    NoMySql,
    #[error("`url`: expected a postgres://, postgresql://, mysql:// or mariadb:// URL")]
    UrlScheme,
    #[error("`table`: {table:?}: {source}")]
    Table { table: String, source: NotPlainName },
    #[error("`columns` must map at least one column")]
    NoColumns,
    #[error("`columns`: at most {MAX_PARAMS} columns")]
    TooManyColumns,
    #[error("`columns`: {column:?}: {source}")]
    ColumnName {
        column: String,
        source: NotPlainName,
    },
    #[error("`columns.{column}.json`: {source}")]
    Pointer {
        column: String,
        source: PointerError,
    },
    #[error("`columns.{0}.header` must not be empty")]
    EmptyHeader(String),
    #[error("`key` applies to `mode: upsert` and `mode: insert_new`")]
    KeyWithoutUpsert,
    #[error(
        "`key` is required with `mode: upsert` and `mode: insert_new`: the columns of the \
         primary key or unique index to match rows on"
    )]
    NoKey,
    #[error("`key`: {0:?} is not one of `columns`")]
    KeyNotAColumn(String),
    #[error("`key`: {0:?} is listed twice")]
    KeyTwice(String),
    #[error("`timeout` must be more than 0")]
    ZeroTimeout,
}

/// A table, schema or column name outside what [`check_name`] accepts.
#[derive(Debug, thiserror::Error)]
#[error(
    "not a plain SQL name (letters, digits, `_` and `$`, not starting with a digit, at most \
     {MAX_NAME} characters)"
)]
pub struct NotPlainName;

#[derive(Debug, thiserror::Error)]
pub enum PointerError {
    #[error(
        "{0:?} is not a JSON pointer: it starts with `/` (e.g. `/user/name`), or is \"\" for \
         the whole body"
    )]
    NoSlash(String),
    #[error("{0:?}: `~` must be followed by 0 (for `~`) or 1 (for `/`)")]
    BadEscape(String),
}

/// Why connecting failed; the delivery is retried. Texts name the server, never the url.
#[derive(Debug, thiserror::Error)]
pub enum SqlOpenError {
    #[error("sql {server}: cannot connect: {source}")]
    Connect { server: String, source: sqlx::Error },
    #[error("sql {server}: cannot read the columns of {table}: {source}")]
    Columns {
        server: String,
        table: String,
        source: sqlx::Error,
    },
    #[error("sql {server}: table {table} not found (or it has no columns this user may see)")]
    NoTable { server: String, table: String },
    #[error(
        "sql {server}: table {table} has no column {column:?} (it has: {})",
        .existing.join(", ")
    )]
    NoColumn {
        server: String,
        table: String,
        column: String,
        existing: Vec<String>,
    },
}

/// Why one event cannot become a row: its rejection reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RowError {
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("column `{column}`: {source}")]
    Json {
        column: String,
        source: serde_json::Error,
    },
    #[error("column `{column}`: the body is not UTF-8 text")]
    NotUtf8 {
        column: String,
        source: std::str::Utf8Error,
    },
}

/// The SQL dialect, chosen by the url's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    /// Appends `name` quoted as an identifier (names are checked to hold no quotes).
    pub(super) fn quote(self, name: &str, out: &mut String) {
        let q = match self {
            Dialect::Postgres => '"',
            Dialect::MySql => '`',
        };
        out.push(q);
        out.push_str(name);
        out.push(q);
    }

    /// A JSON boolean as text the database turns into its boolean (MySQL's is TINYINT(1)).
    fn bool_text(self, b: bool) -> &'static str {
        match (self, b) {
            (Dialect::Postgres, true) => "true",
            (Dialect::Postgres, false) => "false",
            (Dialect::MySql, true) => "1",
            (Dialect::MySql, false) => "0",
        }
    }
}

/// How a column takes JSON values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Strings unescaped, booleans in the dialect's form, other values as JSON text.
    Text,
    /// A JSON column: every value as its JSON text.
    Json,
}

/// `name` or `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    schema: Option<String>,
    name: String,
}

impl Table {
    pub(super) fn parse(s: &str) -> Result<Table, SqlConfigError> {
        let (schema, name) = match s.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, s),
        };
        for part in schema.iter().chain([&name]) {
            check_name(part).map_err(|source| SqlConfigError::Table {
                table: s.to_owned(),
                source,
            })?;
        }
        Ok(Table {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    pub(super) fn quoted(&self, dialect: Dialect) -> String {
        let mut out = String::new();
        if let Some(s) = &self.schema {
            dialect.quote(s, &mut out);
            out.push('.');
        }
        dialect.quote(&self.name, &mut out);
        out
    }
}

/// Names are quoted in statements, so only plain ones are accepted: nothing to escape, and
/// no surprise about case (a quoted name matches exactly as written).
fn check_name(s: &str) -> Result<(), NotPlainName> {
    let plain = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    if plain && s.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(NotPlainName)
    }
}

/// One step of a JSON pointer: a member name, which is also an array index when numeric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    key: String,
    index: Option<usize>,
}

/// Parses an RFC 6901 JSON pointer (`""` is the whole document).
pub(crate) fn parse_pointer(p: &str) -> Result<Vec<Token>, PointerError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PointerError::NoSlash(p.to_owned()));
    };
    rest.split('/')
        .map(|t| {
            let mut key = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    key.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => key.push('~'),
                    Some('1') => key.push('/'),
                    _ => return Err(PointerError::BadEscape(p.to_owned())),
                }
            }
            let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
            let index = if canonical && key.bytes().all(|b| b.is_ascii_digit()) {
                key.parse().ok()
            } else {
                None
            };
            Ok(Token { key, index })
        })
        .collect()
}

/// A column's value source, checked and ready.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Json(Vec<Token>),
    Header(String),
    Body,
    /// A constant, rendered for a text column and for a JSON column (`None`: NULL).
    Literal {
        text: Option<String>,
        json: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: String,
    source: Source,
}

/// The text a constant is bound as, for a text column and for a JSON column.
fn literal(v: &serde_json::Value, dialect: Dialect) -> (Option<String>, Option<String>) {
    match v {
        serde_json::Value::Null => (None, None),
        serde_json::Value::String(s) => (Some(s.clone()), Some(v.to_string())),
        serde_json::Value::Bool(b) => (Some(dialect.bool_text(*b).to_owned()), Some(v.to_string())),
        other => (Some(other.to_string()), Some(other.to_string())),
    }
}

// ---------------------------------------------------------------- JSON values

/// Finds one member of a JSON object without building the object.
struct Member<'k>(&'k str);

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The whole object is read (the parser checks its end); the last duplicate wins.
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a member name with the one looked for, borrowing it when unescaped.
struct KeyIs<'k>(&'k str);

impl<'de> de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// Finds one element of a JSON array without building the array.
struct Element(usize);

impl<'de> Visitor<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        loop {
            if i == self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// Appends a JSON string's unescaped text.
struct PushStr<'o>(&'o mut String);

impl<'de> Visitor<'de> for PushStr<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

/// The value a pointer names in `root`, if there is one.
pub(crate) fn resolve<'a>(
    root: &'a RawValue,
    pointer: &[Token],
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut cur = root;
    for t in pointer {
        let text = cur.get();
        let mut de = serde_json::Deserializer::from_str(text);
        let next = match (text.as_bytes().first(), t.index) {
            (Some(b'{'), _) => (&mut de).deserialize_map(Member(&t.key))?,
            (Some(b'['), Some(i)) => (&mut de).deserialize_seq(Element(i))?,
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Appends the parameter text of a JSON value for a column of `kind`; false for NULL.
pub(crate) fn push_json(
    raw: &RawValue,
    kind: Kind,
    dialect: Dialect,
    out: &mut String,
) -> Result<bool, serde_json::Error> {
    let text = raw.get();
    match text.as_bytes().first() {
        None | Some(b'n') => return Ok(false),
        _ if kind == Kind::Json => out.push_str(text),
        Some(b'"') => {
            let mut de = serde_json::Deserializer::from_str(text);
            (&mut de).deserialize_str(PushStr(out))?;
        }
        Some(b't') => out.push_str(dialect.bool_text(true)),
        Some(b'f') => out.push_str(dialect.bool_text(false)),
        // Numbers exactly as written; objects and arrays as their JSON text.
        Some(_) => out.push_str(text),
    }
    Ok(true)
}

// ---------------------------------------------------------------- rows

/// The rows of one batch as text parameters: one string for all values, and per cell the
/// range of its text (`None` for NULL). Reused from batch to batch.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    text: String,
    cells: Vec<Option<(usize, usize)>>,
    /// The batch index of the event each row came from.
    events: Vec<usize>,
    width: usize,
}

impl Rows {
    fn len(&self) -> usize {
        self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Renders `batch` into rows; events that cannot be rows go to `rejected` instead.
    fn fill(
        &mut self,
        batch: &[Event],
        columns: &[Column],
        kinds: &[Kind],
        dialect: Dialect,
        rejected: &mut Vec<(usize, String)>,
    ) {
        self.text.clear();
        self.cells.clear();
        self.events.clear();
        self.width = columns.len();
        let needs_json = columns.iter().any(|c| matches!(c.source, Source::Json(_)));
        for (i, e) in batch.iter().enumerate() {
            let (text, cells) = (self.text.len(), self.cells.len());
            match self.push_row(e, columns, kinds, dialect, needs_json) {
                Ok(()) => self.events.push(i),
                Err(why) => {
                    self.text.truncate(text);
                    self.cells.truncate(cells);
                    rejected.push((i, why.to_string()));
                }
            }
        }
    }

    fn push_row(
        &mut self,
        e: &Event,
        columns: &[Column],
        kinds: &[Kind],
        dialect: Dialect,
        needs_json: bool,
    ) -> Result<(), RowError> {
        let root = if needs_json {
            Some(serde_json::from_slice::<&RawValue>(&e.body).map_err(RowError::NotJson)?)
        } else {
            None
        };
        for (c, &kind) in columns.iter().zip(kinds) {
            let start = self.text.len();
            let present = match &c.source {
                Source::Json(pointer) => {
                    let why = |source| RowError::Json {
                        column: c.name.clone(),
                        source,
                    };
                    let found = match root {
                        Some(r) => resolve(r, pointer).map_err(why)?,
                        None => None,
                    };
                    match found {
                        Some(v) => push_json(v, kind, dialect, &mut self.text).map_err(why)?,
                        None => false,
                    }
                }
                Source::Header(h) => match e.headers.get(h) {
                    Some(v) => {
                        self.text.push_str(v);
                        true
                    }
                    None => false,
                },
                Source::Body => {
                    let s = std::str::from_utf8(&e.body).map_err(|source| RowError::NotUtf8 {
                        column: c.name.clone(),
                        source,
                    })?;
                    self.text.push_str(s);
                    true
                }
                Source::Literal { text, json } => {
                    let v = match kind {
                        Kind::Text => text,
                        Kind::Json => json,
                    };
                    match v {
                        Some(v) => {
                            self.text.push_str(v);
                            true
                        }
                        None => false,
                    }
                }
            };
            self.cells.push(present.then_some((start, self.text.len())));
        }
        Ok(())
    }

    /// The parameters of rows `range`, row by row.
    fn values(&self, range: Range<usize>) -> impl Iterator<Item = Option<&str>> + '_ {
        self.cells[range.start * self.width..range.end * self.width]
            .iter()
            .map(|c| c.map(|(s, e)| &self.text[s..e]))
    }

    /// Bytes of value text in rows `range`.
    fn bytes(&self, range: Range<usize>) -> usize {
        self.cells[range.start * self.width..range.end * self.width]
            .iter()
            .map(|c| c.map_or(0, |(s, e)| e - s))
            .sum()
    }

    /// Where the statement starting at row `start` ends: at most `max_rows` rows and
    /// `max_bytes` of values (but at least one row).
    fn chunk_end(&self, start: usize, max_rows: usize, max_bytes: usize) -> usize {
        let mut end = start;
        let mut bytes = 0;
        while end < self.len() && end - start < max_rows {
            let b = self.bytes(end..end + 1);
            if end > start && bytes + b > max_bytes {
                break;
            }
            bytes += b;
            end += 1;
        }
        end
    }
}

// ---------------------------------------------------------------- statements

/// The parts of the INSERT that do not depend on the number of rows.
#[derive(Debug)]
pub(crate) struct InsertSql {
    dialect: Dialect,
    /// `INSERT INTO t (a, b) VALUES `
    head: String,
    /// PostgreSQL: the type each column's text parameter is cast to.
    casts: Vec<String>,
    width: usize,
    /// The upsert clause, or empty.
    tail: String,
}

impl InsertSql {
    pub(crate) fn new(
        dialect: Dialect,
        table: &Table,
        columns: &[&str],
        casts: Vec<String>,
        key: Option<&[String]>,
        keep_existing: bool,
    ) -> InsertSql {
        let mut head = String::from("INSERT INTO ");
        head.push_str(&table.quoted(dialect));
        head.push_str(" (");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                head.push_str(", ");
            }
            dialect.quote(c, &mut head);
        }
        head.push_str(") VALUES ");
        let mut tail = String::new();
        if let Some(key) = key {
            // `insert_new` updates nothing: an existing row stays as it is.
            let updated: Vec<&str> = columns
                .iter()
                .copied()
                .filter(|c| !keep_existing && !key.iter().any(|k| k == c))
                .collect();
            match dialect {
                Dialect::Postgres => {
                    tail.push_str(" ON CONFLICT (");
                    for (i, k) in key.iter().enumerate() {
                        if i > 0 {
                            tail.push_str(", ");
                        }
                        dialect.quote(k, &mut tail);
                    }
                    tail.push(')');
                    if updated.is_empty() {
                        tail.push_str(" DO NOTHING");
                    } else {
                        tail.push_str(" DO UPDATE SET ");
                        for (i, c) in updated.iter().enumerate() {
                            if i > 0 {
                                tail.push_str(", ");
                            }
                            dialect.quote(c, &mut tail);
                            tail.push_str(" = EXCLUDED.");
                            dialect.quote(c, &mut tail);
                        }
                    }
                }
                Dialect::MySql => {
                    tail.push_str(" ON DUPLICATE KEY UPDATE ");
                    if updated.is_empty() {
                        // Nothing to update: a no-op assignment keeps existing rows as they are.
                        dialect.quote(&key[0], &mut tail);
                        tail.push_str(" = ");
                        dialect.quote(&key[0], &mut tail);
                    }
                    for (i, c) in updated.iter().enumerate() {
                        if i > 0 {
                            tail.push_str(", ");
                        }
                        // VALUES(): MariaDB has no row alias, and MySQL still accepts it.
                        dialect.quote(c, &mut tail);
                        tail.push_str(" = VALUES(");
                        dialect.quote(c, &mut tail);
                        tail.push(')');
                    }
                }
            }
        }
        InsertSql {
            dialect,
            head,
            casts,
            width: columns.len(),
            tail,
        }
    }

    /// Writes the statement for `rows` rows into `out`.
    pub(crate) fn write(&self, rows: usize, out: &mut String) {
        out.clear();
        out.push_str(&self.head);
        let mut n = 0;
        for r in 0..rows {
            out.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..self.width {
                if c > 0 {
                    out.push_str(", ");
                }
                n += 1;
                match self.dialect {
                    // Writing into a String cannot fail.
                    Dialect::Postgres => {
                        let _ = write!(out, "CAST(${n} AS {})", self.casts[c]);
                    }
                    Dialect::MySql => out.push('?'),
                }
            }
            out.push(')');
        }
        out.push_str(&self.tail);
    }
}

/// Statement texts by row count, most recently used first: batches mostly come in a few
/// sizes, so a handful covers steady traffic without writing the text again.
#[derive(Debug)]
pub(crate) struct Statements {
    sql: InsertSql,
    cached: Vec<(usize, String)>,
}

impl Statements {
    pub(crate) fn new(sql: InsertSql) -> Statements {
        Statements {
            sql,
            cached: Vec::with_capacity(CACHED_STATEMENTS),
        }
    }

    /// The statement for `rows` rows.
    pub(crate) fn get(&mut self, rows: usize) -> &str {
        match self.cached.iter().position(|(n, _)| *n == rows) {
            Some(i) => self.cached[..=i].rotate_right(1),
            None => {
                let mut text = if self.cached.len() >= CACHED_STATEMENTS {
                    self.cached.pop().map(|(_, s)| s).unwrap_or_default()
                } else {
                    String::new()
                };
                self.sql.write(rows, &mut text);
                self.cached.insert(0, (rows, text));
            }
        }
        &self.cached[0].1
    }
}

// ---------------------------------------------------------------- errors

/// What a failed statement means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The data of some row was refused: find which, row by row.
    Row,
    /// Anything else: the batch may go through later.
    Retriable,
}

/// MySQL/MariaDB errors caused by a row's data whose SQLSTATE is not of class 22 or 23:
/// no default (1364), bad value (1366, 1292, 1367, 1411), truncated (1265, 1262), out of
/// range (1690, 1416), a trigger's SIGNAL (1644), MySQL's CHECK (3819), invalid JSON (3140).
const MYSQL_ROW_ERRORS: &[u16] = &[
    1048, 1062, 1262, 1263, 1264, 1265, 1292, 1364, 1366, 1367, 1406, 1411, 1416, 1451, 1452, 1586,
    1644, 1690, 3140, 3819, 4025,
];

/// MySQL/MariaDB errors that pass with time even where the SQLSTATE says otherwise: lock
/// wait timeout (1205), deadlock (1213), query interrupted or timed out (1317, 1969, 3024).
const MYSQL_RETRIABLE: &[u16] = &[1205, 1213, 1317, 1969, 3024];

/// Classifies a PostgreSQL SQLSTATE: cardinality (21: the same key twice in one upsert),
/// data exception (22), integrity constraint violation (23), program limit (54: a value too
/// big for an index) and a trigger's `RAISE EXCEPTION` (P0001) come from a row's data.
pub(crate) fn classify_postgres(code: &str) -> ErrorClass {
    match code.get(..2) {
        Some("21" | "22" | "23" | "54") => ErrorClass::Row,
        _ if code == "P0001" => ErrorClass::Row,
        _ => ErrorClass::Retriable,
    }
}

/// Classifies a MySQL/MariaDB error by its number, then by its SQLSTATE class.
pub(crate) fn classify_mysql(number: u16, sqlstate: Option<&str>) -> ErrorClass {
    if MYSQL_RETRIABLE.contains(&number) {
        return ErrorClass::Retriable;
    }
    if MYSQL_ROW_ERRORS.contains(&number) {
        return ErrorClass::Row;
    }
    match sqlstate.and_then(|s| s.get(..2)) {
        Some("22" | "23") => ErrorClass::Row,
        _ => ErrorClass::Retriable,
    }
}

/// Classifies any error: only the database's own refusals can be about a row.
pub(crate) fn classify(e: &sqlx::Error) -> ErrorClass {
    let Some(db) = e.as_database_error() else {
        return ErrorClass::Retriable;
    };
    #[cfg(feature = "sql-mysql")]
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        return classify_mysql(my.number(), my.code());
    }
    match db.code() {
        Some(code) => classify_postgres(&code),
        None => ErrorClass::Retriable,
    }
}

/// The database's own words for why a row was refused: the dead-letter reason.
pub(crate) fn reason(e: &sqlx::Error) -> String {
    let Some(db) = e.as_database_error() else {
        return e.to_string();
    };
    #[cfg(feature = "sql-postgres")]
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        let mut s = pg.message().to_owned();
        if let Some(detail) = pg.detail() {
            s.push_str(": ");
            s.push_str(detail);
        }
        let _ = write!(s, " (SQLSTATE {})", pg.code());
        return s;
    }
    #[cfg(feature = "sql-mysql")]
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        return match my.code() {
            Some(state) => format!("{} (error {}, SQLSTATE {state})", my.message(), my.number()),
            None => format!("{} (error {})", my.message(), my.number()),
        };
    }
    db.to_string()
}

/// `f`, or a timed-out I/O error after `limit` (the connection is then dropped).
pub(super) async fn timed<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(sqlx::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {}", humantime::format_duration(limit)),
        ))),
    }
}

// ---------------------------------------------------------------- connection

/// How to connect, by dialect.
pub(super) enum Options {
    #[cfg(feature = "sql-postgres")]
    Pg(PgConnectOptions),
    #[cfg(feature = "sql-mysql")]
    My(MySqlConnectOptions),
}

/// A column as the database describes it.
#[derive(Debug)]
struct Found {
    name: String,
    /// PostgreSQL: the type to cast text parameters to.
    cast: String,
    json: bool,
}

/// The columns of a table with the type to cast to (bpchar and bit without a length would
/// mean length 1, so their unbounded forms are used) and whether each is a JSON type.
#[cfg(feature = "sql-postgres")]
const PG_COLUMNS: &str = "SELECT a.attname::text,
       CASE a.atttypid
         WHEN 'bpchar'::regtype THEN 'bpchar'
         WHEN 'bpchar[]'::regtype THEN 'bpchar[]'
         WHEN 'bit'::regtype THEN 'varbit'
         WHEN 'bit[]'::regtype THEN 'varbit[]'
         ELSE format_type(a.atttypid, NULL)
       END,
       a.atttypid IN ('json'::regtype, 'jsonb'::regtype)
  FROM pg_attribute a
 WHERE a.attrelid = CAST($1 AS regclass) AND a.attnum > 0 AND NOT a.attisdropped";

#[cfg(feature = "sql-mysql")]
const MY_COLUMNS: &str = "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR)
  FROM information_schema.COLUMNS
 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";

/// MariaDB's `JSON` is `LONGTEXT` with a `json_valid(col)` check; MySQL has no TABLE_NAME
/// here (its JSON type says so itself), so a failure only means "no such checks".
#[cfg(feature = "sql-mysql")]
const MY_CHECKS: &str = "SELECT CAST(CHECK_CLAUSE AS CHAR)
  FROM information_schema.CHECK_CONSTRAINTS
 WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";

pub(super) enum Conn {
    #[cfg(feature = "sql-postgres")]
    Pg(PgConnection),
    #[cfg(feature = "sql-mysql")]
    My(MySqlConnection),
}

impl Options {
    pub(super) async fn connect(&self) -> Result<Conn, sqlx::Error> {
        match self {
            #[cfg(feature = "sql-postgres")]
            Options::Pg(o) => o.connect().await.map(Conn::Pg),
            #[cfg(feature = "sql-mysql")]
            Options::My(o) => o.connect().await.map(Conn::My),
        }
    }
}

impl Conn {
    /// Runs a statement without parameters (transaction control) as plain text.
    ///
    /// This and the other calls into sqlx return boxed futures with named lifetimes: written
    /// as plain `async fn`s, the compiler cannot prove the sink's future `Send` (sqlx's
    /// `Executor` is implemented for `&'c mut Connection`, a higher-ranked bound).
    fn run<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            match self {
                // A `&str` without arguments goes as a simple (text) query.
                #[cfg(feature = "sql-postgres")]
                Conn::Pg(c) => sqlx::Executor::execute(&mut *c, sql).await.map(drop),
                #[cfg(feature = "sql-mysql")]
                Conn::My(c) => sqlx::Executor::execute(&mut *c, sql).await.map(drop),
            }
        })
    }

    /// Runs `sql` with the values of rows `range` bound in order.
    fn insert<'a>(
        &'a mut self,
        sql: &'a str,
        rows: &'a Rows,
        range: Range<usize>,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.insert_inner(sql, rows, range))
    }

    async fn insert_inner(
        &mut self,
        sql: &str,
        rows: &Rows,
        range: Range<usize>,
    ) -> Result<(), sqlx::Error> {
        let params = (range.end - range.start) * rows.width;
        let bytes = rows.bytes(range.clone());
        match self {
            #[cfg(feature = "sql-postgres")]
            Conn::Pg(c) => {
                let mut args = PgArguments::default();
                // Each value carries a 4-byte length.
                sqlx::Arguments::reserve(&mut args, params, bytes + 4 * params);
                for v in rows.values(range) {
                    sqlx::Arguments::add(&mut args, v).map_err(sqlx::Error::Encode)?;
                }
                sqlx::query_with::<Postgres, _>(sql, args)
                    .execute(&mut *c)
                    .await
                    .map(drop)
            }
            #[cfg(feature = "sql-mysql")]
            Conn::My(c) => {
                let mut args = MySqlArguments::default();
                sqlx::Arguments::reserve(&mut args, params, bytes + 9 * params);
                for v in rows.values(range) {
                    sqlx::Arguments::add(&mut args, v).map_err(sqlx::Error::Encode)?;
                }
                sqlx::query_with::<MySql, _>(sql, args)
                    .execute(&mut *c)
                    .await
                    .map(drop)
            }
        }
    }

    /// The table's columns; empty when it has none this user can see.
    fn columns<'a>(
        &'a mut self,
        table: &'a Table,
    ) -> BoxFuture<'a, Result<Vec<Found>, sqlx::Error>> {
        Box::pin(self.columns_inner(table))
    }

    async fn columns_inner(&mut self, table: &Table) -> Result<Vec<Found>, sqlx::Error> {
        match self {
            #[cfg(feature = "sql-postgres")]
            Conn::Pg(c) => {
                let rows = sqlx::query_as::<Postgres, (String, String, bool)>(PG_COLUMNS)
                    .bind(table.quoted(Dialect::Postgres))
                    .fetch_all(&mut *c)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, cast, json)| Found { name, cast, json })
                    .collect())
            }
            #[cfg(feature = "sql-mysql")]
            Conn::My(c) => {
                let schema = table.schema.as_deref();
                let rows = sqlx::query_as::<MySql, (String, String)>(MY_COLUMNS)
                    .bind(schema)
                    .bind(table.name.as_str())
                    .fetch_all(&mut *c)
                    .await?;
                let checks = if rows
                    .iter()
                    .any(|(_, ty)| ty.eq_ignore_ascii_case("longtext"))
                {
                    sqlx::query_scalar::<MySql, String>(MY_CHECKS)
                        .bind(schema)
                        .bind(table.name.as_str())
                        .fetch_all(&mut *c)
                        .await
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok(rows
                    .into_iter()
                    .map(|(name, ty)| {
                        let check = format!("json_valid(`{name}`)");
                        let json = ty.eq_ignore_ascii_case("json")
                            || checks.iter().any(|c| c.eq_ignore_ascii_case(&check));
                        Found {
                            name,
                            cast: ty,
                            json,
                        }
                    })
                    .collect())
            }
        }
    }

    async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "sql-postgres")]
            Conn::Pg(c) => c.ping().await,
            #[cfg(feature = "sql-mysql")]
            Conn::My(c) => c.ping().await,
        }
    }

    async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "sql-postgres")]
            Conn::Pg(c) => c.close().await,
            #[cfg(feature = "sql-mysql")]
            Conn::My(c) => c.close().await,
        }
    }
}

/// An open connection and what was learnt about the table through it.
struct Live {
    conn: Conn,
    /// Per column, in `columns` order.
    kinds: Vec<Kind>,
    statements: Statements,
    /// When the last batch went through it.
    used: Instant,
}

impl Live {
    /// Writes every row in one transaction, in multi-row statements.
    async fn write_batch(&mut self, rows: &Rows, limit: Duration) -> Result<(), sqlx::Error> {
        timed(limit, self.conn.run("BEGIN")).await?;
        let max_rows = (MAX_PARAMS / rows.width.max(1)).max(1);
        let mut start = 0;
        while start < rows.len() {
            let end = rows.chunk_end(start, max_rows, CHUNK_BYTES);
            let sql = self.statements.get(end - start);
            timed(limit, self.conn.insert(sql, rows, start..end)).await?;
            start = end;
        }
        timed(limit, self.conn.run("COMMIT")).await
    }

    /// Writes the rows one by one in one transaction, each behind a savepoint: returns the
    /// rows the database refused (by event index, with its message) once the rest committed.
    async fn write_rows(
        &mut self,
        rows: &Rows,
        limit: Duration,
    ) -> Result<Vec<(usize, String)>, sqlx::Error> {
        let mut refused = Vec::new();
        timed(limit, self.conn.run("BEGIN")).await?;
        #[cfg(feature = "sql-postgres")]
        if matches!(self.conn, Conn::Pg(_)) {
            // Deferred constraints would fail only at COMMIT, for the whole batch: checked
            // per row here, the offending row is found behind its savepoint.
            timed(limit, self.conn.run("SET CONSTRAINTS ALL IMMEDIATE")).await?;
        }
        for r in 0..rows.len() {
            timed(limit, self.conn.run("SAVEPOINT sluice_row")).await?;
            let sql = self.statements.get(1);
            match timed(limit, self.conn.insert(sql, rows, r..r + 1)).await {
                Ok(()) => {}
                Err(e) if classify(&e) == ErrorClass::Row => {
                    timed(limit, self.conn.run("ROLLBACK TO SAVEPOINT sluice_row")).await?;
                    refused.push((rows.events[r], reason(&e)));
                }
                Err(e) => return Err(e),
            }
            timed(limit, self.conn.run("RELEASE SAVEPOINT sluice_row")).await?;
        }
        timed(limit, self.conn.run("COMMIT")).await?;
        Ok(refused)
    }

    /// Writes `rows`: all at once, or, when the data of some row was refused, row by row.
    /// After an error the transaction may still be open: the connection must be dropped.
    async fn write(
        &mut self,
        rows: &Rows,
        limit: Duration,
    ) -> Result<Vec<(usize, String)>, sqlx::Error> {
        let first = match self.write_batch(rows, limit).await {
            Ok(()) => return Ok(Vec::new()),
            Err(e) => e,
        };
        if classify(&first) != ErrorClass::Row {
            return Err(first);
        }
        timed(limit, self.conn.run("ROLLBACK")).await?;
        self.write_rows(rows, limit).await
    }
}

// ---------------------------------------------------------------- the sink

pub struct SqlSink {
    target: Target,
    live: Option<Live>,
    rows: Rows,
}

/// What the sink writes to and how: everything but the connection, so connecting borrows
/// only this.
struct Target {
    name: String,
    dialect: Dialect,
    options: Options,
    /// `host:port/db`, for logs (never the url: it may hold a password).
    server: String,
    table: Table,
    columns: Vec<Column>,
    /// `upsert` and `insert_new`: the key columns.
    key: Option<Vec<String>>,
    /// `insert_new`: a row whose key exists is kept as it is.
    keep_existing: bool,
    timeout: Duration,
}

/// The dialect, connect options and `host:port/db` (for logs) of a database url.
pub(super) fn connect_options(url: &str) -> Result<(Dialect, Options, String), SqlConfigError> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let cache = CACHED_STATEMENTS + 4;
    Ok(match scheme.as_str() {
        #[cfg(feature = "sql-postgres")]
        "postgres" | "postgresql" => {
            let o = PgConnectOptions::from_str(url)
                .map_err(SqlConfigError::Url)?
                .application_name("sluice")
                .statement_cache_capacity(cache)
                .disable_statement_logging();
            let server = server_name(o.get_host(), o.get_port(), o.get_database());
            (Dialect::Postgres, Options::Pg(o), server)
        }
        #[cfg(feature = "sql-mysql")]
        "mysql" | "mariadb" => {
            let o = MySqlConnectOptions::from_str(url)
                .map_err(SqlConfigError::Url)?
                .statement_cache_capacity(cache)
                .disable_statement_logging();
            let server = server_name(o.get_host(), o.get_port(), o.get_database());
            (Dialect::MySql, Options::My(o), server)
        }
        #[cfg(not(feature = "sql-postgres"))]
        "postgres" | "postgresql" => {
            return Err(SqlConfigError::NoPostgres);
        }
        #[cfg(not(feature = "sql-mysql"))]
        "mysql" | "mariadb" => {
            return Err(SqlConfigError::NoMySql);
        }
        _ => return Err(SqlConfigError::UrlScheme),
    })
}

impl SqlSink {
    /// Checks the settings and parses the url; connects on the first delivery.
    pub fn new(name: &str, cfg: &SqlSinkConfig) -> Result<Self, SqlConfigError> {
        let (dialect, options, server) = connect_options(cfg.url.expose())?;
        let table = Table::parse(&cfg.table)?;
        if cfg.columns.0.is_empty() {
            return Err(SqlConfigError::NoColumns);
        }
        if cfg.columns.0.len() > MAX_PARAMS {
            return Err(SqlConfigError::TooManyColumns);
        }
        let mut columns = Vec::with_capacity(cfg.columns.0.len());
        for (col, source) in &cfg.columns.0 {
            check_name(col).map_err(|source| SqlConfigError::ColumnName {
                column: col.clone(),
                source,
            })?;
            let source = match source {
                ColumnSource::Json(p) => {
                    Source::Json(parse_pointer(p).map_err(|source| SqlConfigError::Pointer {
                        column: col.clone(),
                        source,
                    })?)
                }
                ColumnSource::Header(h) if h.is_empty() => {
                    return Err(SqlConfigError::EmptyHeader(col.clone()));
                }
                ColumnSource::Header(h) => Source::Header(h.clone()),
                ColumnSource::Body => Source::Body,
                ColumnSource::Value(v) => {
                    let (text, json) = literal(v, dialect);
                    Source::Literal { text, json }
                }
            };
            columns.push(Column {
                name: col.clone(),
                source,
            });
        }
        let key = match cfg.mode {
            SqlMode::Insert if !cfg.key.is_empty() => return Err(SqlConfigError::KeyWithoutUpsert),
            SqlMode::Insert => None,
            SqlMode::Upsert | SqlMode::InsertNew if cfg.key.is_empty() => {
                return Err(SqlConfigError::NoKey);
            }
            SqlMode::Upsert | SqlMode::InsertNew => {
                for (i, k) in cfg.key.iter().enumerate() {
                    if !columns.iter().any(|c| &c.name == k) {
                        return Err(SqlConfigError::KeyNotAColumn(k.clone()));
                    }
                    if cfg.key[..i].contains(k) {
                        return Err(SqlConfigError::KeyTwice(k.clone()));
                    }
                }
                Some(cfg.key.clone())
            }
        };
        if cfg.timeout.0.is_zero() {
            return Err(SqlConfigError::ZeroTimeout);
        }
        Ok(SqlSink {
            target: Target {
                name: name.to_owned(),
                dialect,
                options,
                server,
                table,
                columns,
                key,
                keep_existing: cfg.mode == SqlMode::InsertNew,
                timeout: cfg.timeout.0,
            },
            live: None,
            rows: Rows::default(),
        })
    }
}

impl Target {
    /// Connects, reads the table's columns and prepares the statement texts. The error is
    /// the reason to retry.
    async fn open(&self) -> Result<Live, SqlOpenError> {
        let limit = self.timeout;
        let mut conn = timed(limit, self.options.connect())
            .await
            .map_err(|source| SqlOpenError::Connect {
                server: self.server.clone(),
                source,
            })?;
        let table = self.table.quoted(self.dialect);
        let found = timed(limit, conn.columns(&self.table))
            .await
            .map_err(|source| SqlOpenError::Columns {
                server: self.server.clone(),
                table: table.clone(),
                source,
            })?;
        if found.is_empty() {
            return Err(SqlOpenError::NoTable {
                server: self.server.clone(),
                table,
            });
        }
        let mut kinds = Vec::with_capacity(self.columns.len());
        let mut casts = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            // PostgreSQL matches quoted names exactly; MySQL column names ignore case.
            let f = found.iter().find(|f| match self.dialect {
                Dialect::Postgres => f.name == c.name,
                Dialect::MySql => f.name.eq_ignore_ascii_case(&c.name),
            });
            let Some(f) = f else {
                return Err(SqlOpenError::NoColumn {
                    server: self.server.clone(),
                    table,
                    column: c.name.clone(),
                    existing: found.into_iter().map(|f| f.name).collect(),
                });
            };
            kinds.push(if f.json { Kind::Json } else { Kind::Text });
            if self.dialect == Dialect::Postgres {
                casts.push(f.cast.clone());
            }
        }
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        let sql = InsertSql::new(
            self.dialect,
            &self.table,
            &names,
            casts,
            self.key.as_deref(),
            self.keep_existing,
        );
        tracing::info!(sink = %self.name, server = %self.server, table = %table, "connected to the database");
        Ok(Live {
            conn,
            kinds,
            statements: Statements::new(sql),
            used: Instant::now(),
        })
    }
}

/// `host:port/db` for logs.
fn server_name(host: &str, port: u16, db: Option<&str>) -> String {
    match db {
        Some(db) => format!("{host}:{port}/{db}"),
        None => format!("{host}:{port}"),
    }
}

#[async_trait]
impl Sink for SqlSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let target = &self.target;
        let mut live = match self.live.take() {
            Some(mut live) if live.used.elapsed() > CHECK_AFTER_IDLE => {
                let alive = timed(target.timeout, live.conn.ping()).await;
                match alive {
                    Ok(()) => live,
                    Err(e) => {
                        tracing::info!(sink = %target.name, server = %target.server, error = %e, "idle database connection lost; connecting again");
                        drop(live);
                        target.open().await.map_err(DeliveryError::retriable)?
                    }
                }
            }
            Some(live) => live,
            None => target.open().await.map_err(DeliveryError::retriable)?,
        };
        let mut rejected = Vec::new();
        self.rows.fill(
            batch,
            &target.columns,
            &live.kinds,
            target.dialect,
            &mut rejected,
        );
        if !self.rows.is_empty() {
            let written = live.write(&self.rows, target.timeout).await;
            match written {
                Ok(refused) => rejected.extend(refused),
                Err(error) => {
                    // The connection is dropped (the server rolls back what is left open):
                    // the next attempt connects again and reads the table's columns afresh.
                    drop(live);
                    let reason = format!("sql {}: {error}", target.server);
                    if rejected.is_empty() {
                        return Err(DeliveryError::Retriable {
                            reason,
                            retry_after: None,
                        });
                    }
                    tracing::warn!(sink = %target.name, error = %reason, "batch failed; its rows will be retried");
                    return Err(DeliveryError::Partial {
                        rejected,
                        retriable: self.rows.events.clone(),
                    });
                }
            }
        }
        live.used = Instant::now();
        self.live = Some(live);
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(DeliveryError::Partial {
                rejected,
                retriable: Vec::new(),
            })
        }
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        if let Some(live) = self.live.take() {
            let _ = tokio::time::timeout(self.target.timeout, live.conn.close()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::sql::config::{SqlColumns, SqlMode};
    use sluice_core::config::{Secret, units::HumanDuration};

    fn cfg(url: &str) -> SqlSinkConfig {
        SqlSinkConfig {
            url: Secret::new(url),
            table: "events".into(),
            columns: SqlColumns(vec![
                ("id".into(), ColumnSource::Json("/id".into())),
                ("name".into(), ColumnSource::Json("/user/name".into())),
                ("origin".into(), ColumnSource::Header("source".into())),
            ]),
            mode: SqlMode::Insert,
            key: Vec::new(),
            timeout: HumanDuration(Duration::from_secs(5)),
        }
    }

    fn table(s: &str) -> Table {
        Table::parse(s).unwrap()
    }

    fn sql(dialect: Dialect, casts: &[&str], key: Option<&[String]>, rows: usize) -> String {
        let s = InsertSql::new(
            dialect,
            &table("app.t"),
            &["id", "name", "n"],
            casts.iter().map(|c| (*c).to_owned()).collect(),
            key,
            false,
        );
        let mut out = String::from("junk");
        s.write(rows, &mut out);
        out
    }

    #[test]
    fn insert_and_upsert_statements() {
        let casts = ["integer", "text", "numeric"];
        assert_eq!(
            sql(Dialect::Postgres, &casts, None, 2),
            r#"INSERT INTO "app"."t" ("id", "name", "n") VALUES (CAST($1 AS integer), CAST($2 AS text), CAST($3 AS numeric)), (CAST($4 AS integer), CAST($5 AS text), CAST($6 AS numeric))"#
        );
        let key = ["id".to_owned()];
        assert_eq!(
            sql(Dialect::Postgres, &casts, Some(&key), 1),
            r#"INSERT INTO "app"."t" ("id", "name", "n") VALUES (CAST($1 AS integer), CAST($2 AS text), CAST($3 AS numeric)) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "n" = EXCLUDED."n""#
        );
        let all = ["id".to_owned(), "name".to_owned(), "n".to_owned()];
        assert!(
            sql(Dialect::Postgres, &casts, Some(&all), 1)
                .ends_with(r#" ON CONFLICT ("id", "name", "n") DO NOTHING"#)
        );
        assert_eq!(
            sql(Dialect::MySql, &[], None, 3),
            "INSERT INTO `app`.`t` (`id`, `name`, `n`) VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)"
        );
        assert_eq!(
            sql(Dialect::MySql, &[], Some(&key), 1),
            "INSERT INTO `app`.`t` (`id`, `name`, `n`) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE `name` = VALUES(`name`), `n` = VALUES(`n`)"
        );
        assert!(
            sql(Dialect::MySql, &[], Some(&all), 1)
                .ends_with(" ON DUPLICATE KEY UPDATE `id` = `id`")
        );
        let new_only = InsertSql::new(
            Dialect::Postgres,
            &table("t"),
            &["id", "v"],
            vec!["text".into(), "text".into()],
            Some(&key),
            true,
        );
        let mut out = String::new();
        new_only.write(1, &mut out);
        assert!(out.ends_with(r#" ON CONFLICT ("id") DO NOTHING"#), "{out}");
        let new_only = InsertSql::new(
            Dialect::MySql,
            &table("t"),
            &["id", "v"],
            Vec::new(),
            Some(&key),
            true,
        );
        let mut out = String::new();
        new_only.write(1, &mut out);
        assert!(
            out.ends_with(" ON DUPLICATE KEY UPDATE `id` = `id`"),
            "{out}"
        );
        let plain = InsertSql::new(Dialect::MySql, &table("t"), &["a"], Vec::new(), None, false);
        let mut out = String::new();
        plain.write(1, &mut out);
        assert_eq!(out, "INSERT INTO `t` (`a`) VALUES (?)");
    }

    #[test]
    fn statement_texts_are_cached_by_row_count() {
        let s = InsertSql::new(Dialect::MySql, &table("t"), &["a"], Vec::new(), None, false);
        let mut st = Statements::new(s);
        assert_eq!(st.get(2), "INSERT INTO `t` (`a`) VALUES (?), (?)");
        assert_eq!(st.get(1), "INSERT INTO `t` (`a`) VALUES (?)");
        assert_eq!(st.get(2), "INSERT INTO `t` (`a`) VALUES (?), (?)");
        assert_eq!(
            st.cached.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [2, 1]
        );
        for n in 3..20 {
            st.get(n);
        }
        assert_eq!(st.cached.len(), CACHED_STATEMENTS);
        assert_eq!(st.cached[0].0, 19);
        assert!(
            st.cached
                .iter()
                .all(|(n, text)| text.matches('?').count() == *n)
        );
    }

    #[test]
    fn pointers() {
        assert!(parse_pointer("").unwrap().is_empty());
        let p = parse_pointer("/a~1b/~0c/0/07/").unwrap();
        let keys: Vec<(&str, Option<usize>)> =
            p.iter().map(|t| (t.key.as_str(), t.index)).collect();
        assert_eq!(
            keys,
            [
                ("a/b", None),
                ("~c", None),
                ("0", Some(0)),
                ("07", None),
                ("", None)
            ]
        );
        assert_eq!(
            parse_pointer("id").unwrap_err().to_string(),
            r#""id" is not a JSON pointer: it starts with `/` (e.g. `/user/name`), or is "" for the whole body"#
        );
        assert_eq!(
            parse_pointer("/a~2").unwrap_err().to_string(),
            r#""/a~2": `~` must be followed by 0 (for `~`) or 1 (for `/`)"#
        );
    }

    fn columns(spec: &[(&str, ColumnSource)], dialect: Dialect) -> Vec<Column> {
        let mut c = cfg(match dialect {
            Dialect::Postgres => "postgres://h/db",
            Dialect::MySql => "mysql://h/db",
        });
        c.columns = SqlColumns(
            spec.iter()
                .map(|(n, s)| ((*n).to_owned(), s.clone()))
                .collect(),
        );
        SqlSink::new("s", &c).unwrap().target.columns
    }

    /// The rows of `batch` as text, plus the rejected events.
    /// Each row's values, and the refused events with their reasons.
    type Rendered = (Vec<Vec<Option<String>>>, Vec<(usize, String)>);

    fn render(
        spec: &[(&str, ColumnSource)],
        kinds: &[Kind],
        dialect: Dialect,
        batch: &[Event],
    ) -> Rendered {
        let cols = columns(spec, dialect);
        let mut rows = Rows::default();
        let mut rejected = Vec::new();
        rows.fill(batch, &cols, kinds, dialect, &mut rejected);
        let out = (0..rows.len())
            .map(|r| {
                rows.values(r..r + 1)
                    .map(|v| v.map(str::to_owned))
                    .collect()
            })
            .collect();
        (out, rejected)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn json_values_become_text_parameters() {
        let spec = [
            ("a", ColumnSource::Json("/s".into())),
            ("b", ColumnSource::Json("/n".into())),
            ("c", ColumnSource::Json("/t".into())),
            ("d", ColumnSource::Json("/f".into())),
            ("e", ColumnSource::Json("/o".into())),
            ("f", ColumnSource::Json("/z".into())),
            ("g", ColumnSource::Json("/missing".into())),
            ("h", ColumnSource::Json("/o/x/1".into())),
            ("i", ColumnSource::Json("/s".into())),
            ("j", ColumnSource::Json("".into())),
            ("k", ColumnSource::Header("source".into())),
            ("l", ColumnSource::Header("absent".into())),
            ("m", ColumnSource::Body),
            ("n", ColumnSource::Value(serde_json::json!("lit"))),
            ("o", ColumnSource::Value(serde_json::json!(true))),
            ("p", ColumnSource::Value(serde_json::Value::Null)),
            ("q", ColumnSource::Json("/a~1b".into())),
            ("r", ColumnSource::Json("/s/0".into())),
        ];
        let body = r#"{"s":"tab\t \"q\" \u00fc","n":12345678901234567890.0123456789,"t":true,"f":false,"o":{"x":[1, "two"]},"z":null,"a/b":-0.5e3,"s":"last wins \u00fc"}"#;
        let batch = [Event::new(body).with_header("source", "api")];
        let mut kinds = vec![Kind::Text; spec.len()];
        kinds[8] = Kind::Json;
        kinds[14] = Kind::Json;
        let (rows, rejected) = render(&spec, &kinds, Dialect::Postgres, &batch);
        assert!(rejected.is_empty(), "{rejected:?}");
        let want = vec![
            s("last wins ü"),
            s("12345678901234567890.0123456789"),
            s("true"),
            s("false"),
            s(r#"{"x":[1, "two"]}"#),
            None,
            None,
            s("two"),
            s(r#""last wins \u00fc""#),
            s(body),
            s("api"),
            None,
            s(body),
            s("lit"),
            s("true"),
            None,
            s("-0.5e3"),
            None,
        ];
        assert_eq!(rows, [want]);

        // MySQL booleans are 1/0; a JSON column keeps JSON text.
        let (rows, _) = render(&spec, &kinds, Dialect::MySql, &batch);
        assert_eq!(rows[0][2], s("1"));
        assert_eq!(rows[0][3], s("0"));
        assert_eq!(rows[0][13], s("lit"));
        assert_eq!(rows[0][14], s("true"));
    }

    #[test]
    fn events_that_cannot_be_rows_are_rejected_alone() {
        let spec = [
            ("id", ColumnSource::Json("/id".into())),
            ("raw", ColumnSource::Body),
        ];
        let batch = [
            Event::new(r#"{"id":1}"#),
            Event::new("not json"),
            Event::new(&b"{\"id\":\"\xff\"}"[..]),
            Event::new(r#"[{"id":4}]"#),
            Event::new(r#"{"id":5} trailing"#),
            Event::new(r#"{"id":"6"}"#),
        ];
        let kinds = [Kind::Text, Kind::Text];
        let (rows, rejected) = render(&spec, &kinds, Dialect::Postgres, &batch);
        assert_eq!(
            rows,
            [
                vec![s("1"), s(r#"{"id":1}"#)],
                vec![None, s(r#"[{"id":4}]"#)],
                vec![s("6"), s(r#"{"id":"6"}"#)],
            ]
        );
        let idx: Vec<usize> = rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [1, 2, 4]);
        assert!(
            rejected
                .iter()
                .all(|(_, why)| why.starts_with("body is not JSON")),
            "{rejected:?}"
        );

        // Without JSON columns the body need not be JSON, but a body column needs UTF-8.
        let spec = [("raw", ColumnSource::Body)];
        let batch = [Event::new("plain"), Event::new(&b"\xff"[..])];
        let (rows, rejected) = render(&spec, &[Kind::Text], Dialect::MySql, &batch);
        assert_eq!(rows, [vec![s("plain")]]);
        assert_eq!(
            rejected,
            [(1, "column `raw`: the body is not UTF-8 text".to_owned())]
        );
    }

    #[test]
    fn rows_are_chunked_by_count_and_bytes() {
        let spec = [("v", ColumnSource::Body)];
        let batch: Vec<Event> = ["aaaa", "bb", "cccccc", "d", "eeeeeeeeee"]
            .iter()
            .map(|b| Event::new(*b))
            .collect();
        let cols = columns(&spec, Dialect::MySql);
        let mut rows = Rows::default();
        rows.fill(
            &batch,
            &cols,
            &[Kind::Text],
            Dialect::MySql,
            &mut Vec::new(),
        );
        assert_eq!(rows.chunk_end(0, 2, 100), 2);
        assert_eq!(rows.chunk_end(2, 10, 100), 5);
        assert_eq!(rows.chunk_end(0, 10, 6), 2);
        assert_eq!(rows.chunk_end(2, 10, 6), 3);
        // A row larger than the limit still goes, alone.
        assert_eq!(rows.chunk_end(4, 10, 6), 5);
        assert_eq!(rows.bytes(0..5), 23);
    }

    #[test]
    fn errors_are_classified() {
        for code in [
            "23505", "23502", "23503", "23514", "22P02", "22001", "22003", "21000", "54000",
            "P0001",
        ] {
            assert_eq!(classify_postgres(code), ErrorClass::Row, "{code}");
        }
        for code in [
            "40001", "40P01", "08006", "57P01", "53300", "42P01", "42703", "42501", "25P02",
            "XX000",
        ] {
            assert_eq!(classify_postgres(code), ErrorClass::Retriable, "{code}");
        }
        for (n, state) in [
            (1062, Some("23000")),
            (1048, Some("23000")),
            (1452, Some("23000")),
            (1366, Some("HY000")),
            (1366, Some("22007")),
            (1292, Some("22007")),
            (1406, Some("22001")),
            (1264, Some("22003")),
            (1364, Some("HY000")),
            (4025, Some("23000")),
            (9999, Some("22012")),
        ] {
            assert_eq!(classify_mysql(n, state), ErrorClass::Row, "{n}");
        }
        for (n, state) in [
            (1213, Some("40001")),
            (1205, Some("HY000")),
            (1146, Some("42S02")),
            (1054, Some("42S22")),
            (1142, Some("42000")),
            (2013, None),
        ] {
            assert_eq!(classify_mysql(n, state), ErrorClass::Retriable, "{n}");
        }
        let reset = sqlx::Error::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(classify(&reset), ErrorClass::Retriable);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Retriable);
        assert_eq!(reason(&reset), reset.to_string());
    }

    #[tokio::test]
    async fn timeouts_are_io_errors() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), sqlx::Error>(())
        };
        let e = timed(Duration::from_millis(10), slow).await.unwrap_err();
        assert!(matches!(&e, sqlx::Error::Io(err) if err.kind() == io::ErrorKind::TimedOut));
        assert_eq!(classify(&e), ErrorClass::Retriable);
    }

    #[test]
    fn settings_are_checked_by_field() {
        let err = |f: &dyn Fn(&mut SqlSinkConfig)| {
            let mut c = cfg("postgres://u:hunter2@127.0.0.1:5432/app");
            f(&mut c);
            SqlSink::new("s", &c)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(err(&|_| {}), "");
        assert_eq!(
            err(&|c| c.url = Secret::new("mariadb://root@db:3307/x")),
            ""
        );
        assert!(err(&|c| c.url = Secret::new("sqlite://x.db")).starts_with("`url`"));
        assert!(err(&|c| c.url = Secret::new("nope")).starts_with("`url`"));
        let bad = err(&|c| c.url = Secret::new("postgres://u:hunter2@[::1"));
        assert!(
            bad.starts_with("`url`:") && !bad.contains("hunter2"),
            "{bad}"
        );
        assert!(err(&|c| c.table = "a.b.c".into()).starts_with("`table`"));
        assert!(err(&|c| c.table = "t;drop".into()).starts_with("`table`"));
        assert!(err(&|c| c.table = "".into()).starts_with("`table`"));
        assert_eq!(err(&|c| c.table = "public.events_2024".into()), "");
        assert!(err(&|c| c.columns = SqlColumns(vec![])).starts_with("`columns`"));
        assert!(
            err(&|c| c.columns.0.push(("bad name".into(), ColumnSource::Body)))
                .starts_with("`columns`")
        );
        assert!(
            err(&|c| c
                .columns
                .0
                .push(("x".into(), ColumnSource::Json("x".into()))))
            .starts_with("`columns.x.json`")
        );
        assert!(
            err(&|c| c
                .columns
                .0
                .push(("x".into(), ColumnSource::Header(String::new()))))
            .starts_with("`columns.x.header`")
        );
        assert!(err(&|c| c.key = vec!["id".into()]).starts_with("`key`"));
        assert!(err(&|c| c.mode = SqlMode::Upsert).starts_with("`key`"));
        assert!(
            err(&|c| {
                c.mode = SqlMode::Upsert;
                c.key = vec!["nope".into()];
            })
            .starts_with("`key`")
        );
        assert!(
            err(&|c| {
                c.mode = SqlMode::Upsert;
                c.key = vec!["id".into(), "id".into()];
            })
            .starts_with("`key`")
        );
        assert!(err(&|c| c.timeout = HumanDuration(Duration::ZERO)).starts_with("`timeout`"));

        let sink = SqlSink::new("s", &cfg("postgres://u:hunter2@db.example:6543/app")).unwrap();
        assert_eq!(sink.target.server, "db.example:6543/app");
        assert_eq!(sink.target.dialect, Dialect::Postgres);
        let sink = SqlSink::new("s", &cfg("mysql://root:pw@127.0.0.1/test")).unwrap();
        assert_eq!(sink.target.server, "127.0.0.1:3306/test");
        assert_eq!(sink.target.dialect, Dialect::MySql);
    }

    #[test]
    fn setting_and_connect_errors_keep_their_cause_and_text() {
        use std::error::Error as _;
        let mut c = cfg("postgres://h/db");
        c.table = "t;drop".into();
        let e = SqlSink::new("s", &c).err().unwrap();
        assert!(matches!(&e, SqlConfigError::Table { table, .. } if table == "t;drop"));
        assert_eq!(
            e.to_string(),
            "`table`: \"t;drop\": not a plain SQL name (letters, digits, `_` and `$`, not \
             starting with a digit, at most 63 characters)"
        );
        assert!(e.source().is_some_and(|s| s.is::<NotPlainName>()));
        let e = SqlSink::new("s", &cfg("postgres://u:hunter2@[::1"))
            .err()
            .unwrap();
        assert!(matches!(e, SqlConfigError::Url(_)), "{e:?}");
        assert!(e.source().is_some(), "sqlx's error is kept");
        let e = SqlOpenError::NoColumn {
            server: "h:5432/db".into(),
            table: "\"t\"".into(),
            column: "x".into(),
            existing: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            r#"sql h:5432/db: table "t" has no column "x" (it has: a, b)"#
        );
    }

    #[tokio::test]
    async fn an_unreachable_database_makes_the_batch_retriable() {
        // Nothing listens on port 1: connecting fails at once.
        let mut c = cfg("postgres://u:hunter2@127.0.0.1:1/app");
        c.timeout = HumanDuration(Duration::from_secs(2));
        let mut sink = SqlSink::new("s", &c).unwrap();
        let r = sink
            .deliver(&Batch::new(&[Event::new(r#"{"id":1}"#)]))
            .await;
        match r {
            Err(DeliveryError::Retriable { reason, .. }) => {
                assert!(
                    reason.starts_with("sql 127.0.0.1:1/app: cannot connect"),
                    "{reason}"
                );
                assert!(!reason.contains("hunter2"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(sink.live.is_none());
    }
}
