//! Mutual TLS for every gRPC link.
//!
//! Every Spillway component holds a certificate signed by one CA. Servers
//! require and verify client certificates against that CA; clients verify
//! the server's certificate and its name (the host they dialled). Plaintext
//! needs an explicit `--insecure-plaintext`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The `--tls-*` flags, flattened into every binary's flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signed every Spillway component's
    /// certificate; peers must present a certificate it signed.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This component's certificate (PEM), used as server and as client.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve and dial gRPC without TLS. For loopback experiments only:
    /// anyone who can reach the ports can read and inject logs.
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub insecure_plaintext: bool,
}

/// Loaded TLS material, or the explicit choice of plaintext.
#[derive(Clone, Debug)]
pub enum Tls {
    Mutual {
        ca: Certificate,
        identity: Identity,
        /// The same as a rustls server config (client certificates
        /// required), for servers that do their TLS handshakes themselves
        /// ([`crate::grpc::serve`]).
        server: Arc<rustls::ServerConfig>,
    },
    Plaintext,
}

impl TlsArgs {
    /// Reads and checks the files. The error names the flag and the file.
    pub fn load(&self) -> Result<Tls, String> {
        if self.insecure_plaintext {
            tracing::warn!(
                "--insecure-plaintext: gRPC runs WITHOUT TLS. Anyone who can reach these ports can \
                 read and inject logs. Use this only on loopback."
            );
            return Ok(Tls::Plaintext);
        }
        let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key)
        else {
            return Err(
                "mutual TLS needs --tls-ca, --tls-cert and --tls-key (or --insecure-plaintext \
                        for loopback experiments)"
                    .into(),
            );
        };
        let ca = read_pem("--tls-ca", ca, "CERTIFICATE")?;
        let cert = read_pem("--tls-cert", cert, "CERTIFICATE")?;
        let key = read_pem("--tls-key", key, "PRIVATE KEY")?;
        let server = rustls_server_config(&ca, &cert, &key)?;
        Ok(Tls::Mutual {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
            server,
        })
    }
}

/// A rustls server config: our certificate and key, client certificates
/// required and verified against `ca`, HTTP/2 by ALPN (as tonic's).
fn rustls_server_config(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        let c = c.map_err(|e| format!("--tls-ca: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("--tls-ca holds an unusable certificate: {e}"))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("--tls-key: {e}"))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("--tls-ca: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS server setup failed (check --tls-cert and --tls-key): {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read_pem(flag: &str, path: &Path, label: &str) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") || !text.contains(label) {
        return Err(format!(
            "{flag} {} is not a PEM file holding a {label}",
            path.display()
        ));
    }
    Ok(bytes)
}

impl Tls {
    /// The rustls server config, unless plaintext.
    pub fn rustls_server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        match self {
            Tls::Mutual { server, .. } => Some(server.clone()),
            Tls::Plaintext => None,
        }
    }

    pub fn is_plaintext(&self) -> bool {
        matches!(self, Tls::Plaintext)
    }

    /// URI scheme for dialling a peer.
    pub fn scheme(&self) -> &'static str {
        match self {
            Tls::Mutual { .. } => "https",
            Tls::Plaintext => "http",
        }
    }

    /// Server side: our identity, client certificates required and verified.
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        match self {
            Tls::Mutual { ca, identity, .. } => Some(
                ServerTlsConfig::new()
                    .identity(identity.clone())
                    .client_ca_root(ca.clone())
                    .client_auth_optional(false),
            ),
            Tls::Plaintext => None,
        }
    }

    /// Client side: trust only our CA, present our identity. The server name
    /// is verified against the host in the URI that is dialled.
    pub fn client_config(&self) -> Option<ClientTlsConfig> {
        match self {
            Tls::Mutual { ca, identity, .. } => Some(
                ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(identity.clone()),
            ),
            Tls::Plaintext => None,
        }
    }
}
