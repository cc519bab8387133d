//! TLS over TCP with rustls (RFC 5425 for syslog).
//!
//! The receiver's certificate is verified against the system's roots
//! (`/etc/ssl/certs`) plus an optional extra CA, and its name against the
//! host of the route (or `server_name=`). Options:
//! - `ca=FILE`: extra CA certificates (PEM), for private receivers;
//! - `system_roots=false`: trust only `ca=`;
//! - `cert=FILE`, `key=FILE`: a client certificate, for mutual TLS;
//! - `server_name=NAME`: the name to verify instead of the route's host.
//!
//! Files are read with [`read_option_file`]: regular files of at most
//! 1 MiB. The system roots are loaded once and shared.

use std::io;
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{Link, Transport, TransportKind, connect_tcp};
use crate::file::read_option_file;
use crate::spec::Options;

pub const KIND: TransportKind = TransportKind {
    name: "tls",
    stream: true,
    build,
};

fn build(options: &mut Options) -> Result<Arc<dyn Transport>, String> {
    let system = options
        .take_parsed::<bool>("system_roots", "true or false")?
        .unwrap_or(true);
    let roots: Arc<RootCertStore> = match (options.take("ca"), system) {
        (None, true) => system_roots(),
        (None, false) => Arc::new(RootCertStore::empty()),
        (Some(ca), system) => {
            let mut roots = if system {
                RootCertStore::clone(&system_roots())
            } else {
                RootCertStore::empty()
            };
            for cert in read_certs("ca", &ca)? {
                roots.add(cert).map_err(|e| {
                    format!("option ca={ca:?}: a certificate is not usable as a CA: {e}")
                })?;
            }
            Arc::new(roots)
        }
    };
    if roots.is_empty() {
        return Err("no CA to verify the receiver: give ca=FILE (no system roots found or system_roots=false)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match (options.take("cert"), options.take("key")) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("cert", &cert)?;
            let key_der = PrivateKeyDer::from_pem_slice(&read_option_file("key", &key)?)
                .map_err(|e| format!("option key={key:?}: no usable PEM private key: {e}"))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!("options cert={cert:?} and key={key:?} do not go together: {e}")
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("options cert= and key= go together".into()),
    };
    let server_name = options
        .take("server_name")
        .map(|n| {
            ServerName::try_from(n.clone())
                .map_err(|_| format!("option server_name={n:?} is not a DNS name or IP address"))
        })
        .transpose()?;
    Ok(Arc::new(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    }))
}

/// The system's root certificates, loaded once and shared by every TLS
/// route that adds no `ca=` of its own.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::debug!("no system root certificates found");
            }
            Arc::new(roots)
        })
        .clone()
}

fn read_certs(option: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_option_file(option, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("option {option}={file:?}: cannot read PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("option {option}={file:?} holds no PEM certificate"));
    }
    Ok(certs)
}

struct Tls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl Transport for Tls {
    fn dial<'a>(&'a self, address: &'a str) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(async move {
            let name = match &self.server_name {
                Some(n) => n.clone(),
                None => {
                    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    ServerName::try_from(host.to_owned()).map_err(|_| {
                        io::Error::other(format!("{host:?} is not a name TLS can verify"))
                    })?
                }
            };
            let tcp = connect_tcp(address).await?;
            let tls = self.connector.connect(name, tcp).await?;
            Ok(Link::Stream(Box::pin(tls)))
        })
    }
}
