//! The `nats` sink: publishes each event's body to JetStream on a subject rendered from its
//! headers, every message of a batch in flight at once, and counts the batch delivered only
//! when the stream has acknowledged each one. A message the server refuses (no stream captures
//! its subject, say) makes the batch retriable as a whole; a subject that renders empty or
//! holds a wildcard is refused for that event alone. A connection that breaks is made again on
//! the next attempt; a message the stream stored just before the break is sent twice.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use async_trait::async_trait;

use sluice_core::{
    event::template::Template,
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::config::{NatsSinkConfig, connect, servers};

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    plain_sink::<NatsSinkConfig>(cx)
}

impl SinkSpec for NatsSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(NatsSink {
            peer: servers(self.url.expose())?,
            subject: Template::parse(&self.subject).map_err(|e| format!("`subject`: {e}"))?,
            cfg: self.clone(),
            name: cx.name.to_owned(),
            live: None,
        }))
    }
}

/// Publishes in flight at once, well under the client's limit of unacknowledged ones.
const WINDOW: usize = 1000;

pub struct NatsSink {
    cfg: NatsSinkConfig,
    name: String,
    peer: String,
    subject: Template,
    live: Option<(async_nats::Client, jetstream::Context)>,
}

#[async_trait]
impl Sink for NatsSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        let limit = self.cfg.timeout.0;
        if self.live.is_none() {
            let client = connect(self.cfg.url.expose(), limit, &self.name)
                .await
                .map_err(DeliveryError::Unreachable)?;
            let js = jetstream::new(client.clone());
            if let Some(stream) = &self.cfg.stream {
                js.get_stream(stream).await.map_err(|e| {
                    DeliveryError::retriable(format!("stream `{stream}` is not there: {e}"))
                })?;
            }
            tracing::info!(sink = %self.name, peer = %self.peer, "connected to NATS");
            self.live = Some((client, js));
        }
        let Some((_, js)) = &self.live else {
            return Err(DeliveryError::retriable("not connected"));
        };
        let mut rejected = Vec::new();
        let publish_all = async {
            let mut pending = Vec::with_capacity(WINDOW);
            let mut subject = String::new();
            for (i, event) in batch.iter().enumerate() {
                subject.clear();
                self.subject.render(event, &mut subject);
                if subject.is_empty()
                    || subject.contains(['*', '>', ' ', '\t', '\r', '\n'])
                    || subject.starts_with('.')
                    || subject.ends_with('.')
                    || subject.contains("..")
                {
                    rejected.push((
                        i,
                        format!("subject {subject:?} is not one to publish to (an empty token, a wildcard or whitespace)"),
                    ));
                    continue;
                }
                let ack = js
                    .publish(subject.clone(), event.body.clone())
                    .await
                    .map_err(|e| format!("publishing failed: {e}"))?;
                pending.push(ack);
                // The client holds a bounded number of unacknowledged publishes: wait for a
                // window's acknowledgements before sending more.
                if pending.len() >= WINDOW {
                    for ack in pending.drain(..) {
                        ack.await
                            .map_err(|e| format!("the stream did not store a message: {e}"))?;
                    }
                }
            }
            for ack in pending {
                ack.await
                    .map_err(|e| format!("the stream did not store a message: {e}"))?;
            }
            Ok::<(), String>(())
        };
        let failure = match tokio::time::timeout(limit, publish_all).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no acknowledgement within {limit:?}")),
        };
        if let Some(reason) = failure {
            self.live = None;
            return Err(DeliveryError::retriable(reason));
        }
        DeliveryError::outcome(batch.len(), rejected, Vec::new(), None)
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        if let Some((client, _)) = self.live.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        }
        Ok(())
    }
}
