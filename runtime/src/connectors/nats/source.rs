//! The `nats` source: reads a JetStream stream through a durable pull consumer (explicit
//! acknowledgements), gathers messages into batches (`batch_size`, or `linger` after the
//! first) and acknowledges each only after its batch is committed.
//!
//! The durable consumer keeps the position on the server, so messages published while the
//! agent is down wait for it; a message not acknowledged within `ack_wait` (the agent crashed,
//! or full channels held the batch that long) is delivered again: at least once. A broken
//! connection is made again by the engine's source supervisor, with a growing pause.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use async_trait::async_trait;
use futures_util::StreamExt;

use sluice_core::{
    event::{Event, HeaderText},
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec, plain_source},
    source::{
        Commit, Source, SourceContext, SourceError,
        supervisor::{Backoff, Failure, Session, Supervised, supervise},
    },
};

use super::config::{NatsSourceConfig, connect, servers};

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    plain_source::<NatsSourceConfig>(cx)
}

impl SourceSpec for NatsSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let peer = servers(self.url.expose())?;
        if self.stream.is_empty() {
            return Err("`stream`: required".into());
        }
        if self.create_stream && self.subject.is_none() {
            return Err("`create_stream` needs `subject`: what the new stream captures".into());
        }
        Ok(Box::new(NatsSource {
            durable: self
                .durable
                .clone()
                .unwrap_or_else(|| format!("sluice-{}", cx.name)),
            cfg: self.clone(),
            name: cx.name.to_owned(),
            peer,
            batch_size: cx.batch_size.max(1),
        }))
    }

    fn upstream(&self) -> Upstream {
        Upstream::AckAfterCommit("messages are acknowledged only after a commit")
    }
}

struct NatsSource {
    cfg: NatsSourceConfig,
    name: String,
    peer: String,
    durable: String,
    batch_size: usize,
}

/// A connection and the consumer's message stream on it.
struct Live {
    client: async_nats::Client,
    messages: pull::Stream,
}

impl Supervised for NatsSource {
    type Conn = Live;

    fn peer(&self) -> String {
        self.peer.clone()
    }

    async fn connect(&mut self) -> Result<Live, Failure> {
        let limit = self.cfg.timeout.0;
        let client = connect(self.cfg.url.expose(), limit, &self.name)
            .await
            .map_err(|e| Failure::retry("cannot connect", e))?;
        let js = jetstream::new(client.clone());
        let stream = match js.get_stream(&self.cfg.stream).await {
            Ok(s) => s,
            Err(e) if self.cfg.create_stream => {
                tracing::info!(source = %self.name, stream = %self.cfg.stream, reason = %e, "creating the stream");
                js.get_or_create_stream(jetstream::stream::Config {
                    name: self.cfg.stream.clone(),
                    subjects: self.cfg.subject.iter().cloned().collect(),
                    ..Default::default()
                })
                .await
                .map_err(|e| Failure::retry("cannot create the stream", e))?
            }
            Err(e) => {
                return Err(Failure::retry(
                    format!("cannot open stream `{}`", self.cfg.stream),
                    e,
                ));
            }
        };
        let consumer = stream
            .get_or_create_consumer(
                &self.durable,
                pull::Config {
                    durable_name: Some(self.durable.clone()),
                    filter_subject: self.cfg.subject.clone().unwrap_or_default(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.cfg.ack_wait.0,
                    // Room for the batch in hand and the next one.
                    max_ack_pending: (self.batch_size * 4) as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Failure::retry(format!("cannot open consumer `{}`", self.durable), e))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .messages()
            .await
            .map_err(|e| Failure::retry("cannot start consuming", e))?;
        tracing::info!(source = %self.name, peer = %self.peer, stream = %self.cfg.stream, durable = %self.durable, "consuming from NATS JetStream");
        Ok(Live { client, messages })
    }

    async fn consume(
        &mut self,
        mut live: Live,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let header = self.cfg.subject_header.as_deref().map(HeaderText::new);
        let linger = self.cfg.linger.0.max(Duration::from_millis(1));
        loop {
            let first = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => return Ok(()),
                m = live.messages.next() => m,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(Failure::retry("lost the consumer", e)),
                None => return Err(Failure::retry("lost the consumer", "its stream ended")),
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < self.batch_size {
                match tokio::time::timeout_at(deadline, live.messages.next()).await {
                    Ok(Some(Ok(m))) => batch.push(m),
                    // An error with messages in hand: commit them first, then reconnect.
                    Ok(Some(Err(_)) | None) | Err(_) => break,
                }
            }
            let events: Vec<Event> = batch
                .iter()
                .map(|m| {
                    let mut e = Event::new(m.payload.clone());
                    if let Some(h) = &header {
                        e.headers.insert(h.clone(), m.subject.as_str());
                    }
                    e
                })
                .collect();
            match cx.commit_or_stop(events).await {
                Ok(Commit::Done) => {}
                Ok(Commit::Stopped) => return Ok(()),
                Err(e) => return Err(Failure::Fatal(e)),
            }
            for m in &batch {
                if let Err(e) = m.ack().await {
                    // Not acknowledged: the server sends it again after ack_wait.
                    return Err(Failure::retry("acknowledging failed", e));
                }
            }
            // The acknowledgements are only queued in the client: flush them to the server.
            if let Err(e) = live.client.flush().await {
                return Err(Failure::retry("sending the acknowledgements failed", e));
            }
            session.mark_progress();
        }
    }
}

#[async_trait]
impl Source for NatsSource {
    async fn run(mut self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        supervise(&mut *self, &mut cx, backoff).await
    }
}
