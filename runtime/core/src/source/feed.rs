//! The batching loop of sources whose upstream cannot be asked to send again (sockets, a
//! command's output): producer tasks hand it raw frames, it decodes them, gathers batches
//! (`batch_size`, or `linger` after a batch's first frame) and commits each to the channels,
//! retrying a batch the channels refuse for now.
//!
//! The hand-off is a bounded queue of frame chunks: when the channels are full the loop stops
//! taking, the queue fills, and the producers stop reading — a TCP sender is then held back by
//! flow control and a command blocks on its full pipe, instead of events being dropped.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{SourceContext, SourceError, framing::Framed};
use crate::{dlq::DeadLetter, event::Event};

/// One frame as a producer read it: a line, a datagram, a syslog message.
#[derive(Debug)]
pub struct Frame {
    pub payload: Bytes,
    /// Who sent it (network sources).
    pub peer: Option<SocketAddr>,
}

/// What producers hand the loop.
#[derive(Debug)]
pub enum Item {
    Frame(Frame),
    /// Refused before decoding (a frame past the size limit), with the reason.
    Malformed(DeadLetter),
}

impl Item {
    /// What a framer found, as an item: a frame, or a dead letter for one over the size limit
    /// (its first bytes kept); `origin` starts the reason (a file's path and `: `, or nothing).
    pub fn framed(f: Framed, peer: Option<SocketAddr>, origin: &str) -> Item {
        match f {
            Framed::Frame(payload) => Item::Frame(Frame { payload, peer }),
            Framed::TooLong { head, len } => Item::Malformed(DeadLetter {
                reason: format!(
                    "{origin}a frame of {len} bytes or more is over the size limit ({} bytes); \
                     its first bytes are kept here",
                    head.len()
                ),
                event: Event::new(head),
            }),
        }
    }
}

/// Producers send items in chunks (what one read gave), so the hand-off costs one queue
/// operation per read, not per frame.
pub type Chunk = Vec<Item>;

/// Chunks the queue holds before producers wait.
pub const QUEUE_CHUNKS: usize = 64;

/// Turns frames into events.
pub trait FrameDecoder: Send {
    /// Adds the events of `frame` to `out`, or says why the frame is malformed.
    fn decode(&mut self, frame: Frame, out: &mut Vec<Event>) -> Result<(), String>;
}

/// Pause before a batch the channels refused is offered again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Runs until every producer has dropped its sender (the source is done) or the agent stops;
/// at a stop, what the producers already read is still committed once (producers stop reading
/// at the stop and hand over what they hold).
pub async fn run(
    cx: &mut SourceContext,
    rx: &mut mpsc::Receiver<Chunk>,
    decoder: &mut dyn FrameDecoder,
    batch_size: usize,
    linger: Duration,
) -> Result<(), SourceError> {
    let batch_size = batch_size.max(1);
    let linger = linger.max(Duration::from_millis(1));
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    let mut malformed: Vec<DeadLetter> = Vec::new();
    loop {
        // The first chunk of a batch: wait for it as long as it takes.
        let first = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => None,
            c = rx.recv() => Some(c),
        };
        let mut ended = match first {
            None => {
                drain_ready(rx, decoder, &mut batch, &mut malformed).await;
                commit(cx, &mut batch, &mut malformed, batch_size).await?;
                return Ok(());
            }
            Some(None) => true,
            Some(Some(chunk)) => {
                take(chunk, decoder, &mut batch, &mut malformed);
                false
            }
        };
        // More until the batch is full or it has lingered long enough.
        let deadline = tokio::time::Instant::now() + linger;
        let mut stopping = false;
        while !ended && batch.len() + malformed.len() < batch_size {
            tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => {
                    stopping = true;
                    break;
                }
                c = tokio::time::timeout_at(deadline, rx.recv()) => match c {
                    Err(_lingered) => break,
                    Ok(None) => ended = true,
                    Ok(Some(chunk)) => take(chunk, decoder, &mut batch, &mut malformed),
                },
            }
        }
        if stopping {
            drain_ready(rx, decoder, &mut batch, &mut malformed).await;
        }
        commit(cx, &mut batch, &mut malformed, batch_size).await?;
        if ended || stopping {
            return Ok(());
        }
    }
}

fn take(
    chunk: Chunk,
    decoder: &mut dyn FrameDecoder,
    batch: &mut Vec<Event>,
    malformed: &mut Vec<DeadLetter>,
) {
    for item in chunk {
        match item {
            Item::Frame(frame) => {
                let payload = frame.payload.clone();
                if let Err(reason) = decoder.decode(frame, batch) {
                    malformed.push(DeadLetter {
                        event: Event::new(payload),
                        reason,
                    });
                }
            }
            Item::Malformed(letter) => malformed.push(letter),
        }
    }
}

/// At a stop the producers stop reading and hand over what they hold; this takes it all,
/// until every producer is gone or `STOP_DRAIN` has passed.
async fn drain_ready(
    rx: &mut mpsc::Receiver<Chunk>,
    decoder: &mut dyn FrameDecoder,
    batch: &mut Vec<Event>,
    malformed: &mut Vec<DeadLetter>,
) {
    let deadline = tokio::time::Instant::now() + STOP_DRAIN;
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        take(chunk, decoder, batch, malformed);
    }
}

/// How long a stop waits for producers to hand over what they already read.
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// Dead letters first, then the batch, each in slices of at most `batch_size` (a chunk from a
/// producer can overshoot it, and a channel refuses a put larger than it can ever hold); a
/// refused slice is offered again after a pause (the producers cannot send it again), until it
/// is committed or the agent stops for good.
pub(crate) async fn commit(
    cx: &mut SourceContext,
    batch: &mut Vec<Event>,
    malformed: &mut Vec<DeadLetter>,
    batch_size: usize,
) -> Result<(), SourceError> {
    let batch_size = batch_size.max(1);
    let mut letters = std::mem::take(malformed);
    while !letters.is_empty() {
        let rest = letters.split_off(letters.len().min(batch_size));
        cx.out.reject_malformed(letters).await?;
        letters = rest;
    }
    let mut full = std::mem::replace(batch, Vec::with_capacity(batch_size));
    while !full.is_empty() {
        let rest = full.split_off(full.len().min(batch_size));
        let mut attempt = 0u32;
        loop {
            // A copy per try: a refused slice must still be in hand for the next one.
            match cx.out.process(full.clone()).await {
                Ok(()) => break,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(source = %cx.name, error = %e, attempt, "batch refused; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        full = rest;
    }
    Ok(())
}
