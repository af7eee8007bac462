//! Kinesis Data Streams: a sink writing records with PutRecords, retrying per record. Behind
//! the `aws-kinesis` feature.

pub mod config;
pub mod sink;

use std::sync::Arc;

use sluice_core::{
    registry::{BuildCx, ReadCx, SinkSpec},
    sink::Sink,
};

use self::config::KinesisSinkConfig;

/// `type: kinesis` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    super::read_with_connection(cx, |c: &mut KinesisSinkConfig| &mut c.aws)
        .map(|c| Arc::new(c) as Arc<dyn SinkSpec>)
}

impl SinkSpec for KinesisSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(sink::KinesisSink::new(cx.name, self)?))
    }
}
