//! Accepting connections without letting them hold resources for free.
//!
//! Every listener of the Spillway binaries (gRPC and HTTP) goes through
//! here:
//!
//! - a connection must finish its TLS handshake and send the first bytes of
//!   its first request (the HTTP/2 preface, or HTTP/1 request headers,
//!   which must be complete) within `--handshake-timeout`, or it is closed;
//! - when `accept` fails (out of file descriptors, say), the listener backs
//!   off exponentially (up to 1 s) and logs once per back-off, instead of
//!   retrying and logging every 50 ms; it logs again when accepting works.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::backoff::Backoff;

/// The default `--handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `--handshake-timeout` flag, flattened into every server binary.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct ConnArgs {
    /// How long a new connection (gRPC or HTTP) may take to finish its TLS
    /// handshake and send its first request (HTTP/2 preface, or complete
    /// HTTP/1 headers); slower ones are closed. 1 s to 5 min.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_handshake_timeout)]
    pub handshake_timeout: Duration,
}

impl Default for ConnArgs {
    fn default() -> Self {
        ConnArgs {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

fn parse_handshake_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(300) {
        return Err(format!("`{s}` is not between 1s and 5m"));
    }
    Ok(d)
}

/// Bytes of the HTTP/2 client preface: a gRPC connection has not started
/// until they arrived.
const FIRST_REQUEST_BYTES: usize = 24;

/// Accepts connections on one listener, backing off on errors.
pub struct Acceptor {
    listener: TcpListener,
    addr: Option<SocketAddr>,
    backoff: Backoff,
    failures: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Self {
        Acceptor {
            addr: listener.local_addr().ok(),
            listener,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            failures: 0,
        }
    }

    /// The next connection (with Nagle off). Never fails: accept errors
    /// are logged once per back-off and retried.
    pub async fn accept(&mut self) -> TcpStream {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if self.failures > 0 {
                        tracing::info!(
                            "accepting connections on {} again, after {} failed accepts",
                            self.name(),
                            self.failures
                        );
                        self.failures = 0;
                        self.backoff.reset();
                    }
                    let _ = stream.set_nodelay(true);
                    return stream;
                }
                Err(e) => {
                    if self.failures == 0 {
                        tracing::warn!(
                            "accept failed on {}: {e}; backing off (up to 1 s between tries) until it works again",
                            self.name()
                        );
                    }
                    self.failures += 1;
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    fn name(&self) -> String {
        self.addr.map_or_else(|| "?".into(), |a| a.to_string())
    }
}

/// A connection that must deliver its first `needed` bytes before a
/// deadline: reads fail with `TimedOut` after it. Writes pass through.
pub struct Deadline<IO> {
    io: IO,
    needed: usize,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<IO> Deadline<IO> {
    /// `io` must deliver `needed` bytes by `deadline`.
    pub fn new(io: IO, needed: usize, deadline: Instant) -> Self {
        Deadline {
            io,
            needed,
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Deadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.needed = this.needed.saturating_sub(n);
                if this.needed == 0 {
                    this.sleep = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .sleep
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within --handshake-timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Deadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Deadline<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Connections of `listener` for a gRPC server: plain TCP, each bound to
/// send its HTTP/2 preface within `timeout`.
pub fn plain(
    listener: TcpListener,
    timeout: Duration,
) -> impl futures::Stream<Item = Result<Deadline<TcpStream>, io::Error>> {
    futures::stream::unfold(Acceptor::new(listener), move |mut acceptor| async move {
        let stream = acceptor.accept().await;
        let deadline = Instant::now() + timeout;
        Some((
            Ok(Deadline::new(stream, FIRST_REQUEST_BYTES, deadline)),
            acceptor,
        ))
    })
}

/// A TLS connection of [`tls`].
pub type TlsConn = Deadline<tokio_rustls::server::TlsStream<TcpStream>>;

/// Connections of `listener` for a gRPC server, through TLS: handshakes
/// run concurrently, each connection must finish its handshake and send
/// its HTTP/2 preface within `timeout` of its accept, or it is closed.
pub fn tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> impl futures::Stream<Item = Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut incoming = Acceptor::new(listener);
        loop {
            let stream = tokio::select! {
                s = incoming.accept() => s,
                () = tx.closed() => return,
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + timeout;
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx
                            .send(Ok(Deadline::new(tls, FIRST_REQUEST_BYTES, deadline)))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake not finished within {timeout:?}"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves `router` over HTTP/1 and HTTP/2 on `listener` until the process
/// ends. A connection must send complete request headers (HTTP/1) or its
/// preface (HTTP/2) within `timeout`, or it is closed.
pub fn spawn_http(
    listener: TcpListener,
    router: axum::Router,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(5));
    let builder = Arc::new(builder);
    tokio::spawn(async move {
        let mut acceptor = Acceptor::new(listener);
        loop {
            let stream = acceptor.accept().await;
            // Something must arrive in time (hyper's HTTP/1 header timeout
            // starts only with the first byte).
            let io = TokioIo::new(Deadline::new(stream, 1, Instant::now() + timeout));
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let builder = builder.clone();
            tokio::spawn(async move {
                if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
                    tracing::debug!("HTTP connection ended: {e}");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_connection_times_out_and_a_talking_one_does_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut silent = Deadline::new(server, 4, Instant::now() + Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client2, server2) = tokio::io::duplex(64);
        let mut talking = Deadline::new(server2, 4, Instant::now() + Duration::from_millis(50));
        client2.write_all(b"abcd").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 4);
        // The deadline no longer applies once the first bytes came.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client2.write_all(b"e").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        client.shutdown().await.unwrap();
    }

    #[test]
    fn handshake_timeouts_out_of_range_are_refused() {
        assert!(parse_handshake_timeout("10s").is_ok());
        assert!(parse_handshake_timeout("500ms").is_err());
        assert!(parse_handshake_timeout("10m").is_err());
    }
}
