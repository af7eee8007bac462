//! S3: a sink writing objects named deterministically from the channel position, rolled by
//! size, count or time, and a source reading every object under a prefix once (a batch run).
//! Behind the `aws-s3` feature.

pub mod config;
pub mod records;
pub mod sink;
pub mod source;

use std::sync::Arc;

use sluice_core::{
    event::codec::CodecName,
    registry::{BuildCx, ReadCx, SinkSpec},
    sink::Sink,
};

use self::config::S3SinkConfig;

/// `type: s3` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    cx.codec_field("format", CodecName::NAMES);
    super::read_with_connection(cx, |c: &mut S3SinkConfig| &mut c.aws)
        .map(|c| Arc::new(c) as Arc<dyn SinkSpec>)
}

impl SinkSpec for S3SinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let codec = cx.codec(&self.format)?;
        Ok(Box::new(sink::S3Sink::new(cx.name, self, codec)?))
    }

    /// Objects are rolled by time through the runner: it lets the channel fill for up to
    /// `roll_interval` before taking a batch.
    fn linger(&self) -> Option<std::time::Duration> {
        self.roll_interval.map(|d| d.0)
    }

    fn idempotent(&self) -> Option<sluice_core::guarantee::Idempotence> {
        Some(sluice_core::guarantee::Idempotence::Positional(
            "objects are named by channel position, so a batch delivered again overwrites its own objects (keep `key` free of clock escapes, or give events a `timestamp`)"
                .to_owned(),
        ))
    }
}
