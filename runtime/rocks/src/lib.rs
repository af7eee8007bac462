//! The RocksDB channel: a durable FIFO whose puts survive a crash once acknowledged.
//!
//! Events are stored under big-endian sequence numbers in the `events` column family (see
//! [`record`] for the value format). What is visible, leased or being written lives in memory
//! as sorted spans of sequence numbers; on open, everything still stored is visible again, in
//! order. A put is one `WriteBatch` handed to the [`writer`] thread, which merges concurrent
//! puts and commits into one write and, with `fsync: per_commit`, one fsync (group commit); the
//! put returns only after that write. A commit deletes the leased keys. A record that fails its
//! checksum is moved to the `quarantine` column family and counted — never skipped silently,
//! never a reason to stop.
//!
//! After a write error (a full disk) puts are refused with [`ChannelError::Storage`] and
//! [`Channel::health`] reports it, while takes keep draining what is stored.
//!
//! This crate is the only one of the workspace that links RocksDB: the `rocksdb` and
//! `spillable` channel types ([`config`]) and the `sluice channel` tools ([`tools`]).

pub mod config;
mod error;
pub mod record;
/// The RocksDB binding this crate uses, for tools and tests that open a channel's directory.
pub use rocksdb;
pub mod spillable;
pub mod tools;
mod writer;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode, LogLevel, Options,
    ReadOptions,
};
use tokio::sync::{Notify, oneshot};

pub use self::error::StoreError;
use self::{
    record::{RecordError, key, seq_of},
    writer::{Op, Request},
};
use sluice_core::{
    channel::{Channel, ChannelError, ChannelStats, Lease, Mark, limits::Limits},
    event::Event,
};

/// Column family holding queued events, keyed by sequence number.
pub const CF_EVENTS: &str = "events";
/// Column family holding records that failed verification, under their original keys.
pub const CF_QUARANTINE: &str = "quarantine";
/// Column family holding the channel's own metadata (the format version).
pub const CF_META: &str = "meta";
const META_FORMAT: &[u8] = b"format";
/// The next sequence number as of the last commit, so a channel reopened empty goes on
/// numbering where it left off: positions never repeat (sinks name output after them).
pub(crate) const META_NEXT_SEQ: &[u8] = b"next_seq";
/// The channel's id (see [`Channel::id`]), made when the directory is created.
const META_ID: &[u8] = b"id";
/// Where sources' marks (see [`Channel::put_marked`]) are kept, under this prefix.
pub(crate) const META_MARK_PREFIX: &[u8] = b"mark/";

/// After a failed write, puts are refused for this long before one is tried again.
const RETRY_WRITES_AFTER: Duration = Duration::from_secs(1);
/// Free space a put must leave on the channel's filesystem. Below it puts are refused before
/// RocksDB runs out of room: a write that fails for lack of space stops the database until it
/// is reopened, deletes included, so a channel that filled its disk could never drain. The
/// room kept lets the sinks' commits go through; once they have emptied the channel a flush
/// lets RocksDB drop its old logs and the space comes back.
const KEEP_FREE: u64 = 4 << 20;
/// How a refusal for lack of space starts (health and errors).
const LOW_SPACE: &str = "disk almost full";

/// When a put is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every put returns after a synced write (shared by concurrent puts). Survives power loss.
    PerCommit,
    /// Puts return after the write; the log is synced at most this long later. Survives a
    /// process crash; a power loss may lose the last interval.
    Interval(Duration),
    /// Never synced explicitly. Survives a process crash, not a power loss.
    Never,
}

/// Counters the channel keeps up to date (shared with the metrics registry when built by the
/// topology).
#[derive(Debug, Clone, Default)]
pub struct StorageCounters {
    /// Records that failed verification and were quarantined.
    pub corrupt: Counter,
    /// Synced writes and log syncs.
    pub fsyncs: Counter,
}

#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Most events held (queued plus leased).
    pub capacity: usize,
    /// Most stored record bytes held; unlimited when `None`.
    pub max_bytes: Option<u64>,
    pub fsync: Fsync,
    pub counters: StorageCounters,
    /// Keep RocksDB statistics (for [`RocksChannel::storage_stats`]); costs a little CPU.
    pub statistics: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            capacity: 1_000_000,
            max_bytes: None,
            fsync: Fsync::PerCommit,
            counters: StorageCounters::default(),
            statistics: false,
        }
    }
}

/// Write-path figures for benchmarks and diagnostics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageStats {
    pub fsyncs: u64,
    /// Bytes written to the write-ahead log, memtable flushes and compactions (with
    /// `statistics` on; zero otherwise).
    pub wal_bytes: u64,
    pub flush_bytes: u64,
    pub compaction_bytes: u64,
}

/// A half-open range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
}

impl Span {
    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

/// Inserts `span` into sorted, disjoint `spans`, merging with touching neighbours.
fn insert_span(spans: &mut VecDeque<Span>, span: Span) {
    if span.start >= span.end {
        return;
    }
    let i = spans.partition_point(|s| s.start < span.start);
    spans.insert(i, span);
    if i + 1 < spans.len() && spans[i].end == spans[i + 1].start {
        spans[i].end = spans[i + 1].end;
        spans.remove(i + 1);
    }
    if i > 0 && spans[i - 1].end == spans[i].start {
        spans[i - 1].end = spans[i].end;
        spans.remove(i);
    }
}

/// Removes up to `max` sequence numbers from the front of `spans`.
fn take_front(spans: &mut VecDeque<Span>, max: usize) -> (Vec<Span>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    while n < max {
        let Some(front) = spans.front_mut() else {
            break;
        };
        let want = (max - n) as u64;
        if front.end - front.start <= want {
            n += front.len();
            out.push(*front);
            spans.pop_front();
        } else {
            out.push(Span {
                start: front.start,
                end: front.start + want,
            });
            front.start += want;
            n += want as usize;
        }
    }
    (out, n)
}

struct State {
    /// Sequence numbers stored and not leased, sorted.
    visible: VecDeque<Span>,
    /// Events held: visible, leased, and reserved by puts being written.
    held_events: usize,
    held_bytes: usize,
    in_flight: usize,
    next_seq: u64,
    closed: bool,
    /// The last write error and when it happened; cleared by the next successful write.
    failed: Option<(String, Instant)>,
    /// Puts were refused to keep [`KEEP_FREE`]: the writer flushes once deletes have freed
    /// the logs' contents, so the disk space comes back.
    space_low: bool,
    /// Corrupt records seen so far, for rate-limited logging.
    corrupt_seen: u64,
}

/// What the writer thread and the channel share.
struct Core {
    db: DB,
    path: PathBuf,
    id: String,
    opts: Options,
    state: Mutex<State>,
    /// Signalled when events leave or a reservation is released, so waiting putters retry.
    space: Notify,
    /// Signalled when events become visible (written, rolled back), so waiting takers retry.
    data: Notify,
    limits: Limits,
    counters: StorageCounters,
    /// Test hook: every write fails as if the disk were full.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few infallible steps, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    fn fits(&self, s: &State, events: usize, bytes: usize) -> bool {
        self.limits.fits(s.held_events, s.held_bytes, events, bytes)
    }

    fn too_large(&self, events: usize, bytes: usize) -> Option<ChannelError> {
        self.limits.too_large(events, bytes)
    }

    /// Reads and decodes the records of `spans` (run on a blocking thread).
    fn read(&self, spans: &[Span]) -> Result<Vec<Read>, StoreError> {
        let cf = self.cf(CF_EVENTS)?;
        let mut out = Vec::with_capacity(spans.iter().map(|s| s.len()).sum());
        let mut bodies = BytesMut::new();
        for span in spans {
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(key(span.end));
            let mut it = self.db.raw_iterator_cf_opt(cf, ro);
            it.seek(key(span.start));
            let mut expect = span.start;
            while let Some((k, v)) = it.item() {
                // Keys of another length were quarantined on open; nothing else writes here.
                if let Ok(seq) = seq_of(k) {
                    out.extend((expect..seq).map(Read::Missing));
                    out.push(match record::decode(seq, v, &mut bodies) {
                        Ok(event) => Read::Event(seq, event, v.len()),
                        Err(e) => Read::Corrupt(seq, e, v.to_vec()),
                    });
                    expect = seq + 1;
                }
                it.next();
            }
            it.status()?;
            out.extend((expect..span.end).map(Read::Missing));
        }
        Ok(out)
    }
}

/// One slot of a take.
enum Read {
    /// Sequence number, event, stored length.
    Event(u64, Event, usize),
    Corrupt(u64, RecordError, Vec<u8>),
    /// Leased but no longer stored (only possible if something else wrote to the directory).
    Missing(u64),
}

/// The channel handle and every lease share this; dropping the last one stops the writer
/// (after it finishes what is queued) and closes the database.
struct Shared {
    core: Arc<Core>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl Shared {
    fn submit(&self, op: Op) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, rx) = oneshot::channel();
        if let Some(tx) = &self.tx {
            // A send error drops `done`, which the receiver reports as a stopped writer.
            let _ = tx.send(Request { op, done });
        }
        rx
    }

    async fn write(&self, op: Op) -> Result<(), ChannelError> {
        await_put(self.submit(op)).await
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            // The writer drains its queue, syncs and returns; the database closes with `core`.
            let _ = w.join();
        }
    }
}

pub struct RocksChannel {
    shared: Arc<Shared>,
}

/// Space held in reserve in a channel's directory. Opening a database writes a new log, a
/// manifest and an options file; after a crash on a full disk there would be no room for them
/// and the channel could never open to drain. The ballast is deleted before opening and put
/// back afterwards, when there is room again.
///
/// It is also what lets a running channel recover from a full disk: a write that fails for
/// lack of space stops RocksDB (it refuses every write, deletes included, until it has
/// recovered), and with no write nothing is ever freed. Deleting the ballast then gives
/// RocksDB the room its automatic recovery waits for; the sinks' commits (deletes) go through
/// again, the channel drains, and the ballast is put back once there is room for it and more.
mod ballast {
    use std::{fs, io::Write, path::Path};

    const FILE: &str = "sluice-ballast";
    const BYTES: usize = 4 << 20;

    /// Deletes the ballast; true when there was one.
    pub(super) fn release(dir: &Path) -> bool {
        fs::remove_file(dir.join(FILE)).is_ok()
    }

    /// Whether the ballast is in place.
    pub(super) fn present(dir: &Path) -> bool {
        dir.join(FILE).is_file()
    }

    /// Free bytes on the filesystem holding `dir`.
    pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs only writes into the struct we hand it; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Puts the ballast back when the filesystem has room for it four times over (so taking
    /// it back does not make the disk full again at once).
    pub(super) fn restore_if_room(dir: &Path) {
        if !present(dir) && free_bytes(dir).is_some_and(|free| free > 4 * BYTES as u64) {
            restore(dir);
            tracing::info!(channel = %dir.display(), "disk space is back; the channel's reserve file is in place again");
        }
    }

    /// Written for real (zeros, not a sparse file), so the space is actually taken.
    pub(super) fn restore(dir: &Path) {
        let path = dir.join(FILE);
        let written = fs::File::create(&path).and_then(|mut f| {
            f.write_all(&vec![0u8; BYTES])?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            tracing::warn!(channel = %dir.display(), error = %e, "no room for the channel's reserve file; a crash while the disk is full may need space freed by hand");
        }
    }
}

/// Opens (or creates) the RocksDB database of a channel directory.
fn open_db(path: &Path, statistics: bool) -> Result<(DB, Options), StoreError> {
    let opts = db_options(statistics);
    let cfs = [CF_EVENTS, CF_QUARANTINE, CF_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, opts.clone()));
    let db = DB::open_cf_descriptors(&opts, path, cfs)?;
    Ok((db, opts))
}

fn db_options(statistics: bool) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // Recover up to the first damaged log record (a torn tail after a crash) and keep going.
    o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_log_level(LogLevel::Warn);
    o.set_keep_log_file_num(2);
    o.set_max_background_jobs(2);
    // Bounds replay time after a crash: a log this large forces a memtable flush.
    o.set_max_total_wal_size(256 << 20);
    // Replay the log into the memtable without writing a table file: a channel killed while
    // its disk was full must open (and drain) without space for its whole backlog again.
    if statistics {
        o.enable_statistics();
    }
    // Not in the Rust API; set through RocksDB's own option string. No `fallocate`: RocksDB
    // preallocates a new log at open (more than a full disk has), which left a channel that
    // was stopped on a full disk unable to open in the room its reserve file gives back.
    match o.get_options_from_string("avoid_flush_during_recovery=true;allow_fallocate=false") {
        Ok(recovering_in_memory) => recovering_in_memory,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set avoid_flush_during_recovery");
            o
        }
    }
}

/// Refuses a directory written by a newer record format; stamps a new one.
fn check_format(db: &DB) -> Result<(), StoreError> {
    let cf = db
        .cf_handle(CF_META)
        .ok_or(StoreError::MissingColumnFamily(CF_META))?;
    match db.get_cf(cf, META_FORMAT)? {
        None => Ok(db.put_cf(cf, META_FORMAT, [record::FORMAT_VERSION])?),
        Some(v) if v.as_slice() == [record::FORMAT_VERSION] => Ok(()),
        Some(found) => Err(StoreError::Format {
            found,
            expected: record::FORMAT_VERSION,
        }),
    }
}

/// The channel's id: read back, or made (random) and stored when the directory is new.
fn channel_id(db: &DB) -> Result<String, StoreError> {
    let cf = db
        .cf_handle(CF_META)
        .ok_or(StoreError::MissingColumnFamily(CF_META))?;
    if let Some(v) = db.get_cf(cf, META_ID)? {
        return Ok(String::from_utf8_lossy(&v).into_owned());
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.put_cf_opt(cf, META_ID, id.as_bytes(), &wo)?;
    Ok(id)
}

/// What is stored, found by scanning on open.
struct Scan {
    visible: VecDeque<Span>,
    events: usize,
    bytes: usize,
    next_seq: u64,
    /// Keys that are not sequence numbers; moved to the quarantine.
    bad_keys: Vec<(Vec<u8>, Vec<u8>)>,
}

fn scan(db: &DB) -> Result<Scan, StoreError> {
    let cf = db
        .cf_handle(CF_EVENTS)
        .ok_or(StoreError::MissingColumnFamily(CF_EVENTS))?;
    let mut s = Scan {
        visible: VecDeque::new(),
        events: 0,
        bytes: 0,
        next_seq: 0,
        bad_keys: Vec::new(),
    };
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    while let Some((k, v)) = it.item() {
        match seq_of(k) {
            Ok(seq) => {
                match s.visible.back_mut() {
                    Some(last) if last.end == seq => last.end += 1,
                    _ => s.visible.push_back(Span {
                        start: seq,
                        end: seq + 1,
                    }),
                }
                s.events += 1;
                s.bytes += v.len();
                s.next_seq = seq + 1;
            }
            Err(_) => s.bad_keys.push((k.to_vec(), v.to_vec())),
        }
        it.next();
    }
    it.status()?;
    let meta = db
        .cf_handle(CF_META)
        .ok_or(StoreError::MissingColumnFamily(CF_META))?;
    if let Some(v) = db.get_cf(meta, META_NEXT_SEQ)? {
        if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
            s.next_seq = s.next_seq.max(u64::from_be_bytes(b));
        }
    }
    // Never reuse a quarantined sequence number.
    let q = db
        .cf_handle(CF_QUARANTINE)
        .ok_or(StoreError::MissingColumnFamily(CF_QUARANTINE))?;
    let mut it = db.raw_iterator_cf(q);
    it.seek_to_last();
    while let Some(k) = it.key() {
        if let Ok(seq) = seq_of(k) {
            s.next_seq = s.next_seq.max(seq + 1);
            break;
        }
        it.prev();
    }
    Ok(s)
}

impl RocksChannel {
    /// Opens the channel stored in `path`, creating it if needed. Everything stored and not yet
    /// committed is visible again, oldest first. Blocks while it scans the stored keys.
    pub fn open(path: impl AsRef<Path>, opts: RocksOptions) -> Result<Self, ChannelError> {
        let path = path.as_ref();
        let fail =
            |e: &dyn std::fmt::Display| ChannelError::Storage(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(path).map_err(|e| fail(&e))?;
        let _ = ballast::release(path);
        let (db, db_opts) = open_db(path, opts.statistics).map_err(|e| fail(&e))?;
        ballast::restore(path);
        check_format(&db).map_err(|e| fail(&e))?;
        let id = channel_id(&db).map_err(|e| fail(&e))?;
        let scan = scan(&db).map_err(|e| fail(&e))?;
        if !scan.bad_keys.is_empty() {
            tracing::error!(
                channel = %path.display(), records = scan.bad_keys.len(),
                "keys that are not sequence numbers moved to the quarantine"
            );
            opts.counters.corrupt.inc_by(scan.bad_keys.len() as u64);
            tools::quarantine_raw(&db, &scan.bad_keys).map_err(|e| fail(&e))?;
        }
        let core = Arc::new(Core {
            db,
            path: path.to_owned(),
            id,
            opts: db_opts,
            state: Mutex::new(State {
                visible: scan.visible,
                held_events: scan.events,
                held_bytes: scan.bytes,
                in_flight: 0,
                next_seq: scan.next_seq,
                closed: false,
                failed: None,
                space_low: false,
                corrupt_seen: 0,
            }),
            space: Notify::new(),
            data: Notify::new(),
            limits: Limits::new(opts.capacity, opts.max_bytes, "stored bytes"),
            counters: opts.counters,
            #[cfg(test)]
            fail_writes: false.into(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = writer::spawn(Arc::clone(&core), rx, opts.fsync).map_err(|e| fail(&e))?;
        tracing::debug!(channel = %path.display(), events = scan.events, "rocksdb channel opened");
        Ok(RocksChannel {
            shared: Arc::new(Shared {
                core,
                tx: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.core.path
    }

    /// Fsyncs so far and, with `statistics`, RocksDB's own byte counts.
    pub fn storage_stats(&self) -> StorageStats {
        use rocksdb::statistics::Ticker;
        let o = &self.shared.core.opts;
        StorageStats {
            fsyncs: self.shared.core.counters.fsyncs.get(),
            wal_bytes: o.get_ticker_count(Ticker::WalFileBytes),
            flush_bytes: o.get_ticker_count(Ticker::FlushWriteBytes),
            compaction_bytes: o.get_ticker_count(Ticker::CompactWriteBytes),
        }
    }

    /// Signalled whenever events become visible (the spillable channel's takers wait on it).
    pub(crate) fn visible_notify(&self) -> &Notify {
        &self.shared.core.data
    }

    /// Reserves room and sequence numbers for `n` events of `bytes` stored bytes.
    fn reserve(&self, s: &mut State, n: usize, bytes: usize) -> u64 {
        s.held_events += n;
        s.held_bytes += bytes;
        let first = s.next_seq;
        s.next_seq += n as u64;
        first
    }

    /// Refuses a put of `bytes` that would leave less than [`KEEP_FREE`] on the disk (and
    /// says so in the channel's health until a put fits again).
    fn low_space(&self, bytes: usize) -> Option<ChannelError> {
        let core = &self.shared.core;
        let free = ballast::free_bytes(&core.path)?;
        let needed = KEEP_FREE + 2 * bytes as u64;
        let mut s = core.lock();
        if free >= needed {
            if s.space_low {
                s.space_low = false;
                if s.failed
                    .as_ref()
                    .is_some_and(|(why, _)| why.starts_with(LOW_SPACE))
                {
                    s.failed = None;
                }
            }
            return None;
        }
        let why = format!(
            "{LOW_SPACE}: {free} bytes free, a put of {bytes} bytes must leave {KEEP_FREE} for commits (No space left on device otherwise)"
        );
        s.space_low = true;
        s.failed = Some((why.clone(), Instant::now()));
        drop(s);
        // Let the writer flush (and free the logs) as soon as the channel drains.
        core.space.notify_waiters();
        Some(ChannelError::Storage(why))
    }

    fn refuse(&self, s: &State) -> Option<ChannelError> {
        if s.closed {
            return Some(ChannelError::Closed);
        }
        match &s.failed {
            Some((why, at)) if at.elapsed() < RETRY_WRITES_AFTER => Some(ChannelError::Storage(
                format!("refusing puts after a write error: {why}"),
            )),
            _ => None,
        }
    }

    /// Encodes `batch` under `first..` and hands it to the writer; the writer publishes it.
    fn submit_put(
        &self,
        first: u64,
        batch: &[Event],
        bytes: usize,
        marks: &[Mark],
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let mut buf = Vec::with_capacity(bytes);
        let mut ends = Vec::with_capacity(batch.len());
        for (seq, e) in (first..).zip(batch) {
            record::encode_into(seq, e, &mut buf);
            ends.push(buf.len());
        }
        let marks = marks
            .iter()
            .map(|m| {
                let mut k = META_MARK_PREFIX.to_vec();
                k.extend_from_slice(m.key.as_bytes());
                (k, m.value.clone())
            })
            .collect();
        self.shared.submit(Op::Put {
            first,
            buf,
            ends,
            bytes,
            marks,
        })
    }

    #[cfg(test)]
    fn fail_writes(&self, on: bool) {
        self.shared
            .core
            .fail_writes
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

fn stored_len(batch: &[Event]) -> usize {
    batch.iter().map(record::encoded_len).sum()
}

async fn await_put(rx: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), ChannelError> {
    rx.await
        .map_err(|_| ChannelError::Storage("the channel's writer has stopped".into()))?
        .map_err(|e| ChannelError::Storage(e.to_string()))
}

#[async_trait]
impl Channel for RocksChannel {
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        self.put_marked(batch, &[]).await
    }

    async fn put_marked(&self, batch: Vec<Event>, marks: &[Mark]) -> Result<(), ChannelError> {
        if batch.is_empty() && marks.is_empty() {
            return Ok(());
        }
        let core = &self.shared.core;
        let bytes = stored_len(&batch);
        if let Some(e) = core.too_large(batch.len(), bytes) {
            return Err(e);
        }
        if let Some(e) = self.low_space(bytes) {
            return Err(e);
        }
        let first = loop {
            let notified = core.space.notified();
            tokio::pin!(notified);
            {
                let mut s = core.lock();
                if let Some(e) = self.refuse(&s) {
                    return Err(e);
                }
                if core.fits(&s, batch.len(), bytes) {
                    break self.reserve(&mut s, batch.len(), bytes);
                }
                notified.as_mut().enable();
            }
            notified.await;
        };
        // From here the writer owns the reservation: it publishes or releases it, even if
        // this future is dropped.
        await_put(self.submit_put(first, &batch, bytes, marks)).await
    }

    fn marks(&self, prefix: &str) -> Result<Option<Vec<Mark>>, ChannelError> {
        let core = &self.shared.core;
        let fail = |e: StoreError| ChannelError::Storage(e.to_string());
        let cf = core.cf(CF_META).map_err(fail)?;
        let mut start = META_MARK_PREFIX.to_vec();
        start.extend_from_slice(prefix.as_bytes());
        let mut it = core.db.raw_iterator_cf(cf);
        it.seek(&start);
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            if !k.starts_with(&start) {
                break;
            }
            out.push(Mark {
                key: String::from_utf8_lossy(&k[META_MARK_PREFIX.len()..]).into_owned(),
                value: v.to_vec(),
            });
            it.next();
        }
        it.status().map_err(|e| fail(e.into()))?;
        Ok(Some(out))
    }

    fn id(&self) -> Option<String> {
        Some(self.shared.core.id.clone())
    }

    fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        if batch.is_empty() {
            return Ok(());
        }
        let core = &self.shared.core;
        let bytes = stored_len(&batch);
        if let Some(e) = core.too_large(batch.len(), bytes) {
            return Err(e);
        }
        if let Some(e) = self.low_space(bytes) {
            return Err(e);
        }
        let first = {
            let mut s = core.lock();
            if let Some(e) = self.refuse(&s) {
                return Err(e);
            }
            if !core.fits(&s, batch.len(), bytes) {
                return Err(ChannelError::Full);
            }
            self.reserve(&mut s, batch.len(), bytes)
        };
        // A non-blocking put cannot wait for the disk: it is queued and becomes visible when
        // written. Callers that need durability before acknowledging use `put`.
        drop(self.submit_put(first, &batch, bytes, &[]));
        Ok(())
    }

    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        let core = &self.shared.core;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = core.data.notified();
            tokio::pin!(notified);
            let lease = {
                let mut s = core.lock();
                if s.visible.is_empty() {
                    notified.as_mut().enable();
                    None
                } else {
                    let (spans, n) = take_front(&mut s.visible, max.max(1));
                    s.in_flight += n;
                    // Created before reading, so a dropped future or a read error rolls back.
                    Some(RocksLease {
                        shared: Arc::clone(&self.shared),
                        events: Vec::new(),
                        spans,
                        n,
                        bytes: 0,
                        done: false,
                    })
                }
            };
            match lease {
                Some(lease) => {
                    if let Some(lease) = self.fill(lease).await? {
                        return Ok(Some(Box::new(lease)));
                    }
                    // Everything leased was corrupt and is quarantined: look again.
                }
                None => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn arrivals(&self) -> Option<&Notify> {
        Some(&self.shared.core.data)
    }

    fn stats(&self) -> ChannelStats {
        let s = self.shared.core.lock();
        ChannelStats {
            events: s.held_events,
            bytes: s.held_bytes,
            capacity_events: self.shared.core.limits.capacity,
            in_flight: s.in_flight,
        }
    }

    fn close(&self) {
        self.shared.core.lock().closed = true;
        self.shared.core.space.notify_waiters();
    }

    fn health(&self) -> Result<(), String> {
        match &self.shared.core.lock().failed {
            Some((why, _)) => Err(format!(
                "write to {} failed: {why}",
                self.shared.core.path.display()
            )),
            None => Ok(()),
        }
    }
}

impl RocksChannel {
    /// Reads the lease's records; quarantines corrupt ones. `None` if nothing good was left.
    async fn fill(&self, mut lease: RocksLease) -> Result<Option<RocksLease>, ChannelError> {
        let core = Arc::clone(&self.shared.core);
        let spans = lease.spans.clone();
        let reads = tokio::task::spawn_blocking(move || core.read(&spans))
            .await
            .map_err(|e| ChannelError::Storage(format!("read task failed: {e}")))?
            .map_err(|e| ChannelError::Storage(e.to_string()))?;
        let mut spans: VecDeque<Span> = VecDeque::new();
        let mut bad = 0usize;
        let mut bad_bytes = 0usize;
        let mut quarantine = Vec::new();
        lease.events.reserve(reads.len());
        for r in reads {
            match r {
                Read::Event(seq, event, len) => {
                    insert_span(
                        &mut spans,
                        Span {
                            start: seq,
                            end: seq + 1,
                        },
                    );
                    lease.events.push(event);
                    lease.bytes += len;
                }
                Read::Corrupt(seq, error, raw) => {
                    bad += 1;
                    bad_bytes += raw.len();
                    self.report_corrupt(seq, &error);
                    quarantine.push((key(seq).to_vec(), raw));
                }
                Read::Missing(seq) => {
                    bad += 1;
                    tracing::warn!(channel = %self.path().display(), seq, "leased record is no longer stored");
                }
            }
        }
        lease.spans = spans.into();
        lease.n = lease.events.len();
        if bad > 0 {
            let core = &self.shared.core;
            {
                let mut s = core.lock();
                s.in_flight -= bad;
                s.held_events -= bad;
                s.held_bytes = s.held_bytes.saturating_sub(bad_bytes);
            }
            core.space.notify_waiters();
        }
        if !quarantine.is_empty() {
            if let Err(e) = self.shared.write(Op::Quarantine(quarantine)).await {
                // The records stay in `events` and are found again after a restart.
                tracing::error!(channel = %self.path().display(), error = %e, "moving corrupt records to the quarantine failed");
            }
        }
        Ok((lease.n > 0).then_some(lease))
    }

    fn report_corrupt(&self, seq: u64, error: &RecordError) {
        let core = &self.shared.core;
        core.counters.corrupt.inc();
        let seen = {
            let mut s = core.lock();
            s.corrupt_seen += 1;
            s.corrupt_seen
        };
        if seen <= 10 || seen % 1000 == 0 {
            tracing::error!(
                channel = %core.path.display(), seq, error = %error, corrupt_total = seen,
                "corrupt record moved to the quarantine (see `sluice channel fsck`)"
            );
        }
    }
}

struct RocksLease {
    shared: Arc<Shared>,
    events: Vec<Event>,
    /// The leased sequence numbers, sorted.
    spans: Vec<Span>,
    n: usize,
    bytes: usize,
    done: bool,
}

impl RocksLease {
    fn roll_back(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let core = &self.shared.core;
        {
            let mut s = core.lock();
            s.in_flight -= self.n;
            for span in &self.spans {
                insert_span(&mut s.visible, *span);
            }
        }
        core.data.notify_waiters();
    }
}

#[async_trait]
impl Lease for RocksLease {
    fn events(&self) -> &[Event] {
        &self.events
    }

    fn events_mut(&mut self) -> &mut [Event] {
        &mut self.events
    }

    fn position(&self) -> Option<u64> {
        self.spans.first().map(|s| s.start)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        let core = &self.shared.core;
        {
            let mut s = core.lock();
            s.in_flight -= self.n;
            s.held_events -= self.n;
            s.held_bytes = s.held_bytes.saturating_sub(self.bytes);
        }
        core.space.notify_waiters();
        // If the delete fails the writer retries it with its next write; until then (or if the
        // process dies first) the events are only redelivered after a restart — at least once.
        let spans = std::mem::take(&mut self.spans);
        self.shared.write(Op::Delete(spans)).await
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), ChannelError> {
        self.roll_back();
        Ok(())
    }
}

impl Drop for RocksLease {
    /// An abandoned lease (a sink task that died, a cancelled take) must not lose its events.
    fn drop(&mut self) {
        self.roll_back();
    }
}

#[cfg(test)]
mod tests;
