//! Group commit: one thread owns every write to a channel's database.
//!
//! Puts, commit deletes and quarantine moves queue up while the previous write (and its fsync)
//! runs; the thread then takes everything queued, builds one `WriteBatch`, writes it once —
//! synced if it holds a put and the policy is `per_commit` — and answers every request. So N
//! concurrent puts cost one fsync, not N. The thread also publishes written puts to the
//! channel's visible spans and releases the reservation of failed ones, so a put whose caller
//! went away is still accounted for. It never blocks the async runtime: it is a plain thread.

use std::{
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rocksdb::{ColumnFamily, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use super::{
    CF_EVENTS, CF_META, CF_QUARANTINE, Core, Fsync, META_NEXT_SEQ, Span, StoreError, insert_span,
    record::key,
};

/// Most requests merged into one write.
const MAX_GROUP: usize = 4096;
/// Most put bytes merged into one write.
const MAX_GROUP_BYTES: usize = 64 << 20;
/// Spans at least this long are deleted with one range tombstone instead of point deletes.
const RANGE_DELETE_MIN: usize = 8;

pub(super) enum Op {
    /// Records encoded back to back in `buf`: record `i` ends at `ends[i]` and is stored under
    /// `first + i`. `bytes` is what the put reserved.
    Put {
        first: u64,
        buf: Vec<u8>,
        ends: Vec<usize>,
        bytes: usize,
        /// Marks (full meta key, value; an empty value deletes) written with the events.
        marks: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Committed spans.
    Delete(Vec<Span>),
    /// Records (key, raw value) to move from `events` to `quarantine`.
    Quarantine(Vec<(Vec<u8>, Vec<u8>)>),
}

pub(super) struct Request {
    pub op: Op,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

pub(super) fn spawn(
    core: Arc<Core>,
    rx: mpsc::Receiver<Request>,
    fsync: Fsync,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-rocks-writer".into())
        .spawn(move || Writer::new(core, fsync).run(rx))
}

struct Writer {
    core: Arc<Core>,
    fsync: Fsync,
    /// Deletes whose write failed; retried with the next write.
    retry_deletes: Vec<Span>,
    /// The reserve file was deleted after a full disk, and is not back yet.
    released_ballast: bool,
    /// The last flush for disk space ([`Writer::flush_if_space_low`]).
    last_flush: Instant,
    /// Something was written since the last sync.
    dirty: bool,
    last_sync: Instant,
}

impl Writer {
    fn new(core: Arc<Core>, fsync: Fsync) -> Self {
        Writer {
            core,
            fsync,
            retry_deletes: Vec::new(),
            released_ballast: false,
            last_flush: Instant::now(),
            dirty: false,
            last_sync: Instant::now(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match self.fsync {
                Fsync::Interval(every) if self.dirty => {
                    let due = self.last_sync + every;
                    match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(r) => r,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sync_log();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut group = vec![first];
            let mut bytes = 0;
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        if let Op::Put { buf, .. } = &r.op {
                            bytes += buf.len();
                        }
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.write(group);
            if let Fsync::Interval(every) = self.fsync {
                if self.dirty && self.last_sync.elapsed() >= every {
                    self.sync_log();
                }
            }
        }
        // Channel dropped: leave nothing unsynced behind, whatever the policy.
        if self.dirty {
            self.sync_log();
        }
    }

    fn sync_log(&mut self) {
        match self.core.db.flush_wal(true) {
            Ok(()) => {
                self.core.counters.fsyncs.inc();
                self.dirty = false;
                self.last_sync = Instant::now();
            }
            Err(e) => {
                tracing::error!(channel = %self.core.path.display(), error = %e, "syncing the write-ahead log failed");
                self.core.lock().failed = Some((e.to_string(), Instant::now()));
            }
        }
    }

    /// After deletes, while puts are refused for lack of space: flushes the memtables, so
    /// RocksDB drops the write-ahead logs that held the deleted events and the space comes
    /// back (at most once a second; at once when the channel is empty).
    fn flush_if_space_low(&mut self) {
        let (low, empty) = {
            let s = self.core.lock();
            (s.space_low, s.held_events == 0)
        };
        if !low || (!empty && self.last_flush.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.last_flush = Instant::now();
        for name in [CF_EVENTS, CF_META, CF_QUARANTINE] {
            let flushed = self
                .core
                .cf(name)
                .and_then(|cf| Ok(self.core.db.flush_cf(cf)?));
            if let Err(e) = flushed {
                tracing::warn!(channel = %self.core.path.display(), error = %e, "flushing to free disk space failed");
                return;
            }
        }
        tracing::info!(channel = %self.core.path.display(), "flushed to free disk space");
    }

    fn write(&mut self, group: Vec<Request>) {
        let has_put = group.iter().any(|r| matches!(r.op, Op::Put { .. }));
        let sync = has_put && self.fsync == Fsync::PerCommit;
        let result = self.build(&group).and_then(|batch| {
            #[cfg(test)]
            if self
                .core
                .fail_writes
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(StoreError::Injected);
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(sync);
            Ok(self.core.db.write_opt(batch, &wo)?)
        });
        match &result {
            Ok(()) => {
                self.retry_deletes.clear();
                let deleted = group.iter().any(|r| matches!(r.op, Op::Delete(_)));
                if deleted {
                    self.flush_if_space_low();
                }
                if self.released_ballast {
                    super::ballast::restore_if_room(&self.core.path);
                    self.released_ballast = !super::ballast::present(&self.core.path);
                }
                if sync {
                    self.core.counters.fsyncs.inc();
                    self.dirty = false;
                    self.last_sync = Instant::now();
                } else {
                    self.dirty = true;
                }
                if has_put {
                    {
                        let mut s = self.core.lock();
                        s.failed = None;
                        for r in &group {
                            if let Op::Put { first, ends, .. } = &r.op {
                                insert_span(
                                    &mut s.visible,
                                    Span {
                                        start: *first,
                                        end: first + ends.len() as u64,
                                    },
                                );
                            }
                        }
                    }
                    self.core.data.notify_waiters();
                }
            }
            Err(e) => {
                tracing::error!(channel = %self.core.path.display(), error = %e, "channel write failed; refusing puts until a write succeeds");
                // Out of space: give RocksDB the reserve so it can recover and deletes (the
                // sinks' commits) free space again.
                if e.to_string().contains("No space left")
                    && super::ballast::release(&self.core.path)
                {
                    self.released_ballast = true;
                    tracing::warn!(channel = %self.core.path.display(), "disk full: the channel's reserve file is released so that draining can free space");
                }
                {
                    let mut s = self.core.lock();
                    s.failed = Some((e.to_string(), Instant::now()));
                    for r in &group {
                        match &r.op {
                            Op::Put { ends, bytes, .. } => {
                                s.held_events -= ends.len();
                                s.held_bytes = s.held_bytes.saturating_sub(*bytes);
                            }
                            Op::Delete(spans) => self.retry_deletes.extend_from_slice(spans),
                            Op::Quarantine(_) => {}
                        }
                    }
                }
                self.core.space.notify_waiters();
            }
        }
        for r in group {
            // The requester may have gone away (a cancelled put): nothing to tell then.
            let _ = r.done.send(result.clone());
        }
    }

    fn build(&self, group: &[Request]) -> Result<WriteBatch, StoreError> {
        let events = self.core.cf(CF_EVENTS)?;
        let mut batch = WriteBatch::default();
        for span in &self.retry_deletes {
            delete(&mut batch, events, *span);
        }
        for r in group {
            match &r.op {
                Op::Put {
                    first,
                    buf,
                    ends,
                    marks,
                    ..
                } => {
                    if !marks.is_empty() {
                        let meta = self.core.cf(CF_META)?;
                        for (k, v) in marks {
                            if v.is_empty() {
                                batch.delete_cf(meta, k);
                            } else {
                                batch.put_cf(meta, k, v);
                            }
                        }
                    }
                    let mut start = 0;
                    for (seq, &end) in (*first..).zip(ends) {
                        let record = buf.get(start..end).ok_or(StoreError::RecordBounds)?;
                        batch.put_cf(events, key(seq), record);
                        start = end;
                    }
                }
                Op::Delete(spans) => {
                    for span in spans {
                        delete(&mut batch, events, *span);
                    }
                    let next = self.core.lock().next_seq;
                    batch.put_cf(self.core.cf(CF_META)?, META_NEXT_SEQ, next.to_be_bytes());
                }
                Op::Quarantine(records) => {
                    let q = self.core.cf(CF_QUARANTINE)?;
                    for (k, raw) in records {
                        batch.put_cf(q, k, raw);
                        batch.delete_cf(events, k);
                    }
                }
            }
        }
        Ok(batch)
    }
}

fn delete(batch: &mut WriteBatch, cf: &ColumnFamily, span: Span) {
    if span.len() >= RANGE_DELETE_MIN {
        batch.delete_range_cf(cf, key(span.start), key(span.end));
    } else {
        for seq in span.start..span.end {
            batch.delete_cf(cf, key(seq));
        }
    }
}
