//! Sources that listen on a socket: `tcp` and `udp` (one event per line, Flume's netcat) and
//! `syslog` (RFC 5424 and RFC 3164 over TCP or UDP).
//!
//! A listener task (and one task per TCP connection) reads and frames; the source's
//! [`feed`](super::feed) loop decodes, batches and commits. Senders are never told what was
//! committed — TCP and UDP have no acknowledgement Sluice could hold back — so what a crash
//! interrupts is lost; a full channel holds TCP senders back through flow control, while UDP
//! datagrams the kernel cannot queue are dropped by the kernel, as with any UDP receiver.
//!
//! A TCP listener with `tls:` runs each connection's handshake in its task (bounded by a
//! timeout, since the connection holds a slot) through the agent's [`crate::tls`] hook.

pub mod syslog;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::{TcpListener, UdpSocket},
    sync::{Semaphore, mpsc},
};
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;

use self::syslog::SyslogFormat;
use super::{
    Source, SourceContext, SourceError,
    feed::{self, Chunk, Frame, FrameDecoder, Item, QUEUE_CHUNKS},
    framing::Framer,
};
use crate::{
    config::units::{ByteSize, HumanDuration, ListenAddr},
    event::{
        Event, HeaderText, Headers,
        codec::{Codec, CodecName, CodecRef, decode_into},
    },
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec, plain_source},
    tls::{ServerTls, TlsAccept},
};

const NO_REPLAY: &str = "a TCP or UDP sender is not told what was committed";

fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_max_length() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_max_connections() -> usize {
    1024
}

/// `type: tcp`: one event per line from any number of connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// `host:port`, or a port on 127.0.0.1.
    pub listen: ListenAddr,
    /// `lines` (default), `ndjson` or a `serde` plugin, applied to each line.
    #[serde(default)]
    pub codec: CodecRef,
    /// Longer lines are cut to this and dead-lettered.
    #[serde(default = "default_max_length")]
    pub max_line_length: ByteSize,
    /// Connections served at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Hand a partial batch to the channels after this long.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// A header that gets the sender's `ip:port`.
    pub peer_header: Option<String>,
    /// Accept TLS connections only (certificate, key, and `client_ca` for mutual TLS).
    pub tls: Option<ServerTls>,
}

/// `type: udp`: each datagram's lines become events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    pub listen: ListenAddr,
    #[serde(default)]
    pub codec: CodecRef,
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    pub peer_header: Option<String>,
}

/// `protocol:` of a syslog source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// `type: syslog`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub listen: ListenAddr,
    #[serde(default)]
    pub protocol: Protocol,
    /// `auto` (default), `rfc5424` or `rfc3164`.
    #[serde(default)]
    pub format: SyslogFormat,
    /// Longer messages are cut to this and dead-lettered (TCP; a datagram is at most 64 KiB).
    #[serde(default = "default_max_length")]
    pub max_message_size: ByteSize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    pub peer_header: Option<String>,
    /// TCP only: accept TLS connections only (RFC 5425).
    pub tls: Option<ServerTls>,
}

pub(crate) fn read_tcp(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    plain_source::<TcpConfig>(cx)
}

pub(crate) fn read_udp(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    plain_source::<UdpConfig>(cx)
}

impl SourceSpec for TcpConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(Listener {
            listen: self.listen.0,
            transport: Transport::Tcp {
                framer: Framer::lines(self.max_line_length.0 as usize),
                max_connections: self.max_connections.max(1),
                tls: tls_acceptor(cx, self.tls.as_ref())?,
            },
            decoder: Box::new(LineDecoder {
                codec: cx.codec(&self.codec)?,
                peer: PeerHeader::new(self.peer_header.as_deref()),
            }),
            batch_size: cx.batch_size,
            linger: self.linger.0,
        }))
    }

    fn upstream(&self) -> Upstream {
        Upstream::NoReplay(NO_REPLAY)
    }
}

impl SourceSpec for UdpConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(Listener {
            listen: self.listen.0,
            transport: Transport::Udp { split_lines: true },
            decoder: Box::new(LineDecoder {
                codec: cx.codec(&self.codec)?,
                peer: PeerHeader::new(self.peer_header.as_deref()),
            }),
            batch_size: cx.batch_size,
            linger: self.linger.0,
        }))
    }

    fn upstream(&self) -> Upstream {
        Upstream::NoReplay(NO_REPLAY)
    }
}

impl SourceSpec for SyslogConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let transport = match self.protocol {
            Protocol::Tcp => Transport::Tcp {
                framer: Framer::syslog(self.max_message_size.0 as usize),
                max_connections: self.max_connections.max(1),
                tls: tls_acceptor(cx, self.tls.as_ref())?,
            },
            Protocol::Udp if self.tls.is_some() => {
                return Err(
                    "`tls` needs `protocol: tcp` (syslog over TLS is RFC 5425, TCP only)".into(),
                );
            }
            Protocol::Udp => Transport::Udp { split_lines: false },
        };
        Ok(Box::new(Listener {
            listen: self.listen.0,
            transport,
            decoder: Box::new(SyslogDecoder {
                format: self.format,
                peer: PeerHeader::new(self.peer_header.as_deref()),
            }),
            batch_size: cx.batch_size,
            linger: self.linger.0,
        }))
    }

    fn upstream(&self) -> Upstream {
        Upstream::NoReplay(NO_REPLAY)
    }
}

fn tls_acceptor(
    cx: &BuildCx<'_>,
    tls: Option<&ServerTls>,
) -> Result<Option<Arc<dyn TlsAccept>>, String> {
    tls.map(|t| cx.tls_acceptor(t)).transpose()
}

/// The sender's address as a header, formatted once per sender rather than per event.
struct PeerHeader {
    name: Option<HeaderText>,
    /// The last peer and its header, shared by the events of its frames.
    last: Option<(SocketAddr, Headers)>,
}

impl PeerHeader {
    fn new(name: Option<&str>) -> Self {
        PeerHeader {
            name: name.map(HeaderText::new),
            last: None,
        }
    }

    /// Adds the header to `events` (those the frame from `peer` gave). Events without headers
    /// (lines) share one map per peer: no allocation per event.
    fn add(&mut self, peer: Option<SocketAddr>, events: &mut [Event]) {
        let (Some(name), Some(peer)) = (&self.name, peer) else {
            return;
        };
        if !matches!(&self.last, Some((addr, _)) if *addr == peer) {
            let headers: Headers = [(name.clone(), HeaderText::new(peer.to_string()))]
                .into_iter()
                .collect();
            self.last = Some((peer, headers));
        }
        let Some((_, shared)) = &self.last else {
            return;
        };
        for e in events {
            e.headers.insert_all(shared);
        }
    }
}

/// Each frame through a codec.
struct LineDecoder {
    codec: Box<dyn Codec>,
    peer: PeerHeader,
}

impl FrameDecoder for LineDecoder {
    fn decode(&mut self, frame: Frame, out: &mut Vec<Event>) -> Result<(), String> {
        let from = out.len();
        decode_into(self.codec.as_mut(), frame.payload, out)?;
        self.peer.add(frame.peer, &mut out[from..]);
        Ok(())
    }
}

/// Each frame as one syslog message.
struct SyslogDecoder {
    format: SyslogFormat,
    peer: PeerHeader,
}

impl FrameDecoder for SyslogDecoder {
    fn decode(&mut self, frame: Frame, out: &mut Vec<Event>) -> Result<(), String> {
        let mut e = syslog::parse(&frame.payload, self.format)?;
        self.peer.add(frame.peer, std::slice::from_mut(&mut e));
        out.push(e);
        Ok(())
    }
}

enum Transport {
    Tcp {
        /// A new framer per connection starts as a copy of this one.
        framer: Framer,
        max_connections: usize,
        tls: Option<Arc<dyn TlsAccept>>,
    },
    Udp {
        /// Every line of a datagram is a frame (`udp`), or the datagram is one (`syslog`).
        split_lines: bool,
    },
}

struct Listener {
    listen: SocketAddr,
    transport: Transport,
    decoder: Box<dyn FrameDecoder>,
    batch_size: usize,
    linger: Duration,
}

#[async_trait]
impl Source for Listener {
    async fn run(mut self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUE_CHUNKS);
        let stop = cx.shutdown.child_token();
        let cannot = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", self.listen))
        };
        match &self.transport {
            Transport::Tcp {
                framer,
                max_connections,
                tls,
            } => {
                let listener = TcpListener::bind(self.listen).await.map_err(cannot)?;
                tracing::info!(source = %cx.name, listen = %listener.local_addr()?, tls = tls.is_some(), "listening (TCP)");
                tokio::spawn(accept(
                    listener,
                    Accept {
                        framer: framer.clone(),
                        tls: tls.clone(),
                        tx,
                        stop: stop.clone(),
                        source: cx.name.clone(),
                        warned: Arc::default(),
                    },
                    *max_connections,
                ));
            }
            Transport::Udp { split_lines } => {
                let socket = UdpSocket::bind(self.listen).await.map_err(cannot)?;
                tracing::info!(source = %cx.name, listen = %socket.local_addr()?, "listening (UDP)");
                tokio::spawn(receive(socket, *split_lines, tx, stop.clone()));
            }
        }
        let _stop_on_return = stop.drop_guard();
        feed::run(
            &mut cx,
            &mut rx,
            self.decoder.as_mut(),
            self.batch_size,
            self.linger,
        )
        .await
    }
}

/// What every connection of a TCP listener shares.
#[derive(Clone)]
struct Accept {
    framer: Framer,
    tls: Option<Arc<dyn TlsAccept>>,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
    source: String,
    /// When a refused TLS handshake was last logged as a warning (seconds since the epoch):
    /// scanners and plain-text clients on a TLS port would otherwise flood the log.
    warned: Arc<std::sync::atomic::AtomicU64>,
}

/// Refused handshakes are logged as warnings at most this often (the others at debug).
const WARN_EVERY_SECS: u64 = 10;

/// A client that has not finished its TLS handshake by then is dropped (it holds a slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections, at most `max` at once, until `stop`.
async fn accept(listener: TcpListener, a: Accept, max: usize) {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let slot = tokio::select! {
            _ = a.stop.cancelled() => return,
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = a.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let a = a.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let read = match &a.tls {
                        None => connection(stream, peer, a.framer, a.tx, a.stop).await,
                        Some(tls) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                            {
                                Ok(Ok(session)) => {
                                    connection(session, peer, a.framer, a.tx, a.stop).await
                                }
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "no TLS handshake within 10 s",
                                )),
                            }
                        }
                    };
                    if let Err(e) = read {
                        // A refused handshake (no or an unknown client certificate) is worth
                        // an operator's attention; a peer that hangs up is not.
                        if a.tls.is_some() && e.kind() == std::io::ErrorKind::InvalidData {
                            use std::sync::atomic::Ordering;
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs());
                            let last = a.warned.load(Ordering::Relaxed);
                            if now >= last + WARN_EVERY_SECS
                                && a.warned
                                    .compare_exchange(
                                        last,
                                        now,
                                        Ordering::Relaxed,
                                        Ordering::Relaxed,
                                    )
                                    .is_ok()
                            {
                                tracing::warn!(source = %a.source, peer = %peer, error = %e, "TLS connection refused (more within 10 s are logged at debug)");
                            } else {
                                tracing::debug!(source = %a.source, peer = %peer, error = %e, "TLS connection refused");
                            }
                        } else {
                            tracing::debug!(source = %a.source, peer = %peer, error = %e, "connection ended");
                        }
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of descriptors, say: pause rather than spin.
                tracing::warn!(source = %a.source, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Bytes read per call (the buffer grows to hold a frame up to the limit).
const READ_SIZE: usize = 64 * 1024;

async fn connection(
    mut stream: impl AsyncRead + Unpin,
    peer: SocketAddr,
    mut framer: Framer,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        let n = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = stream.read_buf(&mut buf) => match n {
                Ok(n) => n,
                // A TLS client that closes without `close_notify` (many do): the end of its
                // stream all the same, so its last line is kept.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e),
            },
        };
        let mut chunk = Chunk::new();
        while let Some(f) = framer.next(&mut buf) {
            chunk.push(Item::framed(f, Some(peer), ""));
        }
        if n == 0 {
            chunk.extend(
                framer
                    .finish(&mut buf)
                    .map(|f| Item::framed(f, Some(peer), "")),
            );
        }
        // Also at a stop: what was read is handed over (the feed drains at a stop).
        if !chunk.is_empty() && tx.send(chunk).await.is_err() {
            return Ok(());
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Datagrams handed over per chunk at most.
const DATAGRAMS_PER_CHUNK: usize = 512;
const MAX_DATAGRAM: usize = 65_536;
/// Receive memory allocated at a time.
const BLOCK: usize = 16 * MAX_DATAGRAM;

async fn receive(
    socket: UdpSocket,
    split_lines: bool,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.readable() => if r.is_err() { return },
        }
        let mut chunk = Chunk::new();
        while chunk.len() < DATAGRAMS_PER_CHUNK {
            // Datagrams share one block until it has no room for the largest one; a reserve
            // per datagram would pin 64 KiB behind every small event.
            if buf.capacity() - buf.len() < MAX_DATAGRAM {
                buf.reserve(BLOCK);
            }
            let peer = match socket.try_recv_buf_from(&mut buf) {
                Ok((_, peer)) => peer,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    break;
                }
            };
            let datagram = buf.split();
            if split_lines {
                let mut framer = Framer::lines(MAX_DATAGRAM);
                let mut datagram = datagram;
                while let Some(f) = framer.next(&mut datagram) {
                    chunk.push(Item::framed(f, Some(peer), ""));
                }
                chunk.extend(
                    framer
                        .finish(&mut datagram)
                        .map(|f| Item::framed(f, Some(peer), "")),
                );
            } else {
                let payload = trim_datagram(datagram.freeze());
                if !payload.is_empty() {
                    chunk.push(Item::Frame(Frame {
                        payload,
                        peer: Some(peer),
                    }));
                }
            }
        }
        if !chunk.is_empty() && tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// A syslog datagram may end with a newline or a NUL.
fn trim_datagram(mut b: Bytes) -> Bytes {
    while matches!(b.last(), Some(b'\n' | b'\r' | 0)) {
        b.truncate(b.len() - 1);
    }
    b
}
