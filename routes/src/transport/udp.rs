//! UDP: one message per datagram. A message over `max_datagram` bytes
//! (default 2048, the size RFC 5426 asks every receiver to take) is cut to
//! that size and counted as truncated.

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::UdpSocket;

use super::{Link, Transport, TransportKind};
use crate::spec::Options;

pub const KIND: TransportKind = TransportKind {
    name: "udp",
    stream: false,
    build,
};

/// The largest payload of one UDP datagram over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

fn build(options: &mut Options) -> Result<Arc<dyn Transport>, String> {
    let max_bytes = options.take_bounded(
        "max_datagram",
        "a number of bytes",
        1..=MAX_UDP_PAYLOAD,
        2048,
    )?;
    Ok(Arc::new(Udp { max_bytes }))
}

struct Udp {
    max_bytes: usize,
}

impl Transport for Udp {
    fn dial<'a>(&'a self, address: &'a str) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(async move {
            let target = tokio::net::lookup_host(address)
                .await?
                .next()
                .ok_or_else(|| io::Error::other(format!("{address} resolves to nothing")))?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(target).await?;
            Ok(Link::Datagram {
                socket,
                max_bytes: self.max_bytes,
            })
        })
    }
}
