//! SQS: a source that deletes messages only after the put committed. Behind the `aws-sqs`
//! feature.

pub mod config;
pub mod source;

use std::sync::Arc;

use sluice_core::{
    registry::{BuildCx, ReadCx, SourceSpec},
    source::Source,
};

use self::config::SqsSourceConfig;

/// `type: sqs` sources.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    super::read_with_connection(cx, |c: &mut SqsSourceConfig| &mut c.aws)
        .map(|c| Arc::new(c) as Arc<dyn SourceSpec>)
}

impl SourceSpec for SqsSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(source::SqsSource::new(
            cx.name,
            self,
            cx.batch_size,
        )?))
    }

    fn upstream(&self) -> sluice_core::guarantee::Upstream {
        sluice_core::guarantee::Upstream::AckAfterCommit("messages are deleted only after a commit")
    }
}
