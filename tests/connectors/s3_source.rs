//! The `s3` source through the real binary against moto, with objects written by independent
//! tools: Parquet part files by pyarrow (several row groups, as Spark writes them), gzip
//! NDJSON and CSV by Python's standard library, all uploaded with boto3. A batch run ends with
//! exit 0 and exactly the rows; a re-run reads nothing new; a run killed part way and run
//! again loses nothing. The seeds' ETL example (Parquet in S3 → DynamoDB) runs as shipped and
//! boto3 counts the items.

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use crate::common::{Agent, aws::endpoint, json_lines, python, repo_root, sluice, stderr, unique};

/// Runs a Python script with boto3 clients `s3` and `ddb` on moto; returns what it printed.
fn py(body: &str) -> String {
    let script = format!(
        "import boto3, io, gzip, json, csv\n\
         import pyarrow as pa, pyarrow.parquet as pq\n\
         kw = dict(endpoint_url={ep:?}, region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         s3 = boto3.client('s3', **kw)\n\
         ddb = boto3.client('dynamodb', **kw)\n\
         {body}\n",
        ep = endpoint()
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python with boto3 and pyarrow (scripts/test installs them)");
    assert!(
        out.status.success(),
        "python failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `parts` Parquet files of `rows` rows each (two row groups apiece) under `prefix`, ids
/// numbered from 0 across them; plus, with `extras`, a gzip NDJSON object and a CSV object.
fn write_export(bucket: &str, prefix: &str, parts: usize, rows: usize, extras: bool) {
    py(&format!(
        "s3.create_bucket(Bucket={bucket:?})\n\
         for p in range({parts}):\n\
         \x20   ids = list(range(p * {rows}, (p + 1) * {rows}))\n\
         \x20   t = pa.table({{'id': pa.array(ids, pa.int64()), 'name': ['name %d' % i for i in ids], 'amount': [i / 4 for i in ids]}})\n\
         \x20   buf = io.BytesIO()\n\
         \x20   pq.write_table(t, buf, row_group_size=max(1, {rows} // 2))\n\
         \x20   s3.put_object(Bucket={bucket:?}, Key='{prefix}part-%05d.parquet' % p, Body=buf.getvalue())\n\
         if {extras}:\n\
         \x20   lines = ''.join(json.dumps({{'id': 1000000 + i, 'name': 'nd %d' % i}}) + '\\n' for i in range(100))\n\
         \x20   s3.put_object(Bucket={bucket:?}, Key='{prefix}extra.ndjson.gz', Body=gzip.compress(lines.encode()))\n\
         \x20   out = io.StringIO(); w = csv.writer(out); w.writerow(['id', 'name'])\n\
         \x20   for i in range(10): w.writerow([2000000 + i, 'csv, %d' % i])\n\
         \x20   s3.put_object(Bucket={bucket:?}, Key='{prefix}list.csv', Body=out.getvalue().encode())\n\
         \x20   s3.put_object(Bucket={bucket:?}, Key='{prefix}_SUCCESS', Body=b'')\n",
        extras = if extras { "True" } else { "False" }
    ));
}

fn pipeline(dir: &Path, bucket: &str, prefix: &str, channel: &str, out: &str) -> String {
    let d = dir.display();
    format!(
        "channels:\n  ch: {channel}\n\
         sources:\n  export: {{ type: s3, endpoint: '{ep}', region: us-east-1, force_path_style: true, bucket: {bucket}, prefix: '{prefix}', position_file: '{d}/{out}.objects.json', batch_size: 1000, channels: [ch] }}\n\
         sinks:\n  out: {{ type: file, channel: ch, path: '{d}/{out}.ndjson', format: ndjson }}\n",
        ep = endpoint()
    )
}

/// The `id` of every delivered row.
fn ids(path: &Path) -> Vec<u64> {
    if !path.exists() {
        return Vec::new();
    }
    json_lines(path)
        .iter()
        .map(|e| {
            let body: serde_json::Value =
                serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
            // CSV values are strings; Parquet and NDJSON ids are numbers.
            body["id"]
                .as_u64()
                .or_else(|| body["id"].as_str().and_then(|s| s.parse().ok()))
                .unwrap()
        })
        .collect()
}

fn run(dir: &Path, name: &str, text: &str) -> std::process::Output {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    sluice()
        .arg("-p")
        .arg(&p)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn part_files_are_read_once_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("sluice-export");
    let prefix = "orders/dt=2026-12-07/";
    tokio::task::block_in_place(|| write_export(&bucket, prefix, 3, 5000, true));
    let text = pipeline(dir.path(), &bucket, prefix, "{ type: memory }", "out");
    let first = tokio::task::block_in_place(|| run(dir.path(), "first", &text));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("every object read; done"),
        "{}",
        stderr(&first)
    );
    let out = dir.path().join("out.ndjson");
    let mut got = ids(&out);
    assert_eq!(got.len(), 15_000 + 100 + 10);
    got.sort();
    let want: Vec<u64> = (0..15_000)
        .chain(1_000_000..1_000_100)
        .chain(2_000_000..2_000_010)
        .collect();
    assert_eq!(got, want);
    let events = json_lines(&out);
    let parquet = events
        .iter()
        .find(|e| e["headers"]["s3.key"] == format!("{prefix}part-00001.parquet"))
        .unwrap();
    let row: serde_json::Value = serde_json::from_str(parquet["body"].as_str().unwrap()).unwrap();
    let id = row["id"].as_u64().unwrap();
    assert_eq!(row["name"], format!("name {id}"));
    assert_eq!(row["amount"].as_f64().unwrap(), id as f64 / 4.0);
    let csv = events
        .iter()
        .find(|e| e["headers"]["s3.key"] == format!("{prefix}list.csv"))
        .unwrap();
    assert_eq!(csv["body"], r#"{"id":"2000000","name":"csv, 0"}"#);

    // Nothing new: the re-run reads nothing and still ends cleanly.
    let again = tokio::task::block_in_place(|| run(dir.path(), "again", &text));
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(ids(&out).len(), 15_110);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_part_way_and_run_again_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("sluice-export");
    tokio::task::block_in_place(|| write_export(&bucket, "big/", 8, 25_000, false));
    let d = dir.path().display();
    let text = pipeline(
        dir.path(),
        &bucket,
        "big/",
        &format!("{{ type: rocksdb, path: '{d}/disk' }}"),
        "out",
    );
    let out = dir.path().join("out.ndjson");
    let mut agent = Agent::start_env(
        dir.path(),
        "first",
        &text,
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    agent
        .wait_until(
            Duration::from_secs(120),
            Duration::from_millis(20),
            async || {
                let n =
                    std::fs::read(&out).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
                if n >= 60_000 {
                    Ok(())
                } else {
                    Err(format!("{n} of 60000 rows"))
                }
            },
        )
        .await;
    agent.kill();
    let second = tokio::task::block_in_place(|| run(dir.path(), "second", &text));
    assert!(second.status.success(), "{}", stderr(&second));
    let all = ids(&out);
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 200_000, "rows missing after the kill");
    assert_eq!(distinct, (0..200_000).collect());
    // At most the objects in flight were read twice.
    assert!(
        all.len() - 200_000 <= 2 * 25_000,
        "{} duplicates",
        all.len() - 200_000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_parquet_to_dynamodb_example_runs_as_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("spark-output");
    let table = unique("orders");
    tokio::task::block_in_place(|| {
        write_export(&bucket, "orders/", 4, 1000, false);
        py(&format!(
            "ddb.create_table(TableName={table:?}, AttributeDefinitions=[{{'AttributeName': 'id', 'AttributeType': 'N'}}], \
             KeySchema=[{{'AttributeName': 'id', 'KeyType': 'HASH'}}], BillingMode='PAY_PER_REQUEST')"
        ));
    });
    let example = repo_root().join("examples/s3-parquet-to-dynamodb.yaml");
    let out = sluice()
        .arg("--pipeline")
        .arg(&example)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("S3_ENDPOINT", endpoint())
        .env("DYNAMODB_ENDPOINT", endpoint())
        .env("EXPORT_BUCKET", &bucket)
        .env("TABLE", &table)
        .env("SLUICE_OUT", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = tokio::task::block_in_place(|| {
        py(&format!(
            "items = []\nkw2 = dict(TableName={table:?})\n\
             while True:\n\
             \x20   r = ddb.scan(**kw2)\n\
             \x20   items += r['Items']\n\
             \x20   if 'LastEvaluatedKey' not in r: break\n\
             \x20   kw2['ExclusiveStartKey'] = r['LastEvaluatedKey']\n\
             print(len(items))\n\
             one = [i for i in items if i['id']['N'] == '1234'][0]\n\
             print(json.dumps(one, sort_keys=True))"
        ))
    });
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("4000"), "{text}");
    let item: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(item["name"]["S"], "name 1234");
    assert_eq!(item["amount"]["N"], "308.5");
}
