//! TLS on rustls (ring provider, TLS 1.2 and 1.3). Servers: the http source's and the admin
//! server's acceptors, and the engine's listeners' (`tcp`, `syslog`) through
//! [`sluice_core::tls::TlsServers`]. Clients: the `mqtt` connectors'. Certificates and keys
//! are PEM files, read when the pipeline is built, so a bad path or key is a configuration
//! error, not a failure at the first connection.

use std::{path::Path, sync::Arc};

use sluice_core::tls::{Handshake, ServerTls, TlsAccept, TlsServers};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
};

fn certificates(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.{field} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.{field} {}: no certificate found",
            path.display()
        ));
    }
    Ok(certs)
}

fn roots(path: &Path, field: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in certificates(path, field)? {
        roots
            .add(c)
            .map_err(|e| format!("tls.{field} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A server configuration for `cert` and `key`; with `client_ca`, clients must present a
/// certificate that CA signed (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, String> {
    let certs = certificates(cert, "cert")?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(ca, "client_ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: cannot use this certificate and key: {e}"))
}

/// A client configuration: the server's certificate checked against `tls.ca`, or the
/// system's trusted roots without one; a client certificate when `cert` and `key` are set.
#[cfg(feature = "mqtt")]
pub fn client_config(
    tls: &sluice_core::tls::ClientTls,
    base: &Path,
) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use tokio_rustls::rustls::ClientConfig;
    let roots = match &tls.ca {
        Some(ca) => roots(&base.join(ca), "ca")?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "tls: no `ca` given and no trusted root certificates found on this system ({:?})",
                    found.errors
                ));
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs = certificates(&base.join(cert), "cert")?;
            let key = base.join(key);
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| format!("tls.key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls: cannot use this client certificate and key: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("tls: a client certificate needs both `cert` and `key`".into()),
    }
}

/// The acceptor of an HTTP/1.1 server (the http source, the admin server).
#[cfg(feature = "http")]
pub fn http_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let mut config = server_config(cert, key, None)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The engine's listeners' TLS (registered in the agent's registry).
pub struct Listeners;

impl TlsServers for Listeners {
    fn acceptor(&self, tls: &ServerTls, base: &Path) -> Result<Arc<dyn TlsAccept>, String> {
        let ca = tls.client_ca.as_ref().map(|c| base.join(c));
        let config = server_config(&base.join(&tls.cert), &base.join(&tls.key), ca.as_deref())?;
        Ok(Arc::new(Acceptor(TlsAcceptor::from(Arc::new(config)))))
    }
}

struct Acceptor(TlsAcceptor);

impl TlsAccept for Acceptor {
    fn accept(&self, tcp: tokio::net::TcpStream) -> Handshake {
        let accept = self.0.accept(tcp);
        Box::pin(async move {
            let session = accept.await?;
            Ok(Box::new(session) as sluice_core::tls::TlsStream)
        })
    }
}
