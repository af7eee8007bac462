//! The RocksDB channel's crash test (`rocks_crash`): a child process is SIGKILLed again and
//! again while it puts into a `rocksdb` channel, and no acknowledged event may be lost. The
//! test re-executes this binary as that child, so it is a binary of its own. Needs the
//! `rocksdb` feature (`required-features` in `runtime/Cargo.toml`).

#[path = "../common/mod.rs"]
mod common;

mod rocks_crash;
