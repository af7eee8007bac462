//! The `spooldir` source through the real binary: part files written by another program
//! (Python's gzip and json modules) are read once, renamed when done, and a batch run ends
//! with exactly their rows; a re-run reads nothing; a SIGKILL in the middle loses nothing.

use std::{path::Path, process::Command};

use crate::common::{json_lines, lines, sluice, stderr};

/// Writes `files` part files of `rows` NDJSON rows each, gzip-compressed, with Python.
fn python_parts(dir: &Path, files: usize, rows: usize) {
    let script = format!(
        "import gzip, json, os\n\
         for f in range({files}):\n\
         \x20   tmp = os.path.join({dir:?}, '.part-%05d.tmp' % f)\n\
         \x20   with gzip.open(tmp, 'wt') as out:\n\
         \x20       for r in range({rows}):\n\
         \x20           out.write(json.dumps({{'part': f, 'row': r, 'pad': 'x' * 200}}) + '\\n')\n\
         \x20   os.rename(tmp, os.path.join({dir:?}, 'part-%05d.ndjson.gz' % f))\n",
        dir = dir.display().to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pipeline(spool: &Path, out: &Path, channel: &str) -> String {
    format!(
        "channels:\n  ch: {channel}\n\
         sources:\n  spool:\n    type: spooldir\n    path: '{spool}'\n    codec: ndjson\n    run_to_completion: true\n    min_age: 0s\n    batch_size: 1000\n    channels: [ch]\n\
         sinks:\n  out: {{ type: file, channel: ch, path: '{out}', format: ndjson }}\n",
        spool = spool.display(),
        out = out.display()
    )
}

/// (part, row) of every delivered event, from the body the codec kept.
fn rows(out: &Path) -> Vec<(u64, u64)> {
    json_lines(out)
        .iter()
        .map(|e| {
            let body: serde_json::Value =
                serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
            (
                body["part"].as_u64().unwrap(),
                body["row"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn part_files_are_read_once_renamed_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    python_parts(&spool, 3, 2500);
    std::fs::write(
        spool.join("plain.txt"),
        "{\"part\":9,\"row\":0}\nnot json\n",
    )
    .unwrap();
    let out = dir.path().join("out.ndjson");
    let p = dir.path().join("p.yaml");
    std::fs::write(&p, pipeline(&spool, &out, "{ type: memory }")).unwrap();
    let run = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let mut got = rows(&out);
    assert_eq!(got.len(), 3 * 2500 + 1);
    got.sort();
    let mut want: Vec<(u64, u64)> = (0..3)
        .flat_map(|f| (0..2500).map(move |r| (f, r)))
        .collect();
    want.push((9, 0));
    assert_eq!(got, want);
    let mut names: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "part-00000.ndjson.gz.COMPLETED",
            "part-00001.ndjson.gz.COMPLETED",
            "part-00002.ndjson.gz.COMPLETED",
            "plain.txt.COMPLETED"
        ]
    );
    // The malformed line is reported with its file (no dlq configured: counted and logged).
    let log = stderr(&run);
    assert!(
        log.contains("poison events discarded") && log.contains("plain.txt: "),
        "{log}"
    );

    // A second run finds nothing new.
    let again = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(lines(&out).len(), 3 * 2500 + 1);
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_sigkill_in_the_middle_loses_nothing() {
    use crate::common::Agent;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    python_parts(&spool, 4, 50_000);
    let out = dir.path().join("out.ndjson");
    let disk = format!("{{ type: rocksdb, path: '{}/disk' }}", dir.path().display());
    let text = pipeline(&spool, &out, &disk);
    let mut agent = Agent::start(dir.path(), "first", &text);
    let t0 = Instant::now();
    while std::fs::read(&out).map_or(0, |b| b.len()) < 2_000_000 {
        agent.assert_running();
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.kill();
    let p = dir.path().join("second.yaml");
    std::fs::write(&p, &text).unwrap();
    let run = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let mut got = rows(&out);
    let delivered = got.len();
    got.sort();
    got.dedup();
    let want: Vec<(u64, u64)> = (0..4)
        .flat_map(|f| (0..50_000).map(move |r| (f, r)))
        .collect();
    assert_eq!(got.len(), want.len(), "rows missing after the SIGKILL");
    assert_eq!(got, want);
    // At most the batches in flight are repeated.
    assert!(
        delivered - want.len() <= 20_000,
        "{} duplicates",
        delivered - want.len()
    );
}
