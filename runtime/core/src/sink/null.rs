//! The null sink: accepts and discards everything (benchmarks, smoke tests).

use async_trait::async_trait;
use serde::Deserialize;

use super::{Batch, DeliveryError, Sink};
use crate::registry::{BuildCx, SinkSpec};

/// `type: null` (no settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkConfig {}

impl SinkSpec for NullSinkConfig {
    fn build(&self, _: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(NullSink))
    }
}

pub struct NullSink;

#[async_trait]
impl Sink for NullSink {
    async fn deliver(&mut self, _batch: &Batch<'_>) -> Result<(), DeliveryError> {
        Ok(())
    }
}
