use std::{path::Path, sync::Arc};

use super::*;

fn ev(i: usize) -> Event {
    Event::new(format!("{i}")).with_header("n", i.to_string())
}

fn bodies(l: &dyn Lease) -> Vec<usize> {
    l.events()
        .iter()
        .map(|e| std::str::from_utf8(&e.body).unwrap().parse().unwrap())
        .collect()
}

fn open(dir: &Path) -> RocksChannel {
    RocksChannel::open(dir, RocksOptions::default()).unwrap()
}

fn open_with(dir: &Path, f: impl FnOnce(&mut RocksOptions)) -> RocksChannel {
    let mut o = RocksOptions::default();
    f(&mut o);
    RocksChannel::open(dir, o).unwrap()
}

const NOW: Duration = Duration::ZERO;

async fn drain(ch: &RocksChannel) -> Vec<usize> {
    let mut got = Vec::new();
    while let Some(l) = ch.take(7, NOW).await.unwrap() {
        got.extend(bodies(&*l));
        l.commit().await.unwrap();
    }
    got
}

#[test]
fn spans_merge_and_split() {
    let mut v = VecDeque::new();
    for (s, e) in [(10, 12), (0, 3), (5, 7), (3, 5), (12, 13)] {
        insert_span(&mut v, Span { start: s, end: e });
    }
    assert_eq!(
        Vec::from(v.clone()),
        [Span { start: 0, end: 7 }, Span { start: 10, end: 13 }]
    );
    let (taken, n) = take_front(&mut v, 9);
    assert_eq!(n, 9);
    assert_eq!(
        taken,
        [Span { start: 0, end: 7 }, Span { start: 10, end: 12 }]
    );
    assert_eq!(Vec::from(v), [Span { start: 12, end: 13 }]);
}

#[tokio::test]
async fn rollback_returns_events_to_the_head_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path());
    ch.put((0..5).map(ev).collect()).await.unwrap();
    let a = ch.take(2, NOW).await.unwrap().unwrap();
    let b = ch.take(2, NOW).await.unwrap().unwrap();
    assert_eq!((bodies(&*a), bodies(&*b)), (vec![0, 1], vec![2, 3]));
    assert_eq!(a.events()[1].headers.get("n"), Some("1"));
    b.rollback().await.unwrap();
    drop(a); // dropping is a rollback
    let c = ch.take(10, NOW).await.unwrap().unwrap();
    assert_eq!(bodies(&*c), [0, 1, 2, 3, 4]);
    assert_eq!(ch.stats().in_flight, 5);
    c.commit().await.unwrap();
    assert_eq!(
        ch.stats(),
        ChannelStats {
            events: 0,
            bytes: 0,
            capacity_events: 1_000_000,
            in_flight: 0
        }
    );
}

#[tokio::test]
async fn a_reopened_channel_holds_everything_not_committed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        ch.put((0..10).map(ev).collect()).await.unwrap();
        ch.put((10..20).map(ev).collect()).await.unwrap();
        let a = ch.take(3, NOW).await.unwrap().unwrap();
        let b = ch.take(4, NOW).await.unwrap().unwrap();
        b.commit().await.unwrap(); // 3..7 gone, 0..3 still leased when we stop
        // Leases are not stored, so what a crash leaves on disk is what this leaves.
        drop(a);
    }
    let ch = open(dir.path());
    assert_eq!(ch.stats().events, 16);
    let bytes = ch.stats().bytes;
    assert!(bytes > 16 * 5, "stored bytes are counted on open: {bytes}");
    ch.put(vec![ev(20)]).await.unwrap();
    let expected: Vec<usize> = (0..3).chain(7..21).collect();
    assert_eq!(drain(&ch).await, expected);
}

#[tokio::test]
async fn capacity_counts_leased_events_and_put_waits_for_commit() {
    let dir = tempfile::tempdir().unwrap();
    let ch = Arc::new(open_with(dir.path(), |o| o.capacity = 4));
    ch.put((0..4).map(ev).collect()).await.unwrap();
    let lease = ch.take(2, NOW).await.unwrap().unwrap();
    assert!(matches!(ch.try_put(vec![ev(9)]), Err(ChannelError::Full)));
    assert!(matches!(
        ch.put((0..5).map(ev).collect()).await,
        Err(ChannelError::BatchTooLarge { .. })
    ));
    let ch2 = Arc::clone(&ch);
    let putter = tokio::spawn(async move { ch2.put(vec![ev(4), ev(5)]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!putter.is_finished(), "put must wait while full");
    lease.commit().await.unwrap();
    putter.await.unwrap().unwrap();
    assert_eq!(drain(&ch).await, [2, 3, 4, 5]);
}

#[tokio::test]
async fn max_bytes_limits_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let one = record::encoded_len(&ev(1));
    let ch = open_with(dir.path(), |o| o.max_bytes = Some(3 * one as u64));
    ch.put((1..4).map(ev).collect()).await.unwrap();
    assert_eq!(ch.stats().bytes, 3 * one);
    assert!(matches!(ch.try_put(vec![ev(4)]), Err(ChannelError::Full)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_fsyncs_and_takers_never_share_events() {
    let dir = tempfile::tempdir().unwrap();
    let ch = Arc::new(open(dir.path()));
    let mut puts = Vec::new();
    for p in 0..32 {
        let ch = Arc::clone(&ch);
        puts.push(tokio::spawn(async move {
            ch.put((p * 10..p * 10 + 10).map(ev).collect()).await
        }));
    }
    for p in puts {
        p.await.unwrap().unwrap();
    }
    let fsyncs = ch.storage_stats().fsyncs;
    assert!(
        (1..32).contains(&fsyncs),
        "32 concurrent puts should share syncs, got {fsyncs}"
    );
    let mut takers = Vec::new();
    for _ in 0..3 {
        let ch = Arc::clone(&ch);
        takers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(l) = ch.take(9, NOW).await.unwrap() {
                got.extend(bodies(&*l));
                l.commit().await.unwrap();
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in takers {
        let got = t.await.unwrap();
        // Each put's events stay in order within one taker's view.
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..320).collect::<Vec<_>>());
}

#[tokio::test]
async fn fsync_policies() {
    let dir = tempfile::tempdir().unwrap();
    let never = open_with(&dir.path().join("never"), |o| o.fsync = Fsync::Never);
    for i in 0..5 {
        never.put(vec![ev(i)]).await.unwrap();
    }
    assert_eq!(never.storage_stats().fsyncs, 0);

    let per = open(&dir.path().join("per"));
    for i in 0..5 {
        per.put(vec![ev(i)]).await.unwrap();
    }
    assert_eq!(
        per.storage_stats().fsyncs,
        5,
        "sequential puts: one sync each"
    );

    let every = open_with(&dir.path().join("interval"), |o| {
        o.fsync = Fsync::Interval(Duration::from_millis(20))
    });
    for i in 0..20 {
        every.put(vec![ev(i)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let n = every.storage_stats().fsyncs;
    assert!((1..20).contains(&n), "interval syncs: {n}");
}

#[tokio::test]
async fn a_failed_write_refuses_puts_keeps_takes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path());
    ch.put((0..4).map(ev).collect()).await.unwrap();
    ch.fail_writes(true);
    assert!(matches!(
        ch.put(vec![ev(9)]).await,
        Err(ChannelError::Storage(_))
    ));
    assert!(ch.health().unwrap_err().contains("No space left"));
    assert!(matches!(
        ch.try_put(vec![ev(9)]),
        Err(ChannelError::Storage(_))
    ));
    assert_eq!(
        ch.stats().events,
        4,
        "the refused put's reservation is released"
    );
    // Takes still work; a commit that cannot be written is retried later.
    let l = ch.take(2, NOW).await.unwrap().unwrap();
    assert_eq!(bodies(&*l), [0, 1]);
    assert!(l.commit().await.is_err());
    assert_eq!(ch.stats().events, 2, "committed in memory: not redelivered");

    ch.fail_writes(false);
    tokio::time::sleep(RETRY_WRITES_AFTER).await;
    ch.put(vec![ev(4)]).await.unwrap();
    assert!(ch.health().is_ok());
    drop(ch);
    let ch = open(dir.path());
    assert_eq!(drain(&ch).await, [2, 3, 4], "the failed delete was retried");
}

#[tokio::test]
async fn corrupt_records_are_quarantined_and_counted_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        ch.put((0..6).map(ev).collect()).await.unwrap();
    }
    {
        let (db, _) = open_db(dir.path(), false).unwrap();
        let cf = db.cf_handle(CF_EVENTS).unwrap();
        let mut v = db.get_cf(cf, key(2)).unwrap().unwrap();
        v[7] ^= 0x40;
        db.put_cf(cf, key(2), v).unwrap();
        db.put_cf(cf, key(4), b"garbage").unwrap();
        db.put_cf(cf, b"not-a-seq", b"x").unwrap();
    }
    let counters = StorageCounters::default();
    let ch = open_with(dir.path(), |o| o.counters = counters.clone());
    assert_eq!(
        counters.corrupt.get(),
        1,
        "the odd key is quarantined on open"
    );
    assert_eq!(drain(&ch).await, [0, 1, 3, 5]);
    assert_eq!(counters.corrupt.get(), 3);
    assert_eq!(ch.stats().events, 0);
    assert_eq!(ch.stats().bytes, 0);
    drop(ch);
    let i = tools::inspect(dir.path(), 0).unwrap();
    assert_eq!((i.events, i.quarantined), (0, 3));
    // A new event never reuses a quarantined or a delivered sequence number.
    let ch = open(dir.path());
    ch.put(vec![ev(6)]).await.unwrap();
    assert_eq!(ch.shared.core.lock().visible[0].start, 6);
}

#[tokio::test]
async fn positions_survive_restarts_and_never_repeat_after_a_drain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        ch.put((0..5).map(ev).collect()).await.unwrap();
        let l = ch.take(3, NOW).await.unwrap().unwrap();
        assert_eq!(l.position(), Some(0));
        drop(l); // rolled back: the same events, the same position
        let l = ch.take(3, NOW).await.unwrap().unwrap();
        assert_eq!(l.position(), Some(0));
        l.commit().await.unwrap();
        ch.close();
    }
    {
        // Reopened with events stored: the rest keeps its numbers.
        let ch = open(dir.path());
        let l = ch.take(10, NOW).await.unwrap().unwrap();
        assert_eq!((l.position(), bodies(&*l)), (Some(3), vec![3, 4]));
        l.commit().await.unwrap();
        ch.close();
    }
    {
        // Reopened empty: numbering goes on instead of starting at 0 again.
        let ch = open(dir.path());
        ch.put(vec![ev(9)]).await.unwrap();
        let l = ch.take(10, NOW).await.unwrap().unwrap();
        assert_eq!(l.position(), Some(5));
    }
}

#[tokio::test]
async fn marks_are_committed_with_their_puts_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mark = |k: &str, v: &[u8]| Mark {
        key: k.into(),
        value: v.to_vec(),
    };
    let id = {
        let ch = open(dir.path());
        assert_eq!(ch.marks("hop/").unwrap(), Some(vec![]));
        ch.put_marked(
            vec![ev(0), ev(1)],
            &[mark("hop/in/a", b"1"), mark("hop/in/b", b"2")],
        )
        .await
        .unwrap();
        // Only marks: nothing to take, the mark is replaced.
        ch.put_marked(vec![], &[mark("hop/in/a", b"3")])
            .await
            .unwrap();
        assert_eq!(ch.stats().events, 2);
        // A refused put writes no mark.
        let too_big: Vec<Event> = (0..200).map(ev).collect();
        let small = open_with(tempfile::tempdir().unwrap().path(), |o| o.capacity = 10);
        assert!(small.put_marked(too_big, &[mark("x", b"1")]).await.is_err());
        assert_eq!(small.marks("").unwrap(), Some(vec![]));
        ch.close();
        ch.id().expect("a rocksdb channel has an id")
    };
    let ch = open(dir.path());
    assert_eq!(
        ch.id().as_deref(),
        Some(id.as_str()),
        "the id survives a restart"
    );
    assert_eq!(
        ch.marks("hop/in/").unwrap(),
        Some(vec![mark("hop/in/a", b"3"), mark("hop/in/b", b"2")])
    );
    assert_eq!(ch.marks("hop/other/").unwrap(), Some(vec![]));
    // An empty value deletes.
    ch.put_marked(vec![ev(2)], &[mark("hop/in/b", b"")])
        .await
        .unwrap();
    assert_eq!(
        ch.marks("hop/").unwrap(),
        Some(vec![mark("hop/in/a", b"3")])
    );
    assert_eq!(drain(&ch).await, vec![0, 1, 2]);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(open(other.path()).id(), Some(id), "ids are per directory");
}

#[test]
fn a_directory_of_another_format_is_refused_with_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, _) = open_db(dir.path(), false).unwrap();
        check_format(&db).unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, META_FORMAT, [record::FORMAT_VERSION + 1])
            .unwrap();
        let e = check_format(&db).unwrap_err();
        assert!(
            matches!(&e, StoreError::Format { found, expected }
                if *found == [record::FORMAT_VERSION + 1] && *expected == record::FORMAT_VERSION),
            "{e:?}"
        );
    }
    let e = RocksChannel::open(dir.path(), RocksOptions::default())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "channel storage error: {}: written in channel format [{}]; this build reads format {}",
            dir.path().display(),
            record::FORMAT_VERSION + 1,
            record::FORMAT_VERSION
        )
    );
}
