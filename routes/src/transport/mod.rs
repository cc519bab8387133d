//! Transports dial receivers and carry an adapter's messages: one datagram
//! each (UDP), or framed on a byte stream (TCP, TLS).
//!
//! To add one: write a module with a [`TransportKind`] and add one line to
//! [`TRANSPORTS`] behind its cargo feature.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UdpSocket;

use crate::spec::Options;

#[cfg(feature = "transport-tcp")]
pub mod tcp;
#[cfg(feature = "transport-tls")]
pub mod tls;
#[cfg(feature = "transport-udp")]
pub mod udp;

/// Every transport compiled in, by scheme name.
pub static TRANSPORTS: &[TransportKind] = &[
    #[cfg(feature = "transport-udp")]
    udp::KIND,
    #[cfg(feature = "transport-tcp")]
    tcp::KIND,
    #[cfg(feature = "transport-tls")]
    tls::KIND,
];

/// The transport of a route URI without one (`syslog://host:514`).
pub const DEFAULT: &str = "udp";

/// Dials a receiver.
pub trait Transport: Send + Sync {
    fn dial<'a>(&'a self, address: &'a str) -> BoxFuture<'a, io::Result<Link>>;
}

/// A live connection to a receiver.
pub enum Link {
    /// One message per datagram, cut to `max_bytes`.
    Datagram { socket: UdpSocket, max_bytes: usize },
    /// Framed messages on a byte stream.
    Stream(Pin<Box<dyn Conn>>),
}

/// A byte stream to a receiver. It is read only to notice that the
/// receiver closed it.
pub trait Conn: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> Conn for T {}

/// How messages are delimited on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `LEN SP MSG` (RFC 6587 octet counting, RFC 5425 for TLS).
    OctetCounting,
    /// `MSG LF` (newlines inside a message are sent as they are).
    Lf,
}

impl Framing {
    /// Appends one framed message to `buf`.
    pub fn frame(self, msg: &[u8], buf: &mut Vec<u8>) {
        match self {
            Framing::OctetCounting => {
                buf.extend_from_slice(msg.len().to_string().as_bytes());
                buf.push(b' ');
                buf.extend_from_slice(msg);
            }
            Framing::Lf => {
                buf.extend_from_slice(msg);
                buf.push(b'\n');
            }
        }
    }

    /// The `framing=` option (`octet-counting` or `lf`), if given.
    pub fn option(options: &mut Options) -> Result<Option<Framing>, String> {
        Ok(
            match options.take_choice("framing", &["octet-counting", "lf"])? {
                Some("lf") => Some(Framing::Lf),
                Some(_) => Some(Framing::OctetCounting),
                None => None,
            },
        )
    }
}

/// One transport's registration.
pub struct TransportKind {
    pub name: &'static str,
    /// Whether messages go on a byte stream (and need framing).
    pub stream: bool,
    /// Builds one, taking its options.
    pub build: fn(&mut Options) -> Result<Arc<dyn Transport>, String>,
}

pub fn find(name: &str) -> Option<&'static TransportKind> {
    TRANSPORTS.iter().find(|t| t.name == name)
}

/// The names compiled in, for error messages.
pub fn names() -> String {
    TRANSPORTS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connects a TCP socket to `address`, trying each address it resolves to.
#[cfg(any(feature = "transport-tcp", feature = "transport-tls"))]
pub(crate) async fn connect_tcp(address: &str) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut buf = Vec::new();
        Framing::OctetCounting.frame(b"<14>1 - - - - - hi", &mut buf);
        Framing::Lf.frame(b"a\nb", &mut buf);
        assert_eq!(
            buf,
            b"18 <14>1 - - - - - hi"
                .iter()
                .chain(b"a\nb\n")
                .copied()
                .collect::<Vec<_>>()
        );
    }
}
