//! DynamoDB: a sink writing one item per event with BatchWriteItem, retrying per item.
//! Behind the `aws-dynamodb` feature.

pub mod config;
pub mod sink;

use std::sync::Arc;

use sluice_core::{
    event::codec::{CodecName, CodecRef},
    registry::{BuildCx, ReadCx, SinkSpec},
    sink::Sink,
};

use self::config::DynamoSinkConfig;

/// `type: dynamodb` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    cx.codec_field("format", CodecName::NAMES);
    super::read_with_connection(cx, |c: &mut DynamoSinkConfig| &mut c.aws)
        .map(|c| Arc::new(c) as Arc<dyn SinkSpec>)
}

impl SinkSpec for DynamoSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let sink = sink::DynamoSink::new(cx.name, self)?;
        Ok(Box::new(match &self.format {
            Some(CodecRef::Plugin(p)) => sink.with_codec(cx.plugin_codec(p)?),
            _ => sink,
        }))
    }

    fn idempotent(&self) -> Option<sluice_core::guarantee::Idempotence> {
        Some(sluice_core::guarantee::Idempotence::Keyed(
            "items are put by their key: an event written again leaves one item".to_owned(),
        ))
    }
}
