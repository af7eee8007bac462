//! TLS for the engine's listeners (`tcp`, `syslog`): the `tls:` settings and the hook a build
//! with a TLS library fills in.
//!
//! The engine itself has no TLS library — rustls's crypto provider has C and assembly, and the
//! slim agent has none — so the agent registers a [`TlsServers`] in the
//! [`Registry`](crate::registry::Registry) when it is built with one; without it, a `tls:`
//! setting is refused when the pipeline is built, naming the feature.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use serde::Deserialize;
use tokio::{io::AsyncRead, net::TcpStream};

/// `tls:` of a listening source: the server's certificate chain and key (PEM files, relative
/// to the pipeline file), and, for mutual TLS, the CA a client's certificate must chain to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, a client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// `tls:` of a client (a `sluice` or `mqtt` sink, an `mqtt` source): the CA that signed the
/// server's certificate, and a client certificate and key for mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the server's certificate carries, when it is not the host name connected to.
    pub server_name: Option<String>,
}

/// What a listener reads after the handshake.
pub type TlsStream = Box<dyn AsyncRead + Send + Unpin>;

/// The handshake, as a future the connection's task awaits.
pub type Handshake = Pin<Box<dyn Future<Output = io::Result<TlsStream>> + Send>>;

/// Turns an accepted connection into a TLS session.
pub trait TlsAccept: Send + Sync {
    fn accept(&self, tcp: TcpStream) -> Handshake;
}

/// Makes acceptors from `tls:` settings; checks the files when the pipeline is built, so a bad
/// path or key is a configuration error rather than a failure at the first connection.
pub trait TlsServers: Send + Sync {
    /// `base` is where relative paths start (the pipeline file's directory).
    fn acceptor(&self, tls: &ServerTls, base: &Path) -> Result<Arc<dyn TlsAccept>, String>;
}
