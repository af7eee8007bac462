//! The RocksDB channel's storage under damage and over time: corrupt records are quarantined
//! and counted while every intact one is delivered; a torn write-ahead-log tail still opens;
//! a channel directory written by format v1 (`tests/fixtures/rocks-v1`) still reads exactly
//! the same; and the `sluice channel inspect|fsck|purge` commands work on a real directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use sluice_core::{channel::Channel, event::Event, metrics::Metrics};
use sluice_rocks::{
    CF_EVENTS, CF_META, CF_QUARANTINE, Fsync, RocksChannel, RocksOptions, StorageCounters, record,
    rocksdb, tools,
};

fn ev(i: u64) -> Event {
    Event::new(format!("event-{i}")).with_header("i", i.to_string())
}

fn numbers(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.headers.get("i").unwrap().parse().unwrap())
        .collect()
}

async fn drain(ch: &RocksChannel) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(l) = ch.take(64, Duration::ZERO).await.unwrap() {
        out.extend_from_slice(l.events());
        l.commit().await.unwrap();
    }
    out
}

/// The channel's database opened directly, as a disk fault or another program would see it.
fn raw_db(dir: &Path) -> rocksdb::DB {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(false);
    rocksdb::DB::open_cf(&o, dir, [CF_EVENTS, CF_QUARANTINE, CF_META]).unwrap()
}

#[tokio::test]
async fn corrupt_records_are_quarantined_counted_and_never_block_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let ch = RocksChannel::open(dir, RocksOptions::default()).unwrap();
        for b in 0..10 {
            ch.put((b * 10..b * 10 + 10).map(ev).collect())
                .await
                .unwrap();
        }
    }
    {
        let db = raw_db(dir);
        // Some records on disk (SST), some only in the log: damage both kinds.
        db.flush_cf(db.cf_handle(CF_EVENTS).unwrap()).unwrap();
        let cf = db.cf_handle(CF_EVENTS).unwrap();
        let key = |s: u64| record::key(s);
        let mut v = db.get_cf(cf, key(10)).unwrap().unwrap();
        let mid = v.len() / 2;
        v[mid] ^= 0xff; // a flipped byte in the body
        db.put_cf(cf, key(10), &v).unwrap();
        db.put_cf(cf, key(20), b"\x01garbage garbage").unwrap();
        let v = db.get_cf(cf, key(30)).unwrap().unwrap();
        db.put_cf(cf, key(30), &v[..3]).unwrap(); // truncated
        let mut v = db.get_cf(cf, key(99)).unwrap().unwrap();
        v[0] = 9; // a format version from the future
        db.put_cf(cf, key(99), &v).unwrap();
    }
    let fsck = tools::fsck(dir, false).unwrap();
    assert_eq!(fsck.checked, 100);
    assert_eq!(fsck.corrupt.len(), 4, "{fsck:?}");

    let metrics = Metrics::new();
    let m = metrics.channel("disk");
    let opts = RocksOptions {
        counters: StorageCounters {
            corrupt: m.corrupt.clone(),
            fsyncs: m.fsyncs.clone(),
        },
        ..RocksOptions::default()
    };
    let ch = RocksChannel::open(dir, opts.clone()).unwrap();
    let got = drain(&ch).await;
    let expected: Vec<u64> = (0..100).filter(|i| ![10, 20, 30, 99].contains(i)).collect();
    assert_eq!(numbers(&got), expected, "every intact record, in order");
    for e in &got {
        assert_eq!(
            *e,
            ev(numbers(std::slice::from_ref(e))[0]),
            "content intact"
        );
    }
    assert!(
        metrics
            .encode()
            .contains("sluice_channel_corrupt_records_total{component=\"disk\"} 4"),
        "{}",
        metrics.encode()
    );
    assert_eq!(ch.stats().events, 0);
    drop(ch);

    // Quarantined for good: not seen again, kept for forensics.
    let i = tools::inspect(dir, 0).unwrap();
    assert_eq!((i.events, i.quarantined), (0, 4));
    let ch = RocksChannel::open(dir, opts).unwrap();
    assert!(drain(&ch).await.is_empty());
    assert_eq!(m.corrupt.get(), 4, "no crash loop, no recount");
}

/// The newest write-ahead log in a channel directory.
fn newest_log(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a write-ahead log")
}

/// Writes 50 batches of 10 events; the process "dies" with them only in the log (no flush).
async fn fifty_batches(dir: &Path) {
    let ch = RocksChannel::open(
        dir,
        RocksOptions {
            fsync: Fsync::Never,
            ..RocksOptions::default()
        },
    )
    .unwrap();
    for b in 0..50 {
        ch.put((b * 10..b * 10 + 10).map(ev).collect())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_torn_log_tail_opens_and_delivers_every_intact_record() {
    let tmp = tempfile::tempdir().unwrap();
    fifty_batches(tmp.path()).await;
    let log = newest_log(tmp.path());
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(len > 5000, "the events are in the log: {len} bytes");
    // Cut into the last batch, as a crash in the middle of its write would.
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);

    let ch = RocksChannel::open(tmp.path(), RocksOptions::default()).unwrap();
    let got = drain(&ch).await;
    assert_eq!(numbers(&got), (0..490).collect::<Vec<_>>());
    assert!(
        got.iter()
            .all(|e| *e == ev(numbers(std::slice::from_ref(e))[0]))
    );
}

#[tokio::test]
async fn a_log_cut_anywhere_loses_whole_batches_only() {
    for keep in [0.25, 0.5, 0.9] {
        let tmp = tempfile::tempdir().unwrap();
        fifty_batches(tmp.path()).await;
        let log = newest_log(tmp.path());
        let len = std::fs::metadata(&log).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len((len as f64 * keep) as u64).unwrap();
        drop(f);
        let ch = RocksChannel::open(tmp.path(), RocksOptions::default()).unwrap();
        let got = numbers(&drain(&ch).await);
        assert!(
            got.len() % 10 == 0 && got == (0..got.len() as u64).collect::<Vec<_>>(),
            "kept {keep}: a prefix of whole batches, got {} events",
            got.len()
        );
    }
}

// ------------------------------------------------------------------ the v1 fixture

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rocks-v1")
}

/// The events the fixture holds, in order (sequence numbers 2..=7).
fn fixture_events() -> Vec<Event> {
    vec![
        Event::new("first"),
        Event::new("").with_header("k", "v"),
        Event::new(vec![0u8, 1, 2, 255, b'\n']),
        Event::new("third")
            .with_header("ünï", "cödé")
            .with_header("id", "3"),
        Event::new("x".repeat(300)).with_header("long", "v".repeat(200)),
        Event::new("last")
            .with_header("a", "1")
            .with_header("b", "2"),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Regenerates the fixture. Only for a deliberate format change (with a new version byte):
/// `cargo test --test engine rocks_storage::write_v1_fixture -- --ignored`.
#[tokio::test]
#[ignore]
async fn write_v1_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    {
        let ch = RocksChannel::open(&dir, RocksOptions::default()).unwrap();
        ch.put(vec![Event::new("gone-0"), Event::new("gone-1")])
            .await
            .unwrap();
        let l = ch.take(2, Duration::ZERO).await.unwrap().unwrap();
        l.commit().await.unwrap();
        ch.put(fixture_events()[..3].to_vec()).await.unwrap();
    }
    {
        // The first events in an SST file, the rest only in the log.
        let db = raw_db(&dir);
        db.flush_cf(db.cf_handle(CF_EVENTS).unwrap()).unwrap();
    }
    {
        let ch = RocksChannel::open(&dir, RocksOptions::default()).unwrap();
        ch.put(fixture_events()[3..].to_vec()).await.unwrap();
        ch.put(vec![Event::new("to-be-corrupted")]).await.unwrap();
    }
    {
        let db = raw_db(&dir);
        let cf = db.cf_handle(CF_EVENTS).unwrap();
        db.put_cf(cf, record::key(8), b"\x01\0\0\0\0corrupt")
            .unwrap();
    }
    {
        // Opening and taking quarantines seq 8; the lease is rolled back.
        let ch = RocksChannel::open(&dir, RocksOptions::default()).unwrap();
        let l = ch.take(100, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(l.events(), fixture_events());
    }
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("LOG") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[tokio::test]
async fn the_v1_fixture_reads_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ch");
    copy_dir(&fixture(), &dir);

    // The stored bytes themselves, independent of today's encoder.
    {
        let db = raw_db(&dir);
        let cf = db.cf_handle(CF_EVENTS).unwrap();
        let v = db.get_cf(cf, record::key(3)).unwrap().unwrap();
        let mut h = crc32fast::Hasher::new();
        h.update(&record::key(3));
        h.update(b"\x01\x01k\x01v");
        let mut expected = vec![1u8];
        expected.extend_from_slice(&h.finalize().to_le_bytes());
        expected.extend_from_slice(b"\x01\x01k\x01v");
        assert_eq!(hex::encode(v), hex::encode(expected), "seq 3 as stored");
        let meta = db.cf_handle(CF_META).unwrap();
        assert_eq!(db.get_cf(meta, b"format").unwrap().unwrap(), [1]);
    }

    let i = tools::inspect(&dir, 10).unwrap();
    assert_eq!(
        (i.events, i.oldest, i.newest, i.quarantined),
        (6, Some(2), Some(7), 1)
    );
    let ch = RocksChannel::open(&dir, RocksOptions::default()).unwrap();
    assert_eq!(ch.stats().events, 6);
    let l = ch.take(100, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(l.events(), fixture_events());
    l.commit().await.unwrap();
    ch.put(vec![Event::new("new")]).await.unwrap();
    let l = ch.take(100, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(l.events(), [Event::new("new")]);
}

// ------------------------------------------------------------------ the CLI

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn channel_commands_inspect_fsck_and_purge() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ch");
    copy_dir(&fixture(), &dir);
    let d = dir.to_str().unwrap();

    let o = sluice(&["channel", "inspect", d, "--samples", "2"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("record format 1"), "{out}");
    assert!(out.contains("events       6 ("), "{out}");
    assert!(out.contains("sequence     2 ..= 7"), "{out}");
    assert!(out.contains("quarantined  1 ("), "{out}");
    assert!(out.contains(r#"2  {"body":"first","headers":{}}"#), "{out}");
    assert!(
        out.contains(r#"3  {"body":"","headers":{"k":"v"}}"#),
        "{out}"
    );

    let o = sluice(&["channel", "fsck", d]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("checked 6 records: 6 ok, 0 corrupt"));

    {
        let db = raw_db(&dir);
        let cf = db.cf_handle(CF_EVENTS).unwrap();
        db.put_cf(cf, record::key(5), b"\x01\0\0\0\0bad").unwrap();
    }
    let o = sluice(&["channel", "fsck", d]);
    assert_eq!(o.status.code(), Some(1), "corrupt records remain");
    assert!(
        stdout(&o).contains("5  checksum mismatch"),
        "{}",
        stdout(&o)
    );
    let o = sluice(&["channel", "fsck", d, "--quarantine"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("moved 1 records to the quarantine"));
    assert!(sluice(&["channel", "fsck", d]).status.success());

    let o = sluice(&["channel", "purge", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("would delete 5 events; nothing done"));
    let o = sluice(&["channel", "purge", d, "--yes", "--include-quarantine"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("deleted 5 events and 2 quarantined records"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&sluice(&["channel", "inspect", d])).contains("events       0 ("));

    let o = sluice(&[
        "channel",
        "inspect",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a channel directory"));
    assert!(!tmp.path().join("nope").exists(), "inspect creates nothing");
}
