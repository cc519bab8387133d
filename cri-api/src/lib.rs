//! The Kubernetes Container Runtime Interface (CRI), `runtime.v1`: what
//! the kubelet asks of containerd and CRI-O over gRPC on a Unix socket.
//!
//! `proto/runtime/v1/api.proto` is the API of `k8s.io/cri-api`, as vendored
//! by the `k8s-cri` crate (0.11, Apache-2.0), unchanged. That crate itself
//! is not used because it needs a system `protoc` to build.
//!
//! [`connect`] gives a [`RuntimeServiceClient`] and an
//! [`ImageServiceClient`] for an endpoint like
//! `unix:///run/containerd/containerd.sock`, connecting lazily, so it
//! succeeds while the runtime is down.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Messages and clients of `runtime.v1`, generated from the proto.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("runtime.v1");
}

pub use v1::image_service_client::ImageServiceClient;
pub use v1::runtime_service_client::RuntimeServiceClient;

/// containerd's socket, the first default endpoint.
pub const CONTAINERD_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// CRI-O's socket, the second default endpoint.
pub const CRIO_ENDPOINT: &str = "unix:///var/run/crio/crio.sock";

/// The socket path of a `unix:///path` endpoint (or a bare absolute
/// path); the error is one line naming the value.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.starts_with('/').then_some(endpoint))
        .ok_or_else(|| {
            format!("bad CRI endpoint {endpoint:?}: expected unix:///path/to/runtime.sock")
        })?;
    if !path.starts_with('/') {
        return Err(format!(
            "bad CRI endpoint {endpoint:?}: the socket path must be absolute"
        ));
    }
    Ok(PathBuf::from(path))
}

/// A channel to the CRI runtime at `endpoint` (`unix:///path`). Nothing is
/// sent until the first request; each (re)connection opens the socket
/// anew, so a restarted runtime is found again.
pub fn channel(endpoint: &str) -> Result<Channel, String> {
    let path = socket_path(endpoint)?;
    // The URI is not used for Unix sockets, but tonic needs a valid one.
    let channel = Endpoint::from_static("http://cri.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }),
    );
    Ok(channel)
}

/// The runtime and image service clients for `endpoint`; see [`channel`].
pub fn connect(
    endpoint: &str,
) -> Result<(RuntimeServiceClient<Channel>, ImageServiceClient<Channel>), String> {
    let channel = channel(endpoint)?;
    Ok((
        RuntimeServiceClient::new(channel.clone()),
        ImageServiceClient::new(channel),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path(CONTAINERD_ENDPOINT).unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/var/run/crio/crio.sock").unwrap(),
            PathBuf::from("/var/run/crio/crio.sock")
        );
        for bad in ["", "tcp://h:1", "unix://rel.sock", "crio.sock"] {
            let e = socket_path(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && !e.contains('\n'), "{e}");
        }
    }

    #[tokio::test]
    async fn a_down_runtime_fails_per_request() {
        let (mut rt, _) = connect("unix:///nonexistent/cri.sock").unwrap();
        let e = rt.version(v1::VersionRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    }
}
