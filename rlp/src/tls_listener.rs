//! The gateway's listener: TLS handshakes off the accept loop, with a
//! deadline, and whether the client presented a verified certificate.
//!
//! Each accepted TCP connection gets its own task for the handshake, so a
//! client that never finishes one holds neither the accept loop nor, after
//! [`HANDSHAKE_TIMEOUT`], its file descriptor. Finished connections are
//! handed to axum through [`axum::serve::Listener`].

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::access::{Peer, read_small_file};

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The gateway's TLS material, as files.
pub struct TlsFiles<'a> {
    pub cert: (&'a str, &'a Path),
    pub key: (&'a str, &'a Path),
    /// CA that verifies client certificates, if they are accepted.
    pub client_ca: Option<(&'a str, &'a Path)>,
}

/// A rustls server config: our certificate; client certificates optional,
/// but verified against the client CA when presented (and refused without
/// one). HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (flag, path) = files.cert;
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_slice_iter(&read_small_file(flag, path, MAX_PEM_BYTES)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {} holds no certificate", path.display()));
    }
    let (flag, path) = files.key;
    let key = PrivateKeyDer::from_pem_slice(&read_small_file(flag, path, MAX_PEM_BYTES)?)
        .map_err(|e| format!("{flag} {}: no private key ({e})", path.display()))?;
    let verifier = match files.client_ca {
        Some((flag, path)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read_small_file(flag, path, MAX_PEM_BYTES)?)
            {
                let cert = cert.map_err(|e| format!("{flag} {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{flag} {}: {e}", path.display()))?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("the gateway's certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Connections whose TLS handshake succeeded.
pub struct TlsListener {
    done: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Accepts on `listener` and shakes hands with `config`, until the
    /// returned listener is dropped.
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, done) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = tx.closed() => return,
                    a = listener.accept() => match a {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!("gateway: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(tls)) = shake.await {
                        let peer = Peer {
                            client_certificate: tls.get_ref().1.peer_certificates().is_some(),
                        };
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        TlsListener { done }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        match self.done.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    /// Peers are what the gateway knows of a connection; this side has none.
    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer::default())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Plain HTTP (`--gateway-insecure-plaintext`): no client certificate.
impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(_: IncomingStream<'_, TcpListener>) -> Self {
        Peer::default()
    }
}
