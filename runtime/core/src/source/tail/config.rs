//! Settings of the `file` source, and the checks that need more than types.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

use super::FileSource;
use crate::{
    config::units::{ByteSize, HumanDuration},
    event::codec::{CodecName, CodecRef},
    registry::{BuildCx, ReadCx, SourceSpec},
    source::Source,
};

/// `type: file`: follows files matching globs as they grow (`tail -F`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Glob patterns (`*`, `?`, `[..]`, `**`). Relative ones are relative to the working
    /// directory, like the file sink's paths.
    pub paths: Vec<String>,
    /// JSON file recording how far each file has been committed (one per source).
    pub position_file: PathBuf,
    /// Where to start in files found on the very first run (no position file yet).
    #[serde(default)]
    pub start_at: StartAt,
    /// How often to look for new, rotated and grown files (change notifications come sooner).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// How long a file renamed out of the globs or deleted keeps being read after it last grew.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait: HumanDuration,
    /// Join lines into events: a line matching `start` begins one.
    pub multiline: Option<MultilineConfig>,
    /// Longest event body; longer lines are split into pieces of this size.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// Header names for the file's path and the line's byte offset (`null`: no header).
    #[serde(default)]
    pub headers: FileHeaders,
    /// `lines`, `ndjson`, or the name of a `serde` plugin (each line is one payload).
    #[serde(default)]
    pub codec: CodecRef,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Read files found on the first run from their start.
    #[default]
    Beginning,
    /// Skip the complete lines files already hold on the first run.
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regex a line must match to begin a new event; other lines continue the current one.
    pub start: String,
    /// An event is complete when no line has been added to it for this long.
    #[serde(default = "default_multiline_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    #[serde(default = "default_file_header")]
    pub file: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
}

impl Default for FileHeaders {
    fn default() -> Self {
        FileHeaders {
            file: default_file_header(),
            offset: None,
        }
    }
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}
fn default_rotate_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_multiline_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_line_bytes() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_file_header() -> Option<String> {
    Some("file".into())
}

/// Reads a `file` source, checking what types cannot say. The source is kept even with such
/// errors (they fail the load anyway), so cross-component checks still see its position file.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    let cfg: FileSourceConfig = cx.read()?;
    for (bad, message) in [
        (
            cfg.paths.is_empty(),
            "`paths` needs at least one glob pattern",
        ),
        (
            cfg.max_line_bytes.0 == 0,
            "max_line_bytes must be at least 1",
        ),
        (
            cfg.poll_interval.0.is_zero(),
            "poll_interval must be more than 0",
        ),
    ] {
        if bad {
            cx.error(cx.pos, message);
        }
    }
    Some(Arc::new(cfg))
}

impl SourceSpec for FileSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let codec = cx.codec(&self.codec)?;
        Ok(Box::new(FileSource::new(self, cx.batch_size, codec)?))
    }

    fn exclusive_paths(&self) -> Vec<(&'static str, &std::path::Path)> {
        vec![("position_file", &self.position_file)]
    }

    fn upstream(&self) -> crate::guarantee::Upstream {
        crate::guarantee::Upstream::AckAfterCommit("its read position is saved only after a commit")
    }
}
