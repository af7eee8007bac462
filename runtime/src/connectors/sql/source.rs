//! The `sql` source: reads a table (or a query's result) incrementally, in the order of a
//! tracking column that only grows (`id`, or `updated_at` with `id` as the tie-breaker), one
//! event per row with the row as a JSON object for its body.
//!
//! Each poll asks for the next `batch_size` rows after the last position, ordered by the
//! tracking columns; the position (their values in the batch's last row) is written to
//! `position_file` only after the batch is committed, so a crash reads at most that batch
//! again and a restart resumes where the last commit left off. With `run_to_completion` the
//! source ends at the first poll that finds nothing new — a one-off export.
//!
//! The database builds the JSON: PostgreSQL's `row_to_json`, MySQL/MariaDB's `JSON_OBJECT`
//! over the result's columns (asked for once per connection), so every column type comes out
//! as the database itself writes it as JSON. Rows are compared as a tuple, `(c1, c2) > (v1,
//! v2)`, which both databases evaluate on an index over those columns. Tracking columns must
//! not be NULL, and like any polling reader this one sees a row only if it is committed by the
//! time a later position is read: rows that commit out of tracking order (two concurrent
//! writers taking ids from one sequence) can be missed by a poll that raced them.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{SeqAccess, Visitor},
};
use sha2::{Digest, Sha256};
use sqlx::Row as _;

use sluice_core::{
    config::{Secret, units::HumanDuration},
    event::{Event, HeaderText},
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec},
    source::{
        Commit, Source, SourceContext, SourceError,
        supervisor::{Backoff, Failure, Session, Supervised, sleep_or_cancelled, supervise},
    },
};

use super::sink::{Conn, Dialect, Options, SqlConfigError, Table, connect_options, reason, timed};

/// `tracking_column:` one column, or several (the first orders, the others break ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking(pub Vec<String>);

impl<'de> Deserialize<'de> for Tracking {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tracking;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name, or a list of them (`[updated_at, id]`)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Tracking, E> {
                Ok(Tracking(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tracking, A::Error> {
                let mut out = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    out.push(c);
                }
                Ok(Tracking(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `type: sql` sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSourceConfig {
    /// `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL (a secret: never logged).
    pub url: Secret,
    /// The table to read (`name` or `schema.name`) ...
    pub table: Option<String>,
    /// ... or a query whose result is read (it may join, filter and choose columns; it must
    /// return the tracking columns).
    pub query: Option<String>,
    pub tracking_column: Tracking,
    /// Pause between polls that found nothing new.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// Where the position is kept between runs.
    pub position_file: PathBuf,
    /// End at the first poll that finds nothing new.
    #[serde(default)]
    pub run_to_completion: bool,
    /// Header name → column whose value it gets (text as is, other JSON values as JSON).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long connecting, and each poll, may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    let cfg: SqlSourceConfig = cx.read()?;
    let mut ok = true;
    match (&cfg.table, &cfg.query) {
        (Some(_), Some(_)) => {
            let pos = cx.field_pos("query");
            cx.error(pos, "give `table` or `query`, not both");
            ok = false;
        }
        (None, None) => {
            cx.error(cx.pos, "`table` or `query` is required: what to read");
            ok = false;
        }
        (Some(t), None) => {
            if let Err(e) = Table::parse(t) {
                let pos = cx.field_pos("table");
                cx.error(pos, e.to_string());
                ok = false;
            }
        }
        (None, Some(q)) if q.trim().is_empty() => {
            let pos = cx.field_pos("query");
            cx.error(pos, "must not be empty");
            ok = false;
        }
        (None, Some(_)) => {}
    }
    let pos = cx.field_pos("tracking_column");
    if cfg.tracking_column.0.is_empty() {
        cx.error(pos, "name at least one column");
        ok = false;
    }
    for c in cfg.tracking_column.0.iter().chain(cfg.headers.values()) {
        if !plain(c) {
            cx.error(
                pos,
                format!("{c:?} is not a plain column name (letters, digits, `_`, `$`)"),
            );
            ok = false;
        }
    }
    if cfg.timeout.0.is_zero() {
        let pos = cx.field_pos("timeout");
        cx.error(pos, "must be more than 0");
        ok = false;
    }
    ok.then(|| Arc::new(cfg) as Arc<dyn SourceSpec>)
}

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

impl SourceSpec for SqlSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let (dialect, options, server) =
            connect_options(self.url.expose()).map_err(|e: SqlConfigError| e.to_string())?;
        let base = match (&self.table, &self.query) {
            (Some(t), _) => format!(
                "SELECT * FROM {}",
                Table::parse(t).map_err(|e| e.to_string())?.quoted(dialect)
            ),
            (None, Some(q)) => q.trim().trim_end_matches(';').to_owned(),
            (None, None) => return Err("`table` or `query` is required".into()),
        };
        Ok(Box::new(SqlSource {
            name: cx.name.to_owned(),
            dialect,
            options,
            server,
            fingerprint: fingerprint(&base, &self.tracking_column.0),
            base,
            cfg: self.clone(),
            batch_size: cx.batch_size.max(1),
            headers: self
                .headers
                .iter()
                .map(|(h, c)| (HeaderText::new(h), c.clone()))
                .collect(),
            position: None,
            read: 0,
            started: Instant::now(),
        }))
    }

    fn exclusive_paths(&self) -> Vec<(&'static str, &Path)> {
        vec![("position_file", &self.position_file)]
    }

    fn upstream(&self) -> Upstream {
        Upstream::AckAfterCommit("its position is saved only after a commit")
    }
}

/// What the position file holds: the tracking values of the last committed row, and which
/// query they belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    query: String,
    after: Vec<String>,
}

fn fingerprint(base: &str, tracking: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    for c in tracking {
        h.update([0]);
        h.update(c.as_bytes());
    }
    hex::encode(&h.finalize()[..12])
}

struct SqlSource {
    name: String,
    dialect: Dialect,
    options: Options,
    server: String,
    /// The query rows come from, before the position and order are added.
    base: String,
    fingerprint: String,
    cfg: SqlSourceConfig,
    batch_size: usize,
    headers: Vec<(HeaderText, String)>,
    /// The last committed row's tracking values (`None`: from the start).
    position: Option<Vec<String>>,
    read: u64,
    started: Instant,
}

/// A connection and what it learnt of the result's columns.
struct Live {
    conn: Conn,
    /// MySQL/MariaDB: the `JSON_OBJECT(...)` over the result's columns.
    json: Option<String>,
}

impl SqlSource {
    fn load_position(&mut self) -> Result<(), SourceError> {
        let path = &self.cfg.position_file;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(format!("reading {}", path.display()), e)),
        };
        let p: Position = serde_json::from_slice(&bytes).map_err(|e| {
            io(
                format!("{} is not a position file", path.display()),
                std::io::Error::other(e),
            )
        })?;
        if p.query != self.fingerprint {
            return Err(io(
                format!(
                    "{} holds the position of another table, query or tracking_column; delete \
                     it to read from the start",
                    path.display()
                ),
                std::io::Error::other("position of another query"),
            ));
        }
        if p.after.len() != self.cfg.tracking_column.0.len() {
            return Err(io(
                format!(
                    "{}: the position has the wrong number of values",
                    path.display()
                ),
                std::io::Error::other("bad position"),
            ));
        }
        self.position = Some(p.after);
        Ok(())
    }

    /// Written to a new file and renamed over the old, and synced, so the saved position is
    /// always one a commit reached.
    fn save_position(&self, after: &[String]) -> std::io::Result<()> {
        let path = &self.cfg.position_file;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(&Position {
            query: self.fingerprint.clone(),
            after: after.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// The poll statement for the current position, and the values to bind (MySQL).
    fn statement(&self, json: Option<&str>) -> (String, Vec<String>) {
        let q = |c: &str| {
            let mut s = "sluice_q.".to_owned();
            self.dialect.quote(c, &mut s);
            s
        };
        let cols: Vec<String> = self.cfg.tracking_column.0.iter().map(|c| q(c)).collect();
        let mut sql = String::from("SELECT ");
        match self.dialect {
            Dialect::Postgres => {
                sql.push_str("row_to_json(sluice_q)::text");
                for c in &cols {
                    sql.push_str(&format!(", ({c})::text"));
                }
            }
            Dialect::MySql => {
                sql.push_str(&format!("CAST({} AS CHAR)", json.unwrap_or("NULL")));
                for c in &cols {
                    sql.push_str(&format!(", CAST({c} AS CHAR)"));
                }
            }
        }
        // On lines of their own: a trailing `--` comment in the query ends with its line.
        sql.push_str(&format!(" FROM (\n{}\n) AS sluice_q", self.base));
        let mut binds = Vec::new();
        if let Some(after) = &self.position {
            let values: Vec<String> = match self.dialect {
                // Untyped literals take the column's type; PostgreSQL would refuse a text
                // parameter compared with an integer column.
                Dialect::Postgres => after.iter().map(|v| pg_literal(v)).collect(),
                Dialect::MySql => {
                    binds.clone_from(after);
                    after.iter().map(|_| "?".to_owned()).collect()
                }
            };
            sql.push_str(&format!(
                " WHERE ({}) > ({})",
                cols.join(", "),
                values.join(", ")
            ));
        }
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            cols.join(", "),
            self.batch_size
        ));
        (sql, binds)
    }

    fn events(&self, rows: Vec<Vec<Option<String>>>) -> Result<(Vec<Event>, Vec<String>), String> {
        let mut events = Vec::with_capacity(rows.len());
        let mut last = Vec::new();
        for mut row in rows {
            let body = row.first_mut().and_then(Option::take).unwrap_or_default();
            let mut event = Event::new(Bytes::from(body));
            if !self.headers.is_empty() {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&event.body).unwrap_or_default();
                for (header, column) in &self.headers {
                    match object.get(column) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::String(s)) => {
                            event.headers.insert(header.clone(), s.as_str());
                        }
                        Some(v) => event.headers.insert(header.clone(), v.to_string()),
                    }
                }
            }
            events.push(event);
            last = row
                .into_iter()
                .skip(1)
                .zip(&self.cfg.tracking_column.0)
                .map(|(v, c)| {
                    v.ok_or_else(|| format!("tracking column `{c}` is NULL in a row; tracking columns must not be NULL"))
                })
                .collect::<Result<_, _>>()?;
        }
        Ok((events, last))
    }
}

/// `E'...'`: the same text whatever `standard_conforming_strings` says.
fn pg_literal(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 3);
    s.push_str("E'");
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

fn io(what: String, e: std::io::Error) -> SourceError {
    SourceError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Errors retrying cannot fix: the statement itself is wrong (SQLSTATE class 42: syntax, no
/// such table or column, no permission).
fn is_statement_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("42"))
}

impl Conn {
    /// Every row of `sql` as text columns.
    fn text_rows<'a>(
        &'a mut self,
        sql: &'a str,
        binds: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<Option<String>>>, sqlx::Error>> {
        Box::pin(async move {
            match self {
                #[cfg(feature = "sql-postgres")]
                Conn::Pg(c) => {
                    let _ = binds;
                    // Each poll's text differs (its position is a literal): not kept prepared.
                    let rows = sqlx::query(sql)
                        .persistent(false)
                        .fetch_all(&mut *c)
                        .await?;
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.try_get::<Option<String>, _>(i))
                                .collect()
                        })
                        .collect()
                }
                #[cfg(feature = "sql-mysql")]
                Conn::My(c) => {
                    let mut q = sqlx::query(sql);
                    for b in binds {
                        q = q.bind(b.as_str());
                    }
                    let rows = q.fetch_all(&mut *c).await?;
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.try_get::<Option<String>, _>(i))
                                .collect()
                        })
                        .collect()
                }
            }
        })
    }

    /// The result's column names (MySQL/MariaDB), from the prepared statement.
    fn result_columns<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>> {
        Box::pin(async move {
            use sqlx::{Column as _, Statement as _};
            match self {
                #[cfg(feature = "sql-postgres")]
                Conn::Pg(c) => {
                    let s = sqlx::Executor::prepare(&mut *c, sql).await?;
                    Ok(s.columns().iter().map(|c| c.name().to_owned()).collect())
                }
                #[cfg(feature = "sql-mysql")]
                Conn::My(c) => {
                    let s = sqlx::Executor::prepare(&mut *c, sql).await?;
                    Ok(s.columns().iter().map(|c| c.name().to_owned()).collect())
                }
            }
        })
    }
}

/// `JSON_OBJECT('a', sluice_q.`a`, ...)` over `columns`.
fn mysql_json(columns: &[String]) -> String {
    let mut s = String::from("JSON_OBJECT(");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('\'');
        for ch in c.chars() {
            match ch {
                '\'' => s.push_str("''"),
                '\\' => s.push_str("\\\\"),
                ch => s.push(ch),
            }
        }
        s.push_str("', sluice_q.`");
        s.push_str(&c.replace('`', "``"));
        s.push('`');
    }
    s.push(')');
    s
}

impl Supervised for SqlSource {
    type Conn = Live;

    fn peer(&self) -> String {
        self.server.clone()
    }

    async fn connect(&mut self) -> Result<Live, Failure> {
        let limit = self.cfg.timeout.0;
        let mut conn = timed(limit, self.options.connect())
            .await
            .map_err(|e| Failure::retry("cannot connect to the database", reason(&e)))?;
        let json = match self.dialect {
            Dialect::Postgres => None,
            Dialect::MySql => {
                let sql = format!("SELECT * FROM (\n{}\n) AS sluice_q", self.base);
                let cols = timed(limit, conn.result_columns(&sql))
                    .await
                    .map_err(|e| self.failure(e))?;
                for c in &self.cfg.tracking_column.0 {
                    if !cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                        return Err(Failure::Fatal(io(
                            format!(
                                "tracking_column `{c}` is not a column of the result ({})",
                                cols.join(", ")
                            ),
                            std::io::Error::other("no such column"),
                        )));
                    }
                }
                Some(mysql_json(&cols))
            }
        };
        tracing::info!(source = %self.name, server = %self.server, "connected to the database");
        Ok(Live { conn, json })
    }

    async fn consume(
        &mut self,
        mut live: Live,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let limit = self.cfg.timeout.0;
        loop {
            if cx.shutdown.is_cancelled() {
                return Ok(());
            }
            let (sql, binds) = self.statement(live.json.as_deref());
            let rows = timed(limit, live.conn.text_rows(&sql, &binds))
                .await
                .map_err(|e| self.failure(e))?;
            session.mark_progress();
            let n = rows.len();
            if n == 0 {
                if self.cfg.run_to_completion {
                    let secs = self.started.elapsed().as_secs_f64();
                    tracing::info!(
                        source = %self.name,
                        rows = self.read,
                        seconds = format!("{secs:.1}"),
                        rows_per_second = format!("{:.0}", self.read as f64 / secs.max(1e-9)),
                        "export done: no more rows"
                    );
                    return Ok(());
                }
                if sleep_or_cancelled(&cx.shutdown, self.cfg.poll_interval.0).await {
                    return Ok(());
                }
                continue;
            }
            let (events, last) = self
                .events(rows)
                .map_err(|e| Failure::Fatal(io(e, std::io::Error::other("bad row"))))?;
            match cx.commit_or_stop(events).await {
                Ok(Commit::Done) => {}
                Ok(Commit::Stopped) => return Ok(()),
                Err(e) => return Err(Failure::Fatal(e)),
            }
            self.save_position(&last).map_err(|e| {
                Failure::Fatal(io(
                    format!(
                        "saving the position to {}",
                        self.cfg.position_file.display()
                    ),
                    e,
                ))
            })?;
            self.position = Some(last);
            self.read += n as u64;
            // A short batch: caught up; a full one: more is likely waiting.
            if n < self.batch_size
                && !self.cfg.run_to_completion
                && sleep_or_cancelled(&cx.shutdown, self.cfg.poll_interval.0).await
            {
                return Ok(());
            }
        }
    }
}

impl SqlSource {
    fn failure(&self, e: sqlx::Error) -> Failure {
        if is_statement_error(&e) {
            Failure::Fatal(io(
                format!("the query cannot run: {}", reason(&e)),
                std::io::Error::other("query refused"),
            ))
        } else {
            Failure::retry("polling the database failed", reason(&e))
        }
    }
}

#[async_trait::async_trait]
impl Source for SqlSource {
    async fn run(mut self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        self.load_position()?;
        if let Some(p) = &self.position {
            tracing::info!(source = %self.name, after = ?p, "resuming after the saved position");
        }
        self.started = Instant::now();
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        supervise(&mut *self, &mut cx, backoff).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dialect: Dialect, tracking: &[&str], position: Option<&[&str]>) -> SqlSource {
        let url = match dialect {
            Dialect::Postgres => "postgres://u@h/db",
            Dialect::MySql => "mysql://u@h/db",
        };
        let (dialect, options, server) = connect_options(url).unwrap();
        SqlSource {
            name: "s".into(),
            dialect,
            options,
            server,
            base: "SELECT * FROM t".into(),
            fingerprint: String::new(),
            cfg: SqlSourceConfig {
                url: Secret::new(url),
                table: Some("t".into()),
                query: None,
                tracking_column: Tracking(tracking.iter().map(|s| s.to_string()).collect()),
                poll_interval: default_poll(),
                position_file: "p.json".into(),
                run_to_completion: false,
                headers: BTreeMap::new(),
                timeout: default_timeout(),
            },
            batch_size: 100,
            headers: Vec::new(),
            position: position.map(|p| p.iter().map(|s| s.to_string()).collect()),
            read: 0,
            started: Instant::now(),
        }
    }

    #[test]
    fn poll_statements() {
        let s = source(
            Dialect::Postgres,
            &["updated_at", "id"],
            Some(&["2026-12-07 05:00:00+00", "o'k\\"]),
        );
        let (sql, binds) = s.statement(None);
        assert_eq!(
            sql,
            "SELECT row_to_json(sluice_q)::text, (sluice_q.\"updated_at\")::text, (sluice_q.\"id\")::text \
             FROM (\nSELECT * FROM t\n) AS sluice_q \
             WHERE (sluice_q.\"updated_at\", sluice_q.\"id\") > (E'2026-12-07 05:00:00+00', E'o''k\\\\') \
             ORDER BY sluice_q.\"updated_at\", sluice_q.\"id\" LIMIT 100"
        );
        assert!(binds.is_empty());
        let s = source(Dialect::MySql, &["id"], None);
        let json = mysql_json(&["id".into(), "it's".into()]);
        assert_eq!(
            json,
            "JSON_OBJECT('id', sluice_q.`id`, 'it''s', sluice_q.`it's`)"
        );
        let (sql, _) = s.statement(Some(&json));
        assert_eq!(
            sql,
            format!(
                "SELECT CAST({json} AS CHAR), CAST(sluice_q.`id` AS CHAR) FROM (\nSELECT * FROM t\n) AS sluice_q ORDER BY sluice_q.`id` LIMIT 100"
            )
        );
        let s = source(Dialect::MySql, &["id"], Some(&["7"]));
        let (sql, binds) = s.statement(Some(&json));
        assert!(
            sql.contains("WHERE (sluice_q.`id`) > (?) ORDER BY"),
            "{sql}"
        );
        assert_eq!(binds, ["7"]);
    }

    #[test]
    fn rows_become_events_with_headers_and_a_position() {
        let mut s = source(Dialect::Postgres, &["id"], None);
        s.headers = vec![
            (HeaderText::new("row.id"), "id".into()),
            (HeaderText::new("kind"), "kind".into()),
        ];
        let (events, last) = s
            .events(vec![
                vec![Some(r#"{"id":1,"kind":"a"}"#.into()), Some("1".into())],
                vec![Some(r#"{"id":2,"kind":null}"#.into()), Some("2".into())],
            ])
            .unwrap();
        assert_eq!(events[0].headers.get("row.id"), Some("1"));
        assert_eq!(events[0].headers.get("kind"), Some("a"));
        assert_eq!(events[1].headers.get("kind"), None);
        assert_eq!(events[1].body, r#"{"id":2,"kind":null}"#);
        assert_eq!(last, ["2"]);
        let e = s.events(vec![vec![Some("{}".into()), None]]).unwrap_err();
        assert!(e.contains("NULL"), "{e}");
    }
}
