//! Settings of the `s3` sink: events grouped into objects per resolved key prefix, rolled by
//! count and size, optionally compressed, uploaded with PutObject or a multipart upload.
//!
//! The connection settings (`region`, `endpoint`, credentials, `force_path_style`) are the
//! common AWS keys of [`AwsConnection`], read by the pipeline reader beside these. Checks that
//! need more than types (the key template, limits S3 imposes) are made by the sink's
//! constructor, each error naming its field.

use std::time::Duration;

use serde::Deserialize;

use sluice_core::{
    config::units::{ByteSize, HumanDuration},
    event::codec::CodecRef,
};

use crate::connectors::aws::AwsConnection;

/// Compression of each object's payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    /// gzip (level 6): `.gz` suffix, `Content-Encoding: gzip`.
    Gzip,
    /// zstd (level 3): `.zst` suffix, `Content-Encoding: zstd`.
    Zstd,
}

impl Compression {
    /// The suffix appended to object names.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    /// The object's `Content-Encoding`.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Region, endpoint, credentials and path-style addressing (the common AWS keys, set by
    /// the pipeline reader).
    #[serde(skip)]
    pub aws: AwsConnection,
    /// The bucket objects are written to (it must exist; while it does not, batches wait).
    pub bucket: String,
    /// Template of the object key prefix (`%{header}`, strftime escapes; `%%` for `%`), e.g.
    /// `events/%{topic}/%Y/%m/%d/`. Events are grouped into objects by its rendering; the
    /// object's own name is appended to it, so it usually ends with `/`. Time escapes use the
    /// event's `timestamp` header (epoch ms) when present, else the clock at delivery.
    pub key: String,
    /// `lines` (default), `ndjson`, `parquet` (one Parquet file per object; see `parquet`),
    /// or the name of a `serde` plugin (one call per object).
    #[serde(default)]
    pub format: CodecRef,
    /// Columns, compression and row groups of `format: parquet` objects.
    pub parquet: Option<crate::parquet::ParquetSettings>,
    /// `none` (default), `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Start a new object after this many events.
    pub roll_count: Option<u64>,
    /// Start a new object once the encoded, uncompressed payload reaches this size (the event
    /// that reaches it is the object's last). With a plugin codec, which encodes an object in
    /// one call, event sizes (body plus header bytes) are counted instead.
    #[serde(default = "default_roll_size")]
    pub roll_size: ByteSize,
    /// How long the sink's runner may wait for the channel to hold a full `batch_size` before
    /// taking: an object never spans two takes, so this (with `batch_size`) is what fills
    /// objects when events trickle in. Without it, whatever is queued is taken at once.
    pub roll_interval: Option<HumanDuration>,
    /// Payloads larger than this are sent as a multipart upload in parts of this size (at
    /// least 5 MiB, S3's smallest part; the last part may be shorter), up to 4 parts at once;
    /// others with one PutObject. The default, 16 MiB, is twice the default `roll_size`, so a
    /// default object (8 MiB and the event that reached it) is one PutObject.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// The objects' `Content-Type`; default `text/plain` for `lines`, `application/x-ndjson`
    /// for `ndjson`, `application/octet-stream` for a plugin codec.
    pub content_type: Option<String>,
    /// How long one request (one PutObject or one part) may take, per attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// 8 MiB: one part of a default multipart upload, and a size most readers handle well.
pub const DEFAULT_ROLL_SIZE: u64 = 8 << 20;
/// S3's smallest part (except the last one of an upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;

fn default_roll_size() -> ByteSize {
    ByteSize(DEFAULT_ROLL_SIZE)
}
fn default_part_size() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// `type: s3` sources: read every object under a prefix, once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// The common AWS keys, set by the pipeline reader.
    #[serde(skip)]
    pub aws: AwsConnection,
    pub bucket: String,
    /// Only keys starting with this (`exports/2026-12-07/`); every key when empty.
    #[serde(default)]
    pub prefix: String,
    /// `auto` (by extension, default), `lines`, `ndjson`, `json_array`, `csv` or `parquet`.
    #[serde(default)]
    pub format: super::records::ObjectFormat,
    /// `auto` (by extension, default), `none`, `gzip` or `zstd`.
    #[serde(default)]
    pub compression: super::records::ObjectCompression,
    /// Keeps the keys (and ETags) of the objects read to the end, so a re-run skips them.
    pub position_file: std::path::PathBuf,
    /// End once every object listed is read (default); otherwise list again every
    /// `poll_interval` and read what is new.
    #[serde(default = "default_true")]
    pub run_to_completion: bool,
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// The header that gets the object's key (`~` for none).
    #[serde(default = "default_key_header")]
    pub key_header: Option<String>,
    /// Objects (after decompression) larger than this are refused: an object is read whole.
    #[serde(default = "default_max_object")]
    pub max_object_size: ByteSize,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_true() -> bool {
    true
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_key_header() -> Option<String> {
    Some("s3.key".into())
}
fn default_max_object() -> ByteSize {
    ByteSize(1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::codec::CodecName;

    #[test]
    fn defaults_and_names() {
        let c: S3SinkConfig =
            serde_json::from_value(serde_json::json!({"bucket": "b", "key": "events/"})).unwrap();
        assert_eq!(c.format, CodecRef::Builtin(CodecName::Lines));
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.roll_size, ByteSize(8 << 20));
        assert_eq!(c.part_size, ByteSize(16 << 20));
        assert_eq!(c.timeout.0, Duration::from_secs(30));
        assert!(c.roll_count.is_none() && c.roll_interval.is_none() && c.content_type.is_none());
        let c: S3SinkConfig = serde_json::from_value(serde_json::json!({
            "bucket": "b", "key": "k/", "format": "ndjson", "compression": "zstd",
            "roll_count": 10, "roll_size": "12MiB", "roll_interval": "5s", "part_size": "5MiB"
        }))
        .unwrap();
        assert_eq!(c.compression.extension(), ".zst");
        assert_eq!(c.compression.content_encoding(), Some("zstd"));
        assert_eq!(c.roll_size, ByteSize(12 << 20));
        assert_eq!(c.roll_interval.map(|d| d.0), Some(Duration::from_secs(5)));
        // The AWS keys are read elsewhere; here they are unknown.
        assert!(
            serde_json::from_value::<S3SinkConfig>(
                serde_json::json!({"bucket": "b", "key": "k/", "region": "x"})
            )
            .is_err()
        );
    }
}
