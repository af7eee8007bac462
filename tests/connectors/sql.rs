//! The `sql` sink through the real binary, against a real PostgreSQL (`SLUICE_TEST_POSTGRES`,
//! default `postgres://postgres@127.0.0.1:5432/test`) and MariaDB/MySQL (`SLUICE_TEST_MYSQL`,
//! default `mysql://root@127.0.0.1:3306/test`); results are read back with sqlx. Every test
//! creates its own table (a uuid in the name), so tests run in parallel and reruns do not
//! interfere. A server that is not there fails the test.
//!
//! Insert: 1,000 JSON events from stdin into a table of typed columns (integer key, text,
//! decimal, boolean, timestamp, JSON, a nullable column, a header, the whole body and a
//! constant), among them a duplicate key, a NOT NULL violation and a body that is not JSON:
//! the 997 good rows are selected and compared value by value, and the three bad events are
//! in the DLQ with the database's (or the sink's) reason. Upsert: the same ids written
//! again, across runs and twice within one batch: the last values win, nothing is refused.

use std::{collections::BTreeMap, path::Path};

use crate::common::{
    envelope, json_lines, run_stdin,
    sql::{Db, Flavor, unique_table},
};
use serde_json::{Value, json};

/// The expected values of good row `i`, and its event body.
struct Good {
    id: u32,
    name: String,
    amount: String,
    active: bool,
    created: String,
    doc: Value,
    note: Option<String>,
    origin: String,
    body: String,
}

fn good(i: u32) -> Good {
    let name = format!("name {i} \"quoted\" ü \\ back");
    // Exact decimals: written as JSON numbers with two places, read back as the same text.
    let amount = format!("{i}.{:02}", i % 100);
    let active = i % 2 == 0;
    let created = format!(
        "2024-03-{:02} {:02}:{:02}:{:02}",
        1 + i / 1440,
        (i / 60) % 24,
        i % 60,
        (i * 7) % 60
    );
    // Now and then a JSON string, which a JSON column must keep as a JSON string.
    let doc = if i % 10 == 7 {
        json!(format!("plain {i}"))
    } else {
        json!({ "k": i, "tags": ["a", "b"], "nested": { "q": "say \"hi\"" } })
    };
    // A missing member and a JSON null are both NULL.
    let (note_json, note) = match i % 3 {
        0 => (String::new(), None),
        1 => (r#","note":null"#.to_owned(), None),
        _ => (
            format!(r#","note":{}"#, json!(format!("note {i}"))),
            Some(format!("note {i}")),
        ),
    };
    let body = format!(
        r#"{{"id":{i},"name":{},"amount":{amount},"active":{active},"created":"{created}","doc":{doc}{note_json}}}"#,
        json!(name),
    );
    Good {
        id: i,
        name,
        amount,
        active,
        created,
        doc,
        note,
        origin: format!("o{}", i % 4),
        body,
    }
}

fn insert_pipeline(dir: &Path, url: &str, table: &str) -> String {
    format!(
        r#"channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem] }}
sinks:
  db:
    type: sql
    channel: mem
    dlq: dead
    batch_size: 300
    url: '{url}'
    table: {table}
    columns:
      id: {{ json: /id }}
      name: {{ json: /name }}
      amount: {{ json: /amount }}
      active: {{ json: /active }}
      created: {{ json: /created }}
      doc: {{ json: /doc }}
      note: {{ json: /note }}
      origin: {{ header: origin }}
      body_text: body
      loader: {{ value: sluice }}
  dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#,
        d = dir.display()
    )
}

async fn insert_and_dlq(f: Flavor) {
    let db = Db::connect(f).await;
    let t = unique_table("sluice_ins");
    db.exec(&match f {
        Flavor::Postgres => format!(
            "CREATE TABLE {t} (
               id integer PRIMARY KEY,
               name text NOT NULL,
               amount numeric(12,2),
               active boolean,
               created timestamp,
               doc jsonb,
               note text,
               origin varchar(20),
               body_text text,
               loader text)"
        ),
        Flavor::MySql => format!(
            "CREATE TABLE {t} (
               id int PRIMARY KEY,
               name varchar(200) NOT NULL,
               amount decimal(12,2),
               active boolean,
               created datetime,
               doc json,
               note text,
               origin varchar(20),
               body_text text,
               loader varchar(20)) DEFAULT CHARSET=utf8mb4"
        ),
    })
    .await;

    // 997 good rows, with three bad events in the middle: 1,000 lines.
    let dup = r#"{"id":250,"name":"duplicate of 250","amount":1}"#;
    let no_name = r#"{"id":5000,"name":null,"amount":1}"#;
    let not_json = "this is not JSON {";
    let mut input = String::new();
    for i in 1..=997 {
        let g = good(i);
        input += &envelope(&[("origin", g.origin.clone())], &g.body);
        if i == 500 {
            for bad in [dup, no_name, not_json] {
                input += &envelope(&[("origin", "bad".into())], bad);
            }
        }
    }
    assert_eq!(input.lines().count(), 1000);

    let dir = tempfile::tempdir().unwrap();
    let pipeline = insert_pipeline(dir.path(), &f.url(), &t);
    let input_for_agent = input.clone();
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || run_stdin(&path, &pipeline, &input_for_agent))
        .await
        .unwrap();

    let select = match f {
        Flavor::Postgres => format!(
            "SELECT id::text, name, amount::text, active::text, created::text, doc::text,
                    note, origin, body_text, loader FROM {t} ORDER BY {t}.id"
        ),
        Flavor::MySql => format!(
            "SELECT CAST(id AS CHAR), name, CAST(amount AS CHAR), CAST(active AS CHAR),
                    CAST(created AS CHAR), CAST(doc AS CHAR), note, origin, body_text, loader
               FROM {t} ORDER BY {t}.id"
        ),
    };
    let rows = db.rows(&select).await;
    assert_eq!(rows.len(), 997, "{f:?}: rows in {t}");
    for (row, i) in rows.iter().zip(1..) {
        let g = good(i);
        let cell = |k: usize| {
            row[k]
                .clone()
                .unwrap_or_else(|| panic!("row {i}: column {k} is NULL"))
        };
        assert_eq!(cell(0), g.id.to_string());
        assert_eq!(cell(1), g.name, "row {i}");
        assert_eq!(cell(2), g.amount, "row {i}");
        let active = match (f, g.active) {
            (Flavor::Postgres, b) => b.to_string(),
            (Flavor::MySql, b) => u8::from(b).to_string(),
        };
        assert_eq!(cell(3), active, "row {i}");
        assert_eq!(cell(4), g.created, "row {i}");
        let doc: Value = serde_json::from_str(&cell(5)).unwrap();
        assert_eq!(doc, g.doc, "row {i}");
        assert_eq!(row[6], g.note, "row {i}");
        assert_eq!(cell(7), g.origin, "row {i}");
        assert_eq!(cell(8), g.body, "row {i}");
        assert_eq!(cell(9), "sluice", "row {i}");
    }

    let dead = json_lines(&dir.path().join("dead.ndjson"));
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let reasons: BTreeMap<String, String> = dead
        .iter()
        .map(|e| {
            assert_eq!(e["headers"]["sluice.dlq.component"], "db", "{e}");
            assert_eq!(e["headers"]["sluice.dlq.class"], "permanent", "{e}");
            assert_eq!(e["headers"]["origin"], "bad", "{e}");
            (
                e["body"].as_str().unwrap().to_owned(),
                e["headers"]["sluice.dlq.reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let reason = |body: &str| {
        reasons
            .get(body)
            .unwrap_or_else(|| panic!("{body} not in the DLQ: {dead:#?}"))
    };
    assert!(
        reason(not_json).starts_with("body is not JSON"),
        "{}",
        reason(not_json)
    );
    let (duplicate, null) = match f {
        Flavor::Postgres => (
            "duplicate key value violates unique constraint",
            r#"null value in column "name""#,
        ),
        Flavor::MySql => ("Duplicate entry '250'", "Column 'name' cannot be null"),
    };
    assert!(reason(dup).contains(duplicate), "{}", reason(dup));
    assert!(reason(no_name).contains(null), "{}", reason(no_name));
    // The first event with id 250 is the one kept.
    let kept = db
        .rows(&format!("SELECT name FROM {t} WHERE id = 250"))
        .await;
    assert_eq!(kept, [[Some(good(250).name)]]);

    db.exec(&format!("DROP TABLE {t}")).await;
}

fn upsert_pipeline(dir: &Path, url: &str, table: &str) -> String {
    format!(
        r#"channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem] }}
sinks:
  db:
    type: sql
    channel: mem
    dlq: dead
    url: '{url}'
    table: {table}
    mode: upsert
    key: [id]
    columns:
      id: {{ json: /id }}
      name: {{ json: /name }}
      amount: {{ json: /amount }}
  dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#,
        d = dir.display()
    )
}

fn upsert_lines(
    ids: std::ops::RangeInclusive<u32>,
    round: &str,
    amount: impl Fn(u32) -> String,
) -> String {
    ids.map(|i| {
        let body = format!(
            r#"{{"id":{i},"name":"{round} {i}","amount":{}}}"#,
            amount(i)
        );
        envelope(&[("origin", "u".into())], &body)
    })
    .collect()
}

async fn upsert(f: Flavor) {
    let db = Db::connect(f).await;
    let t = unique_table("sluice_ups");
    db.exec(&match f {
        Flavor::Postgres => format!(
            "CREATE TABLE {t} (id integer PRIMARY KEY, name text NOT NULL, amount numeric(12,2))"
        ),
        Flavor::MySql => format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, name varchar(100) NOT NULL, amount decimal(12,2))"
        ),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = upsert_pipeline(dir.path(), &f.url(), &t);

    // First run: ids 1..=50. Second run: ids 1..=100 twice, so most ids appear twice in
    // one batch as well as in the table already.
    let runs = [
        upsert_lines(1..=50, "first", |_| "1.00".into()),
        upsert_lines(1..=100, "second", |_| "2.00".into())
            + &upsert_lines(1..=100, "third", |i| format!("{i}.33")),
    ];
    for input in runs {
        let (path, pipeline) = (dir.path().to_owned(), pipeline.clone());
        tokio::task::spawn_blocking(move || run_stdin(&path, &pipeline, &input))
            .await
            .unwrap();
    }

    let select = match f {
        Flavor::Postgres => format!("SELECT id::text, name, amount::text FROM {t} ORDER BY {t}.id"),
        Flavor::MySql => {
            format!("SELECT CAST(id AS CHAR), name, CAST(amount AS CHAR) FROM {t} ORDER BY {t}.id")
        }
    };
    let rows = db.rows(&select).await;
    let want: Vec<Vec<Option<String>>> = (1..=100)
        .map(|i| {
            vec![
                Some(i.to_string()),
                Some(format!("third {i}")),
                Some(format!("{i}.33")),
            ]
        })
        .collect();
    assert_eq!(rows, want, "{f:?}");
    let dead = dir.path().join("dead.ndjson");
    let dead = std::fs::read_to_string(&dead).unwrap_or_default();
    assert!(dead.is_empty(), "nothing is refused by an upsert: {dead}");

    db.exec(&format!("DROP TABLE {t}")).await;
}

/// `mode: insert_new` keyed on the event id: the same upstream records sent again (a replay
/// after a crash, an HA pair's second copy) add no row, and the first copy's values stay.
async fn insert_new_by_event_id(f: Flavor) {
    let db = Db::connect(f).await;
    let t = unique_table("sluice_once");
    db.exec(&match f {
        Flavor::Postgres => {
            format!("CREATE TABLE {t} (event_id text PRIMARY KEY, name text NOT NULL)")
        }
        Flavor::MySql => format!(
            "CREATE TABLE {t} (event_id varchar(64) PRIMARY KEY, name varchar(100) NOT NULL)"
        ),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  in: {{ type: stdin, codec: ndjson, channels: [mem], event_id: {{ from: [upstream.offset] }} }}
sinks:
  db:
    type: sql
    channel: mem
    dlq: dead
    url: '{url}'
    table: {t}
    mode: insert_new
    key: [event_id]
    columns:
      event_id: {{ header: sluice.id }}
      name: {{ json: /name }}
  dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#,
        url = f.url(),
        d = dir.path().display()
    );
    let lines = |ids: std::ops::RangeInclusive<u32>, round: &str| -> String {
        ids.map(|i| {
            envelope(
                &[("upstream.offset", i.to_string())],
                &format!(r#"{{"name":"{round} {i}"}}"#),
            )
        })
        .collect()
    };
    // Records 1..=60, then 1..=100 again (a replay of the first 60, and within one batch
    // too), then 41..=100 once more.
    let runs = [
        lines(1..=60, "first"),
        lines(1..=100, "second") + &lines(1..=100, "third"),
        lines(41..=100, "fourth"),
    ];
    for input in runs {
        let (path, pipeline) = (dir.path().to_owned(), pipeline.clone());
        tokio::task::spawn_blocking(move || run_stdin(&path, &pipeline, &input))
            .await
            .unwrap();
    }
    let mut rows = db.rows(&format!("SELECT event_id, name FROM {t}")).await;
    rows.sort_by(|a, b| a[1].cmp(&b[1]));
    let mut want: Vec<Vec<Option<String>>> = (1..=100)
        .map(|i| {
            let round = if i <= 60 { "first" } else { "second" };
            vec![Some(i.to_string()), Some(format!("{round} {i}"))]
        })
        .collect();
    want.sort_by(|a, b| a[1].cmp(&b[1]));
    assert_eq!(rows, want, "{f:?}: each record once, the first copy kept");
    let dead = std::fs::read_to_string(dir.path().join("dead.ndjson")).unwrap_or_default();
    assert!(
        dead.is_empty(),
        "a record written before is not an error: {dead}"
    );
    db.exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn sql_postgres_insert_new_by_event_id() {
    insert_new_by_event_id(Flavor::Postgres).await;
}

#[tokio::test]
async fn sql_mysql_insert_new_by_event_id() {
    insert_new_by_event_id(Flavor::MySql).await;
}

#[tokio::test]
async fn sql_postgres_insert_and_dlq() {
    insert_and_dlq(Flavor::Postgres).await;
}

#[tokio::test]
async fn sql_mysql_insert_and_dlq() {
    insert_and_dlq(Flavor::MySql).await;
}

#[tokio::test]
async fn sql_postgres_upsert() {
    upsert(Flavor::Postgres).await;
}

#[tokio::test]
async fn sql_mysql_upsert() {
    upsert(Flavor::MySql).await;
}

/// A replaying source, a durable channel and `mode: insert_new` keyed on the event id make a
/// path exactly-once: `delivery: exactly_once` is accepted, and `sluice validate` says why.
/// With `mode: insert` it is refused, naming the sink.
#[test]
fn validate_accepts_exactly_once_into_rows_keyed_on_the_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let pipeline = |mode: &str| {
        format!(
            "channels:
  disk: {{ type: rocksdb, path: '{d}/disk' }}
sources:
  web: {{ type: http, listen: '127.0.0.1:0', channels: [disk], event_id: true }}
sinks:
  db:
    type: sql
    channel: disk
    delivery: exactly_once
    url: 'postgres://postgres@127.0.0.1:5432/test'
    table: t
    {mode}
    columns:
      event_id: {{ header: sluice.id }}
      body: body
"
        )
    };
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, pipeline("mode: insert_new\n    key: [event_id]")).unwrap();
    let o = crate::common::sluice()
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    assert!(
        out.contains("web → disk → db: exactly-once (sinks.db: rows are keyed on `event_id` (`mode: insert_new`)"),
        "{out}"
    );
    std::fs::write(&file, pipeline("mode: insert")).unwrap();
    let o = crate::common::sluice()
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let err = crate::common::stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("sinks.db: delivery: exactly-once: the path web → disk → db is at-least-once"),
        "{err}"
    );
}
