//! The null sink: accepts and discards everything (benchmarks, smoke tests).

use async_trait::async_trait;

use super::{DeliveryError, Sink};
use crate::event::Event;

pub struct NullSink;

#[async_trait]
impl Sink for NullSink {
    async fn deliver(&mut self, _batch: &[Event]) -> Result<(), DeliveryError> {
        Ok(())
    }
}
