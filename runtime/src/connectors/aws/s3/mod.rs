//! S3: a sink writing objects named deterministically from the channel position, rolled by
//! size, count or time, and a source reading every object under a prefix once (a batch run).
//! Behind the `aws-s3` feature.

pub mod config;
pub mod records;
pub mod sink;
pub mod source;

use std::sync::Arc;

use sluice_core::{
    event::codec::{CodecName, CodecRef},
    registry::{BuildCx, ReadCx, SinkSpec},
    sink::Sink,
};

use self::config::S3SinkConfig;

/// `type: s3` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    let formats: Vec<&str> = CodecName::NAMES.iter().copied().chain([PARQUET]).collect();
    cx.codec_field("format", &formats);
    super::read_with_connection(cx, |c: &mut S3SinkConfig| &mut c.aws)
        .map(|c| Arc::new(c) as Arc<dyn SinkSpec>)
}

/// `format: parquet`: the sink's own Parquet writer (the name is not looked up as a plugin).
pub const PARQUET: &str = "parquet";

impl S3SinkConfig {
    /// Whether objects are Parquet files.
    pub fn is_parquet(&self) -> bool {
        matches!(&self.format, CodecRef::Plugin(n) if n == PARQUET)
    }
}

impl SinkSpec for S3SinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let codec: Box<dyn sluice_core::event::codec::Codec> = if self.is_parquet() {
            if self.compression != config::Compression::None {
                return Err(
                    "`compression` does not apply to Parquet, which compresses its columns: set `parquet.compression`"
                        .into(),
                );
            }
            Box::new(crate::parquet::ParquetCodec::new(
                self.parquet.clone().unwrap_or_default(),
            )?)
        } else if self.parquet.is_some() {
            return Err("`parquet` settings need `format: parquet`".into());
        } else {
            cx.codec(&self.format)?
        };
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
