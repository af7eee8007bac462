//! What can go wrong inside a channel's database, kept typed (with RocksDB's own error as the
//! source) until it reaches [`ChannelError::Storage`](sluice_core::channel::ChannelError),
//! which carries text across the engine.

/// A failed open, scan, read or write of a channel directory. `Clone` because one group-commit
/// write answers every put merged into it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] rocksdb::Error),
    #[error("column family `{0}` is missing")]
    MissingColumnFamily(&'static str),
    #[error("written in channel format {found:?}; this build reads format {expected}")]
    Format { found: Vec<u8>, expected: u8 },
    /// A put's record offsets do not fit its buffer (a bug, never data on disk).
    #[error("bad record bounds")]
    RecordBounds,
    /// Test hook: the write failed as if the disk were full.
    #[cfg(test)]
    #[error("IO error: No space left on device (injected)")]
    Injected,
}
