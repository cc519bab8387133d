//! gRPC endpoints, servers and client channels with Spillway's defaults.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint, Server};

use crate::tls::Tls;

/// Largest gRPC message a Spillway server accepts unless told otherwise:
/// 10 MiB, as Loggregator's agent and router (the agent sends batches of
/// up to 100 logs of 60 KiB, some 6 MB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// The range of `--max-message-bytes`: room for a container line's
/// envelope at least, and no more than a connection may make a process
/// buffer.
pub const MESSAGE_BYTES_RANGE: (usize, usize) = (64 * 1024, 64 * 1024 * 1024);

/// A clap value parser for `--max-message-bytes` (see [`MESSAGE_BYTES_RANGE`]).
pub fn message_bytes_parser() -> clap::builder::RangedU64ValueParser<usize> {
    crate::usize_in(MESSAGE_BYTES_RANGE.0, MESSAGE_BYTES_RANGE.1)
}

/// The largest per-subscription, per-consumer or per-core buffer (in
/// envelopes) a flag may ask for.
pub const MAX_BUFFER_ENVELOPES: usize = 1_000_000;

/// A `HOST:PORT` peer address, as given to `--router` and friends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{s}` is not HOST:PORT ({why})");
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(['/', ' ', '@', '?', '#'])
            || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err(bad("invalid host"));
        }
        let port = port.parse::<u16>().map_err(|_| bad("invalid port"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A lazily connecting channel to `peer`: it dials on first use and redials
/// by itself after the connection breaks.
pub fn channel(peer: &HostPort, tls: &Tls) -> Result<Channel, String> {
    Ok(endpoint(peer, tls)?.connect_lazy())
}

/// The endpoint for `peer`, for callers that want to know when a connection
/// is up (`Endpoint::connect`) rather than dial lazily.
pub fn endpoint(peer: &HostPort, tls: &Tls) -> Result<Endpoint, String> {
    let uri = format!("{}://{peer}", tls.scheme());
    let mut ep = tune(
        Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("invalid peer address {uri}: {e}"))?,
    );
    if let Some(cfg) = tls.client_config() {
        ep = ep
            .tls_config(cfg)
            .map_err(|e| format!("TLS client setup for {peer} failed: {e}"))?;
    }
    Ok(ep)
}

/// A lazily connecting channel to one address of `peer` (as resolved by the
/// caller), whose certificate is still verified against `peer`'s name: the
/// RLP dials each router behind a DNS name this way.
pub fn channel_at(peer: &HostPort, addr: SocketAddr, tls: &Tls) -> Result<Channel, String> {
    let uri = format!("{}://{addr}", tls.scheme());
    let mut ep = tune(
        Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("invalid peer address {uri}: {e}"))?,
    );
    if let Some(cfg) = tls.client_config() {
        ep = ep
            .tls_config(cfg.domain_name(peer.host.clone()))
            .map_err(|e| format!("TLS client setup for {peer} ({addr}) failed: {e}"))?;
    }
    Ok(ep.connect_lazy())
}

/// Spillway's client defaults: short connect timeout, no Nagle, HTTP/2
/// keepalives that notice a dead peer within seconds, and flow-control
/// windows that grow with the measured bandwidth-delay product (as
/// grpc-go's do) instead of hyper's fixed 64 KiB, so a stream of batches is
/// not held to a window per scheduling delay on a busy host.
fn tune(ep: Endpoint) -> Endpoint {
    ep.connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
}

/// A server builder with keepalives, without TLS: for [`serve`], which
/// does the TLS handshakes itself.
pub fn builder() -> Server<Layers> {
    Server::builder()
        .tcp_nodelay(true)
        .http2_adaptive_window(Some(true))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .max_concurrent_streams(Some(4096))
        .layer(count_too_large())
}

/// The layers of a [`builder`] server.
pub type Layers = tower::layer::util::Stack<CountTooLarge, tower::layer::util::Identity>;

/// The layer of [`count_too_large`].
pub type CountTooLarge = tower::util::MapResponseLayer<
    fn(
        tonic::codegen::http::Response<tonic::body::Body>,
    ) -> tonic::codegen::http::Response<tonic::body::Body>,
>;

/// Counts every call answered with OutOfRange: tonic's answer to a message
/// over the server's size limit, which it gives before any handler runs
/// (`spillway_refused_messages_total{reason="too_large"}`).
pub fn count_too_large() -> CountTooLarge {
    fn count(
        response: tonic::codegen::http::Response<tonic::body::Body>,
    ) -> tonic::codegen::http::Response<tonic::body::Body> {
        let status = response.headers().get("grpc-status");
        if status.is_some_and(|s| s.as_bytes() == b"11") {
            let message = response
                .headers()
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .unwrap_or("");
            spillway_proto::codec::refused(spillway_proto::codec::Refusal::TooLarge, message);
        }
        response
    }
    tower::util::MapResponseLayer::new(count as fn(_) -> _)
}

/// A server builder with TLS in tonic (if configured) and keepalives, for
/// servers given a plain `TcpListenerStream` (tests). Tonic's handshakes
/// have no timeout: the binaries use [`builder`] and [`serve`].
pub fn server(tls: &Tls) -> Result<Server, String> {
    let mut b = Server::builder()
        .tcp_nodelay(true)
        .http2_adaptive_window(Some(true))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .max_concurrent_streams(Some(4096));
    if let Some(cfg) = tls.server_config() {
        b = b.tls_config(cfg).map_err(|e| {
            format!("TLS server setup failed (check --tls-cert and --tls-key): {e}")
        })?;
    }
    Ok(b)
}

/// Binds `addr`, with an error that names it.
pub async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {flag} {addr}: {e}"))
}

/// Serves `router` on `listener` until the process ends, through TLS
/// unless `tls` is plaintext. TLS handshakes are done here rather than in
/// tonic, so that each connection must finish its handshake and send its
/// HTTP/2 preface within `handshake_timeout` ([`crate::conn`]); accept
/// errors back off. `router` must come from [`builder`] (no TLS of its own).
pub async fn serve(
    router: tonic::transport::server::Router<Layers>,
    listener: TcpListener,
    tls: &Tls,
    handshake_timeout: Duration,
) -> Result<(), tonic::transport::Error> {
    match tls.rustls_server_config() {
        Some(config) => {
            router
                .serve_with_incoming(crate::conn::tls(listener, config, handshake_timeout))
                .await
        }
        None => {
            router
                .serve_with_incoming(crate::conn::plain(listener, handshake_timeout))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses_and_rejects() {
        assert_eq!(
            "localhost:8082".parse::<HostPort>().unwrap().to_string(),
            "localhost:8082"
        );
        assert_eq!("[::1]:5".parse::<HostPort>().unwrap().host, "::1");
        for bad in [
            "localhost",
            ":80",
            "a:0",
            "a:99999",
            "a:b",
            "http://x:1",
            "a b:1",
        ] {
            let e = bad.parse::<HostPort>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
