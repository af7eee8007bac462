//! Offline tools on a channel directory, for `sluice channel inspect|fsck|purge`.
//!
//! `inspect` and a plain `fsck` open the database read-only, so they work beside a running
//! agent (seeing what was stored when they started). Quarantining and purging need the
//! agent stopped: RocksDB's lock refuses a second writer. Nothing here creates a directory.

use std::path::Path;

use bytes::BytesMut;
use rocksdb::{DB, Options, WriteBatch, WriteOptions};

use super::{
    CF_EVENTS, CF_META, CF_QUARANTINE, META_FORMAT, StoreError, db_options, open_db, record,
};
use sluice_core::{channel::ChannelError, event::Event};

/// A summary of what a channel directory holds.
#[derive(Debug)]
pub struct Inspection {
    /// The format stamp; `None` if the channel was never opened to completion.
    pub format: Option<Vec<u8>>,
    pub events: u64,
    /// Stored record bytes.
    pub bytes: u64,
    pub oldest: Option<u64>,
    pub newest: Option<u64>,
    pub quarantined: u64,
    pub quarantined_bytes: u64,
    /// The oldest few events, each with its sequence number, or why it cannot be read.
    pub samples: Vec<(u64, Result<Event, record::RecordError>)>,
}

/// What `fsck` found.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub checked: u64,
    /// Each corrupt record: its key (a sequence number when it has 8 bytes) and why.
    pub corrupt: Vec<(Vec<u8>, record::RecordError)>,
    /// Records moved to the quarantine by this run.
    pub quarantined: u64,
}

/// What `purge` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub quarantined: u64,
}

fn storage(path: &Path, e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Storage(format!("{}: {e}", path.display()))
}

/// Refuses paths that are not an existing RocksDB directory, so a typo creates nothing.
fn must_exist(path: &Path) -> Result<(), ChannelError> {
    if path.join("CURRENT").is_file() {
        Ok(())
    } else {
        Err(storage(
            path,
            "not a channel directory (no RocksDB CURRENT file)",
        ))
    }
}

fn open_read_only(path: &Path) -> Result<DB, ChannelError> {
    must_exist(path)?;
    let mut opts = db_options(false);
    opts.create_if_missing(false);
    opts.create_missing_column_families(false);
    DB::open_cf_for_read_only(&opts, path, [CF_EVENTS, CF_QUARANTINE, CF_META], false)
        .map_err(|e| storage(path, e))
}

fn open_writable(path: &Path) -> Result<DB, ChannelError> {
    must_exist(path)?;
    open_db(path, false)
        .map(|(db, _): (DB, Options)| db)
        .map_err(|e| storage(path, format!("{e} (is an agent still running on it?)")))
}

fn cf<'a>(
    db: &'a DB,
    path: &Path,
    name: &'static str,
) -> Result<&'a rocksdb::ColumnFamily, ChannelError> {
    db.cf_handle(name)
        .ok_or_else(|| storage(path, StoreError::MissingColumnFamily(name)))
}

/// Counts and the oldest `samples` events of the channel in `path`.
pub fn inspect(path: &Path, samples: usize) -> Result<Inspection, ChannelError> {
    let db = open_read_only(path)?;
    let format = db
        .get_cf(cf(&db, path, CF_META)?, META_FORMAT)
        .map_err(|e| storage(path, e))?;
    let mut out = Inspection {
        format,
        events: 0,
        bytes: 0,
        oldest: None,
        newest: None,
        quarantined: 0,
        quarantined_bytes: 0,
        samples: Vec::new(),
    };
    let mut bodies = BytesMut::new();
    let mut it = db.raw_iterator_cf(cf(&db, path, CF_EVENTS)?);
    it.seek_to_first();
    while let Some((k, v)) = it.item() {
        out.events += 1;
        out.bytes += v.len() as u64;
        if let Ok(seq) = record::seq_of(k) {
            out.oldest.get_or_insert(seq);
            out.newest = Some(seq);
            if out.samples.len() < samples {
                out.samples.push((seq, record::decode(seq, v, &mut bodies)));
            }
        }
        it.next();
    }
    it.status().map_err(|e| storage(path, e))?;
    let mut it = db.raw_iterator_cf(cf(&db, path, CF_QUARANTINE)?);
    it.seek_to_first();
    while let Some((_, v)) = it.item() {
        out.quarantined += 1;
        out.quarantined_bytes += v.len() as u64;
        it.next();
    }
    it.status().map_err(|e| storage(path, e))?;
    Ok(out)
}

/// Calls `f` with every queued event of the channel in `path`, oldest first (read-only, so
/// beside a running agent too); a record that cannot be read is handed over as its error.
pub fn for_each_event(
    path: &Path,
    mut f: impl FnMut(u64, Result<Event, record::RecordError>),
) -> Result<(), ChannelError> {
    let db = open_read_only(path)?;
    let mut bodies = BytesMut::new();
    let mut it = db.raw_iterator_cf(cf(&db, path, CF_EVENTS)?);
    it.seek_to_first();
    while let Some((k, v)) = it.item() {
        if let Ok(seq) = record::seq_of(k) {
            f(seq, record::decode(seq, v, &mut bodies));
        }
        it.next();
    }
    it.status().map_err(|e| storage(path, e))
}

/// Verifies every stored record; with `quarantine`, moves the corrupt ones aside (the agent
/// must be stopped).
pub fn fsck(path: &Path, quarantine: bool) -> Result<FsckReport, ChannelError> {
    let db = if quarantine {
        open_writable(path)?
    } else {
        open_read_only(path)?
    };
    let mut report = FsckReport::default();
    let mut moved = Vec::new();
    {
        let mut bodies = BytesMut::new();
        let mut it = db.raw_iterator_cf(cf(&db, path, CF_EVENTS)?);
        it.seek_to_first();
        while let Some((k, v)) = it.item() {
            report.checked += 1;
            let verdict =
                record::seq_of(k).and_then(|seq| record::decode(seq, v, &mut bodies).map(drop));
            if let Err(e) = verdict {
                report.corrupt.push((k.to_vec(), e));
                if quarantine {
                    moved.push((k.to_vec(), v.to_vec()));
                }
            }
            bodies.clear();
            it.next();
        }
        it.status().map_err(|e| storage(path, e))?;
    }
    if !moved.is_empty() {
        quarantine_raw(&db, &moved).map_err(|e| storage(path, e))?;
        report.quarantined = moved.len() as u64;
    }
    Ok(report)
}

/// Deletes every queued event and, with `quarantine`, every quarantined record.
pub fn purge(path: &Path, quarantine: bool) -> Result<Purged, ChannelError> {
    let db = open_writable(path)?;
    let mut purged = Purged {
        events: delete_all(&db, cf(&db, path, CF_EVENTS)?).map_err(|e| storage(path, e))?,
        quarantined: 0,
    };
    if quarantine {
        purged.quarantined =
            delete_all(&db, cf(&db, path, CF_QUARANTINE)?).map_err(|e| storage(path, e))?;
    }
    db.flush_wal(true).map_err(|e| storage(path, e))?;
    Ok(purged)
}

fn delete_all(db: &DB, cf: &rocksdb::ColumnFamily) -> Result<u64, rocksdb::Error> {
    let mut n = 0;
    let mut batch = WriteBatch::default();
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    while let Some(k) = it.key() {
        batch.delete_cf(cf, k);
        n += 1;
        if batch.len() >= 10_000 {
            db.write(std::mem::take(&mut batch))?;
        }
        it.next();
    }
    it.status()?;
    drop(it);
    db.write(batch)?;
    // Give the space back now rather than at some later compaction.
    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    Ok(n)
}

/// Moves raw records from `events` to `quarantine` in one synced write.
pub(super) fn quarantine_raw(db: &DB, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
    let events = db
        .cf_handle(CF_EVENTS)
        .ok_or(StoreError::MissingColumnFamily(CF_EVENTS))?;
    let q = db
        .cf_handle(CF_QUARANTINE)
        .ok_or(StoreError::MissingColumnFamily(CF_QUARANTINE))?;
    let mut batch = WriteBatch::default();
    for (k, raw) in records {
        batch.put_cf(q, k, raw);
        batch.delete_cf(events, k);
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    Ok(db.write_opt(batch, &wo)?)
}
