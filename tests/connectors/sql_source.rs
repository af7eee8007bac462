//! The `sql` source through the real binary against PostgreSQL and MariaDB: rows inserted by
//! another connection while the agent runs, a burst of inserts during a SIGKILL, a restart
//! that resumes from the saved position (through a RocksDB channel, so what was committed
//! survives the kill): every row arrives, in tracking-column order once duplicates of the
//! batch in flight are dropped. A one-off export (`run_to_completion`) ends by itself with
//! exactly the rows, and ties on the first tracking column are broken by the second.

use std::{collections::HashSet, path::Path, time::Duration};

use crate::common::{
    Agent, json_lines, sluice,
    sql::{Db, Flavor, unique_table},
    stderr,
};

fn create(f: Flavor, table: &str) -> String {
    match f {
        Flavor::Postgres => format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(10,2), \
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ),
        Flavor::MySql => format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL, amount DECIMAL(10,2), \
             updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        ),
    }
}

async fn insert(db: &Db, table: &str, from: u32, n: u32) {
    let values: Vec<String> = (from..from + n)
        .map(|i| format!("('row {i} it''s', {i}.{:02})", i % 100))
        .collect();
    db.exec(&format!(
        "INSERT INTO {table} (name, amount) VALUES {}",
        values.join(", ")
    ))
    .await;
}

/// Ids of the delivered rows, in delivery order.
fn ids(out: &Path) -> Vec<u64> {
    if !out.exists() {
        return Vec::new();
    }
    json_lines(out)
        .iter()
        .map(|e| {
            let body: serde_json::Value =
                serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
            body["id"].as_u64().unwrap()
        })
        .collect()
}

/// First occurrences only, in order.
fn first_seen(ids: &[u64]) -> Vec<u64> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|i| seen.insert(*i)).collect()
}

async fn survives_a_sigkill(f: Flavor) {
    let db = Db::connect(f).await;
    let table = unique_table("src");
    db.exec(&create(f, &table)).await;
    insert(&db, &table, 1, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let pipeline = format!(
        "channels:\n  disk: {{ type: rocksdb, path: '{d}/disk' }}\n\
         sources:\n  rows:\n    type: sql\n    url: '{url}'\n    table: {table}\n    tracking_column: id\n    \
         batch_size: 100\n    poll_interval: 100ms\n    position_file: '{d}/pos.json'\n    headers: {{ row.id: id }}\n    channels: [disk]\n\
         sinks:\n  out: {{ type: file, channel: disk, path: '{d}/out.ndjson', format: ndjson }}\n",
        url = f.url()
    );
    let out = dir.path().join("out.ndjson");
    let mut agent = Agent::start(dir.path(), "first", &pipeline);
    agent
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || {
                let n = ids(&out).len();
                if n >= 300 {
                    Ok(())
                } else {
                    Err(format!("{n} of 300 rows"))
                }
            },
        )
        .await;
    // A burst from another connection, with the agent killed in the middle of it.
    let burst = {
        let table = table.clone();
        tokio::spawn(async move {
            let db = Db::connect(f).await;
            for k in 0..20 {
                insert(&db, &table, 1001 + k * 50, 50).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.kill();
    burst.await.unwrap();
    let mut agent = Agent::start(dir.path(), "second", &pipeline);
    agent
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let n = first_seen(&ids(&out)).len();
                if n >= 2000 {
                    Ok(())
                } else {
                    Err(format!("{n} of 2000 distinct rows"))
                }
            },
        )
        .await;
    // Rows inserted while it runs are picked up too.
    insert(&db, &table, 2001, 10).await;
    agent
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let n = first_seen(&ids(&out)).len();
                if n >= 2010 {
                    Ok(())
                } else {
                    Err(format!("{n} of 2010 distinct rows"))
                }
            },
        )
        .await;
    agent.stop().await;
    let all = ids(&out);
    let want: Vec<u64> = (1..=2010).collect();
    assert_eq!(
        first_seen(&all),
        want,
        "{f:?}: rows missing or out of order"
    );
    assert!(
        all.len() - want.len() <= 200,
        "{f:?}: {} duplicates",
        all.len() - want.len()
    );
    let events = json_lines(&out);
    let e = &events[0];
    assert_eq!(e["headers"]["row.id"], "1");
    let body: serde_json::Value = serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["name"], "row 1 it's", "{f:?}: {body}");
    assert_eq!(body["amount"].to_string(), "1.01", "{f:?}: {body}");
    assert!(body["updated_at"].is_string(), "{f:?}: {body}");
    db.exec(&format!("DROP TABLE {table}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_survive_a_sigkill_and_resume() {
    survives_a_sigkill(Flavor::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_rows_survive_a_sigkill_and_resume() {
    survives_a_sigkill(Flavor::MySql).await;
}

async fn exports_once(f: Flavor) {
    let db = Db::connect(f).await;
    let table = unique_table("export");
    db.exec(&create(f, &table)).await;
    // Ten rows per timestamp: batches of 7 end inside a group, so the id must break ties.
    let ts = |g: u32| format!("2026-01-01 00:00:{g:02}");
    for g in 0..30 {
        let values: Vec<String> = (0..10)
            .map(|k| format!("('g{g} k{k}', NULL, '{}')", ts(g)))
            .collect();
        db.exec(&format!(
            "INSERT INTO {table} (name, amount, updated_at) VALUES {}",
            values.join(", ")
        ))
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let p = dir.path().join("export.yaml");
    std::fs::write(
        &p,
        format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  rows:\n    type: sql\n    url: '{url}'\n    query: SELECT id, name, updated_at FROM {table} WHERE name LIKE 'g%'\n    \
             tracking_column: [updated_at, id]\n    batch_size: 7\n    position_file: '{d}/pos.json'\n    run_to_completion: true\n    channels: [mem]\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}\n",
            url = f.url()
        ),
    )
    .unwrap();
    let run = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(run.status.success(), "{f:?}: {}", stderr(&run));
    assert!(stderr(&run).contains("export done"), "{}", stderr(&run));
    let out = dir.path().join("out.ndjson");
    assert_eq!(ids(&out), (1..=300).collect::<Vec<u64>>(), "{f:?}");
    // Only the query's columns.
    let body: serde_json::Value =
        serde_json::from_str(json_lines(&out)[0]["body"].as_str().unwrap()).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["id", "name", "updated_at"]);
    // A re-run starts after the saved position: nothing new.
    let again = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(ids(&out).len(), 300);
    // A query the database refuses stops the source with its reason, instead of retrying.
    std::fs::write(
        &p,
        format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  rows:\n    type: sql\n    url: '{url}'\n    table: {table}\n    \
             tracking_column: no_such_column\n    position_file: '{d}/pos2.json'\n    run_to_completion: true\n    channels: [mem]\n\
             sinks:\n  out: {{ type: null, channel: mem }}\n",
            url = f.url()
        ),
    )
    .unwrap();
    let bad = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("no_such_column"),
        "{f:?}: {}",
        stderr(&bad)
    );
    db.exec(&format!("DROP TABLE {table}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_export_runs_to_completion() {
    exports_once(Flavor::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_export_runs_to_completion() {
    exports_once(Flavor::MySql).await;
}
