//! TCP: messages framed on one connection, redialled when it fails.

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Link, Transport, TransportKind, connect_tcp};
use crate::spec::Options;

pub const KIND: TransportKind = TransportKind {
    name: "tcp",
    stream: true,
    build,
};

fn build(_options: &mut Options) -> Result<Arc<dyn Transport>, String> {
    Ok(Arc::new(Tcp))
}

struct Tcp;

impl Transport for Tcp {
    fn dial<'a>(&'a self, address: &'a str) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(async move { Ok(Link::Stream(Box::pin(connect_tcp(address).await?))) })
    }
}
