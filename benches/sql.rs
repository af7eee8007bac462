//! SQL sink throughput: rows per second into PostgreSQL and MariaDB/MySQL, batches of 1,000.
//!
//! `SLUICE_BENCH_SQL_ROWS` (default 200,000; 2,000 in the smoke run under `cargo test`) JSON
//! events of about 150 bytes, each one row of six typed columns (bigint key, text, decimal,
//! boolean, timestamp, JSON). For each database (`SLUICE_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`; `SLUICE_TEST_MYSQL`, default
//! `mysql://root@127.0.0.1:3306/test`), three cases:
//! - raw sqlx: the sink's statement shape (1,000-row INSERT, values bound as text, one
//!   transaction each) from a loop in this process, with the values already split out: the
//!   ceiling for the sink;
//! - sluice insert: the binary reading the events from stdin (a file) into a memory channel,
//!   the `sql` sink inserting batches of 1,000 into an empty table;
//! - sluice upsert: other values for the same ids into the now full table, `mode: upsert`, so
//!   every row is updated;
//! - sluice insert_new, replay: the first input again into the full table, `mode: insert_new`
//!   (idempotent inserts): every row exists, none is changed;
//! - sluice insert_new, new: the first input into another, empty table with `insert_new`: the
//!   cost of the idempotent statement when every row is new.
//!
//! Sluice runs are timed from process start to exit after draining (start-up, about 50 ms, is
//! included), and checked: every row present (insert) or updated (upsert).

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

/// Helpers shared by the benches.
#[path = "common/mod.rs"]
mod common;
/// The tests' helpers: the database servers' URLs and a connection of the bench's own
/// (`tests/common/sql.rs`), shared with the tests.
#[path = "../tests/common/mod.rs"]
mod test_support;
use common::{agent, agent_log, env_or};
use test_support::sql::{Db, Flavor, unique_table};

/// This bench's part of the shared `Flavor`.
impl Flavor {
    /// The bench's table, in this flavor's dialect.
    fn create(self, table: &str) -> String {
        match self {
            Flavor::Postgres => format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2),
                 active boolean, created timestamp, doc jsonb)"
            ),
            Flavor::MySql => format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, name varchar(100) NOT NULL,
                 amount decimal(12,2), active boolean, created datetime, doc json)
                 DEFAULT CHARSET=utf8mb4"
            ),
        }
    }
}

const BATCH: usize = 1000;
const COLUMNS: [&str; 6] = ["id", "name", "amount", "active", "created", "doc"];
const CASTS: [&str; 6] = ["bigint", "text", "numeric", "boolean", "timestamp", "jsonb"];

/// Event `i` of a run whose names start with `label`, as a JSON line.
fn event(i: usize, label: &str) -> String {
    format!(
        r#"{{"id":{i},"name":"{label} {i}","amount":{}.{:02},"active":{},"created":"2024-03-01 12:{:02}:{:02}","doc":{{"k":{i},"tags":["a","b"]}}}}"#,
        i % 100_000,
        i % 100,
        i % 2 == 0,
        (i / 60) % 60,
        i % 60
    )
}

/// The values of event `i` as the sink binds them.
fn values(f: Flavor, i: usize) -> [String; 6] {
    let active = match (f, i % 2 == 0) {
        (Flavor::Postgres, b) => b.to_string(),
        (Flavor::MySql, b) => u8::from(b).to_string(),
    };
    [
        i.to_string(),
        format!("raw {i}"),
        format!("{}.{:02}", i % 100_000, i % 100),
        active,
        format!("2024-03-01 12:{:02}:{:02}", (i / 60) % 60, i % 60),
        format!(r#"{{"k":{i},"tags":["a","b"]}}"#),
    ]
}

/// The sink's statement shape for `rows` rows.
fn statement(f: Flavor, table: &str, rows: usize) -> String {
    let mut s = format!("INSERT INTO {table} ({}) VALUES ", COLUMNS.join(", "));
    let mut n = 0;
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for (c, cast) in CASTS.iter().enumerate() {
            if c > 0 {
                s.push_str(", ");
            }
            n += 1;
            match f {
                Flavor::Postgres => {
                    let _ = write!(s, "CAST(${n} AS {cast})");
                }
                Flavor::MySql => s.push('?'),
            }
        }
        s.push(')');
    }
    s
}

/// This bench's part of the shared `Db`.
impl Db {
    /// The raw loop: 1,000-row INSERTs, one transaction each.
    async fn raw_loop(&self, f: Flavor, table: &str, m: usize) -> Duration {
        let rows: Vec<[String; 6]> = (0..m).map(|i| values(f, i)).collect();
        let full = statement(f, table, BATCH);
        let t0 = Instant::now();
        for chunk in rows.chunks(BATCH) {
            let short;
            let sql: &str = if chunk.len() == BATCH {
                &full
            } else {
                short = statement(f, table, chunk.len());
                &short
            };
            match self {
                Db::Pg(p) => {
                    let mut tx = p.begin().await.unwrap();
                    let mut q = sqlx::query(sql);
                    for v in chunk.iter().flatten() {
                        q = q.bind(v.as_str());
                    }
                    q.execute(&mut *tx).await.unwrap();
                    tx.commit().await.unwrap();
                }
                Db::My(p) => {
                    let mut tx = p.begin().await.unwrap();
                    let mut q = sqlx::query(sql);
                    for v in chunk.iter().flatten() {
                        q = q.bind(v.as_str());
                    }
                    q.execute(&mut *tx).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }
        t0.elapsed()
    }
}

/// Runs the binary on `pipeline` with `input` as stdin until it exits; its wall time.
fn run_sluice(dir: &Path, label: &str, pipeline: &str, input: &Path) -> Option<Duration> {
    let mut cmd = agent(dir, label, pipeline);
    cmd.stdin(std::fs::File::open(input).unwrap());
    let t0 = Instant::now();
    let status = cmd.status().expect("start sluice");
    let elapsed = t0.elapsed();
    if status.success() {
        Some(elapsed)
    } else {
        let log = agent_log(dir, label);
        eprintln!("{label}: sluice failed ({status}):\n{log}");
        None
    }
}

fn pipeline(f: Flavor, table: &str, mode: &str) -> String {
    let mode = if mode == "insert" {
        String::new()
    } else {
        format!("\n    mode: {mode}\n    key: [id]")
    };
    format!(
        "channels:
  mem: {{ type: memory, capacity: 20000 }}
sources:
  in: {{ type: stdin, codec: lines, batch_size: {BATCH}, channels: [mem] }}
sinks:
  out:
    type: sql
    channel: mem
    batch_size: {BATCH}
    url: \"{url}\"
    table: {table}{mode}
    columns:
      id: {{ json: /id }}
      name: {{ json: /name }}
      amount: {{ json: /amount }}
      active: {{ json: /active }}
      created: {{ json: /created }}
      doc: {{ json: /doc }}
",
        url = f.url()
    )
}

fn write_input(path: &Path, m: usize, label: &str) {
    let mut text = String::with_capacity(m * 160);
    for i in 0..m {
        text += &event(i, label);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a small smoke run checks that every
    // case still completes.
    let benching = std::env::args().any(|a| a == "--bench");
    let m: usize = env_or(
        "SLUICE_BENCH_SQL_ROWS",
        if benching { 200_000 } else { 2_000 },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("insert.ndjson");
    let second = dir.path().join("upsert.ndjson");
    write_input(&first, m, "user");
    write_input(&second, m, "again");
    println!("sql: {m} rows of 6 columns per case, batches of {BATCH}");

    let mut rows: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    rt.block_on(async {
        for f in [Flavor::Postgres, Flavor::MySql] {
            let db = Db::connect(f).await;
            let raw_table = unique_table("bench_raw");
            db.exec(&f.create(&raw_table)).await;
            let raw = db.raw_loop(f, &raw_table, m).await;
            let raw_rate = m as f64 / raw.as_secs_f64();
            db.exec(&format!("DROP TABLE {raw_table}")).await;
            rows.push((
                format!("{} raw sqlx loop", f.name()),
                Some(raw_rate),
                Some(raw_rate),
            ));

            let table = unique_table("bench_sink");
            db.exec(&f.create(&table)).await;
            // MySQL's COUNT(*) may come back unsigned: made a signed BIGINT in both.
            let count = match f {
                Flavor::Postgres => "COUNT(*)",
                Flavor::MySql => "CAST(COUNT(*) AS SIGNED)",
            };
            let fresh = unique_table("bench_new");
            db.exec(&f.create(&fresh)).await;
            let again = format!("SELECT {count} FROM {table} WHERE name LIKE 'again %'");
            for (case, input, mode, table, check) in [
                (
                    "insert",
                    &first,
                    "insert",
                    &table,
                    format!("SELECT {count} FROM {table}"),
                ),
                ("upsert", &second, "upsert", &table, again.clone()),
                ("insert_new replay", &first, "insert_new", &table, again),
                (
                    "insert_new new",
                    &first,
                    "insert_new",
                    &fresh,
                    format!("SELECT {count} FROM {fresh}"),
                ),
            ] {
                let label = format!("{}-{}", f.name(), case.replace(' ', "-"));
                let p = pipeline(f, table, mode);
                let (d, input) = (dir.path().to_owned(), input.clone());
                let took = tokio::task::spawn_blocking(move || run_sluice(&d, &label, &p, &input))
                    .await
                    .unwrap();
                let n = db.count(&check).await;
                let rate = match took {
                    Some(t) if n == m as i64 => Some(m as f64 / t.as_secs_f64()),
                    Some(_) => {
                        eprintln!("{} {case}: {n} of {m} rows found", f.name());
                        None
                    }
                    None => None,
                };
                rows.push((format!("{} sluice {case}", f.name()), rate, Some(raw_rate)));
            }
            db.exec(&format!("DROP TABLE {table}")).await;
            db.exec(&format!("DROP TABLE {fresh}")).await;
        }
    });

    println!("  {:<34} {:>10} {:>8}", "case", "rows/s", "vs raw");
    for (label, rate, raw) in &rows {
        match (rate, raw) {
            (Some(r), Some(raw)) => {
                println!("  {label:<34} {r:>10.0} {:>7.0}%", r / raw * 100.0);
            }
            _ => println!("  {label:<34} {:>10}", "failed"),
        }
    }
    if rows.iter().any(|(_, rate, _)| rate.is_none()) {
        std::process::exit(1);
    }
}
