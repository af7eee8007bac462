//! The `rocksdb` and `spillable` channel types: their settings and how they open.

use std::{path::PathBuf, sync::Arc};

use serde::Deserialize;
use sluice_core::{
    channel::Channel,
    config::units::{ByteSize, HumanDuration},
    metrics::ChannelMetrics,
    registry::{ChannelCx, ChannelSpec, Registry, plain_channel},
};

use crate::{Fsync, RocksChannel, RocksOptions, StorageCounters, spillable::SpillableChannel};

/// Adds the `rocksdb` and `spillable` channel types to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        .channels
        .add("rocksdb", plain_channel::<RocksChannelConfig>);
    registry
        .channels
        .add("spillable", plain_channel::<SpillableChannelConfig>);
}

/// `type: rocksdb`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RocksChannelConfig {
    /// Directory of the channel's RocksDB database; created if missing. One channel per path.
    pub path: PathBuf,
    /// Most events held (queued plus taken but not yet committed).
    #[serde(default = "default_durable_capacity")]
    pub capacity: usize,
    /// Most stored record bytes held; unlimited (up to the disk) when absent.
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub fsync: FsyncConfig,
}

/// `type: spillable`: a memory tier in front of a RocksDB tier, one FIFO across both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpillableChannelConfig {
    /// Events held in memory before new events spill to disk.
    #[serde(default = "default_capacity")]
    pub memory_capacity: usize,
    /// Directory of the disk tier.
    pub path: PathBuf,
    /// Most events held by the disk tier.
    #[serde(default = "default_durable_capacity")]
    pub disk_capacity: usize,
    /// Most stored record bytes held by the disk tier.
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub fsync: FsyncConfig,
}

fn default_durable_capacity() -> usize {
    1_000_000
}

/// When a durable channel acknowledges a put: `per_commit` (synced, default), `never`, or
/// `{ interval: 10ms }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncConfig {
    /// After a synced write; concurrent puts share one sync.
    #[default]
    PerCommit,
    /// After the write; the log is synced at least this often.
    Interval(HumanDuration),
    /// After the write; never synced explicitly (survives a crash, not a power loss).
    Never,
}

fn default_capacity() -> usize {
    10_000
}

fn options(
    capacity: usize,
    max_bytes: Option<ByteSize>,
    fsync: FsyncConfig,
    m: &ChannelMetrics,
) -> RocksOptions {
    RocksOptions {
        capacity,
        max_bytes: max_bytes.map(|b| b.0),
        fsync: match fsync {
            FsyncConfig::PerCommit => Fsync::PerCommit,
            FsyncConfig::Interval(d) => Fsync::Interval(d.0),
            FsyncConfig::Never => Fsync::Never,
        },
        counters: StorageCounters {
            corrupt: m.corrupt.clone(),
            fsyncs: m.fsyncs.clone(),
        },
        statistics: false,
    }
}

impl ChannelSpec for RocksChannelConfig {
    fn open(&self, cx: &ChannelCx<'_>) -> Result<Arc<dyn Channel>, String> {
        let opts = options(self.capacity, self.max_bytes, self.fsync, cx.metrics);
        let disk = RocksChannel::open(&self.path, opts).map_err(|e| e.to_string())?;
        Ok(Arc::new(disk))
    }

    fn storage_dir(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }

    fn crash_loss(&self) -> Option<&'static str> {
        None
    }
}

impl ChannelSpec for SpillableChannelConfig {
    fn open(&self, cx: &ChannelCx<'_>) -> Result<Arc<dyn Channel>, String> {
        let opts = options(self.disk_capacity, self.max_bytes, self.fsync, cx.metrics);
        let disk = RocksChannel::open(&self.path, opts).map_err(|e| e.to_string())?;
        Ok(Arc::new(SpillableChannel::new(self.memory_capacity, disk)))
    }

    fn storage_dir(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }

    fn crash_loss(&self) -> Option<&'static str> {
        Some("a spillable channel: what its memory tier holds is lost if the agent crashes")
    }
}

#[cfg(test)]
mod tests {
    use std::{any::Any, path::Path};

    use sluice_core::config::{ConfigErrors, Pipeline, load_str, units};

    use super::*;

    fn load(text: &str) -> Result<Pipeline, ConfigErrors> {
        let mut registry = Registry::builtin();
        register(&mut registry);
        load_str(Path::new("p.yaml"), text, &|_| None, &registry)
    }

    fn errors(text: &str) -> Vec<(usize, usize, Option<String>, String)> {
        load(text)
            .expect_err("config should be rejected")
            .0
            .into_iter()
            .map(|e| (e.pos.line, e.pos.col, e.component, e.message))
            .collect()
    }

    #[test]
    fn durable_channels_load_with_defaults_and_fsync_modes() {
        let p = load(
            "\
channels:
  disk: { type: rocksdb, path: ./data/disk }
  fast: { type: rocksdb, path: ./data/fast, capacity: 5000, max_bytes: 1GiB, fsync: never }
  tick: { type: rocksdb, path: ./data/tick, fsync: { interval: 10ms } }
  spill: { type: spillable, memory_capacity: 100, path: ./data/spill, disk_capacity: 9, fsync: per_commit }
",
        )
        .unwrap();
        let rocks = |i: usize| {
            let any: &dyn Any = &*p.channels[i].spec;
            any.downcast_ref::<RocksChannelConfig>()
                .expect("a rocksdb channel")
                .clone()
        };
        let d = rocks(0);
        assert_eq!(d.path, std::path::Path::new("./data/disk"));
        assert_eq!(
            (d.capacity, d.max_bytes, d.fsync),
            (1_000_000, None, FsyncConfig::PerCommit)
        );
        let f = rocks(1);
        assert_eq!(
            (f.capacity, f.max_bytes.unwrap().0, f.fsync),
            (5000, 1 << 30, FsyncConfig::Never)
        );
        assert_eq!(
            rocks(2).fsync,
            FsyncConfig::Interval(units::HumanDuration(std::time::Duration::from_millis(10)))
        );
        let any: &dyn Any = &*p.channels[3].spec;
        let s = any
            .downcast_ref::<SpillableChannelConfig>()
            .expect("a spillable channel");
        assert_eq!((s.memory_capacity, s.disk_capacity), (100, 9));
        assert_eq!(s.fsync, FsyncConfig::PerCommit);
    }

    #[test]
    fn durable_channel_mistakes_are_reported_with_positions() {
        let errs = errors(
            "\
channels:
  a: { type: rocksdb }
  b: { type: rocksdb, path: x, fsync: always }
  c: { type: spillable, path: x, capacity: 5 }
  d: { type: rocksdb, path: y, fsync: { interval: 10 } }
",
        );
        let find = |line: usize| {
            errs.iter()
                .find(|e| e.0 == line)
                .unwrap_or_else(|| panic!("no error on line {line}: {errs:#?}"))
                .3
                .clone()
        };
        assert!(find(2).contains("missing field `path`"), "{errs:#?}");
        assert!(find(3).contains("unknown variant `always`"), "{errs:#?}");
        assert!(find(4).contains("unknown field `capacity`"), "{errs:#?}");
        assert!(find(5).contains("unit is required"), "{errs:#?}");

        let errs = errors(
            "channels:\n  a: { type: rocksdb, path: p }\n  b: { type: spillable, path: p }\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.0 == 3 && e.3.contains("path `p` is already used by channel `a`")),
            "{errs:#?}"
        );
    }
}
