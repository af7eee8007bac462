//! The event and byte limits every bounded channel enforces, in one place so that the memory
//! and RocksDB channels agree on what "full" and "too large" mean.

use super::ChannelError;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events held (queued plus leased); at least 1.
    pub capacity: usize,
    /// Most bytes held; `usize::MAX` when unlimited.
    pub max_bytes: usize,
    /// What the bytes are, for error messages (`bytes`, `stored bytes`).
    bytes_unit: &'static str,
}

impl Limits {
    /// `max_bytes: None` means no byte limit.
    pub fn new(capacity: usize, max_bytes: Option<u64>, bytes_unit: &'static str) -> Self {
        Limits {
            capacity: capacity.max(1),
            max_bytes: max_bytes.map_or(usize::MAX, |b| usize::try_from(b).unwrap_or(usize::MAX)),
            bytes_unit,
        }
    }

    /// Whether a batch fits beside what is held now.
    pub fn fits(&self, held_events: usize, held_bytes: usize, events: usize, bytes: usize) -> bool {
        held_events + events <= self.capacity && held_bytes + bytes <= self.max_bytes
    }

    /// The error for a batch that could never fit, even in an empty channel.
    pub fn too_large(&self, events: usize, bytes: usize) -> Option<ChannelError> {
        (events > self.capacity || bytes > self.max_bytes).then(|| ChannelError::BatchTooLarge {
            events,
            bytes,
            capacity: if self.max_bytes == usize::MAX {
                format!("{} events", self.capacity)
            } else {
                format!(
                    "{} events, {} {}",
                    self.capacity, self.max_bytes, self.bytes_unit
                )
            },
        })
    }
}
