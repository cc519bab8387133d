//! The Docker side of container capture: which containers run, and (with
//! `--source docker`) their output read through the Docker API.
//!
//! Data flow:
//!
//! ```text
//! dockerd ──events + list + inspect──▶ watch() ──Event──▶ a source
//!                                         │               (eBPF, or logs::spawn)
//!                                         └─▶ Containers (id → Container, for routes)
//! dockerd ──GET /containers/{id}/logs──▶ logs::spawn ──Assembler──▶ Output
//! ```
//!
//! [`watch`] turns Docker's view into a stream of [`Event`]s: one
//! [`Event::Running`] per container that runs (and is not opted out), one
//! [`Event::Stopped`] when it stops. Sources only need to follow those
//! events; everything about reconnecting to a restarted dockerd and
//! resynchronising is handled here.
//!
//! [`connect`] builds a client without talking to the daemon, so the
//! collector starts (and keeps retrying) while Docker is down.

pub mod time;
mod watch;

use std::path::PathBuf;

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use spillway_plumbing::logging::error_chain;

use crate::container::Container;

pub use super::{Containers, Event};
use super::{Listed, Runtime};

/// Where podman's Docker-compatible API listens when run as root
/// (`podman system service`, or the `podman.socket` unit).
pub const PODMAN_DEFAULT_HOST: &str = "unix:///run/podman/podman.sock";

/// The Docker Engine API as a [`Runtime`]: dockerd, or podman's
/// Docker-compatible API.
pub struct DockerRuntime {
    docker: Docker,
    host: String,
    /// "Docker" or "podman", for logs.
    kind: &'static str,
}

impl DockerRuntime {
    /// dockerd at `host` (see [`connect`]).
    pub fn docker(host: &str) -> Result<Self, String> {
        Ok(DockerRuntime {
            docker: connect(host)?,
            host: host.to_owned(),
            kind: "Docker",
        })
    }

    /// podman's Docker-compatible API at `host` (see [`connect`]).
    pub fn podman(host: &str) -> Result<Self, String> {
        Ok(DockerRuntime {
            kind: "podman",
            ..Self::docker(host)?
        })
    }

    /// The daemon's name and version, if it answers within `within`.
    pub async fn probe(&self, within: std::time::Duration) -> Result<String, String> {
        let v = tokio::time::timeout(within, self.docker.version())
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
            .map_err(|e| error_chain(&e))?;
        Ok(format!(
            "{} {} (API {})",
            self.kind,
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }
}

impl Runtime for DockerRuntime {
    fn describe(&self) -> String {
        format!("{} API at {}", self.kind, self.host)
    }

    fn watch(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<Event>,
        known: Containers,
        listed: Option<Listed>,
    ) -> tokio::task::JoinHandle<()> {
        watch::watch_with(self.docker.clone(), tx, known, listed)
    }

    fn docker_api(&self) -> Option<Docker> {
        Some(self.docker.clone())
    }
}

pub use watch::{watch, watch_into, watch_with};

/// Where the Docker daemon listens unless told otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long a request may wait for Docker's response headers. Streams
/// (events, logs) send their headers at once, so this does not limit how
/// long they stay open.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// `DOCKER_HOST` if set (and not empty), else [`DEFAULT_HOST`].
pub fn default_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// A Docker client for `uri`: `unix:///path` (or a bare `/path`),
/// `tcp://host:port` or `http://host:port`.
///
/// Nothing is sent to the daemon here, so this succeeds while Docker is
/// down; the API version is negotiated by [`watch`] on every (re)connect
/// (bollard 0.21 in fact requests unversioned paths, which dockerd answers
/// in its own version). The error is one line naming the bad value.
pub fn connect(uri: &str) -> Result<Docker, String> {
    let docker = match parse_endpoint(uri)? {
        Endpoint::Unix(path) => unix_client(path),
        Endpoint::Http(addr) => {
            Docker::connect_with_http(&addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
    };
    docker.map_err(|e| format!("Docker host {uri:?}: {}", error_chain(&e)))
}

#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    /// The socket's path.
    Unix(PathBuf),
    /// `http://host:port`.
    Http(String),
}

fn parse_endpoint(uri: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| {
        Err(format!(
            "bad Docker host {uri:?}: {why} (expected unix:///path/to/docker.sock, tcp://host:port or http://host:port)"
        ))
    };
    if let Some(path) = uri
        .strip_prefix("unix://")
        .or_else(|| uri.strip_prefix('/').map(|_| uri))
    {
        return match path {
            "" => bad("no socket path"),
            p if !p.starts_with('/') => bad("the socket path must be absolute"),
            p => Ok(Endpoint::Unix(PathBuf::from(p))),
        };
    }
    let Some(authority) = uri
        .strip_prefix("tcp://")
        .or_else(|| uri.strip_prefix("http://"))
    else {
        return match uri.split_once("://") {
            Some((scheme, _)) => bad(&format!("unsupported scheme {scheme}://")),
            None => bad("no scheme"),
        };
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let Some((host, port)) = authority.rsplit_once(':') else {
        return bad("no port");
    };
    let unbracketed_ipv6 = host.contains(':') && !host.starts_with('[');
    if host.is_empty() || unbracketed_ipv6 || host.contains(['/', '?', '#', '@']) {
        return bad("bad host");
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad("bad port");
    }
    Ok(Endpoint::Http(format!("http://{host}:{port}")))
}

/// A client for a Unix socket that may not exist yet.
///
/// bollard's own `connect_with_unix` refuses a socket that does not exist
/// (dockerd down), so this is the same transport (hyperlocal, one
/// connection per request) as a custom one, which connects at request
/// time instead.
fn unix_client(socket: PathBuf) -> Result<Docker, bollard::errors::Error> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(UnixConnector);
    let transport = move |mut req: BollardRequest| {
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *req.uri_mut() = hyperlocal::Uri::new(&socket, path).into();
        let (client, socket) = (client.clone(), socket.clone());
        async move {
            client.request(req).await.map_err(|e| {
                std::io::Error::other(format!("unix://{}: {}", socket.display(), error_chain(&e)))
                    .into()
            })
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some("http://docker"),
        REQUEST_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )
}

/// A [`Container`] from `docker inspect`; `None` without an id.
fn container_from_inspect(r: bollard::models::ContainerInspectResponse) -> Option<Container> {
    let id = r.id.filter(|id| !id.is_empty())?;
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let name = r.name.unwrap_or_default();
    Some(Container {
        name: name.strip_prefix('/').unwrap_or(&name).to_owned(),
        image: config.image.unwrap_or_default(),
        hostname: config.hostname.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        env: config.env.unwrap_or_default(),
        tty: config.tty.unwrap_or(false),
        pod: None,
        pid: state
            .pid
            .filter(|_| state.running == Some(true))
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        started_at: state
            .started_at
            .and_then(|s| time::parse_rfc3339(s.as_bytes()))
            .filter(|&ns| ns > 0)
            .unwrap_or(0),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerInspectResponse, ContainerState};

    #[test]
    fn endpoints() {
        let unix = |p: &str| Ok(Endpoint::Unix(PathBuf::from(p)));
        let http = |a: &str| Ok(Endpoint::Http(a.to_owned()));
        assert_eq!(
            parse_endpoint("unix:///var/run/docker.sock"),
            unix("/var/run/docker.sock")
        );
        assert_eq!(
            parse_endpoint("/run/user/1000/docker.sock"),
            unix("/run/user/1000/docker.sock")
        );
        assert_eq!(
            parse_endpoint("tcp://10.0.0.1:2375"),
            http("http://10.0.0.1:2375")
        );
        assert_eq!(
            parse_endpoint("http://docker:2375/"),
            http("http://docker:2375")
        );
        assert_eq!(
            parse_endpoint("tcp://[::1]:2375"),
            http("http://[::1]:2375")
        );
    }

    #[test]
    fn bad_endpoints_name_the_value() {
        for (bad, why) in [
            ("", "no scheme"),
            ("docker.sock", "no scheme"),
            ("unix://", "no socket path"),
            ("unix://relative.sock", "absolute"),
            ("https://h:2376", "unsupported scheme https://"),
            ("ssh://me@h", "unsupported scheme ssh://"),
            ("npipe:////./pipe/docker_engine", "unsupported scheme"),
            ("tcp://host", "no port"),
            ("tcp://:2375", "bad host"),
            ("tcp://::1:2375", "bad host"),
            ("tcp://host:x", "bad port"),
            ("tcp://host:0", "bad port"),
            ("tcp://host:99999", "bad port"),
            ("tcp://host:2375/v1.41", "bad port"),
        ] {
            let e = parse_endpoint(bad).expect_err(bad);
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains(why),
                "{bad}: {e}"
            );
            assert!(!e.contains('\n'));
        }
    }

    #[tokio::test]
    async fn connecting_needs_no_daemon() {
        assert!(connect("unix:///nonexistent/docker.sock").is_ok());
        assert!(connect("tcp://127.0.0.1:9").is_ok());
        assert!(connect("ftp://x").is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_fails_per_request_naming_it() {
        let docker = connect("unix:///nonexistent/docker.sock").unwrap();
        let e = error_chain(&docker.ping().await.unwrap_err());
        assert!(e.contains("unix:///nonexistent/docker.sock"), "{e}");
    }

    #[test]
    fn inspect_to_container() {
        let r = ContainerInspectResponse {
            id: Some("f".repeat(64)),
            name: Some("/web".into()),
            config: Some(ContainerConfig {
                image: Some("busybox".into()),
                labels: Some([("a".to_owned(), "b".to_owned())].into()),
                env: Some(vec!["SPILLWAY=ignore".into()]),
                tty: Some(true),
                ..Default::default()
            }),
            state: Some(ContainerState {
                running: Some(true),
                pid: Some(4242),
                started_at: Some("1970-01-01T00:00:01.5Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = container_from_inspect(r.clone()).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.image, "busybox");
        assert_eq!(c.labels["a"], "b");
        assert!(c.is_ignored() && c.tty);
        assert_eq!((c.pid, c.started_at), (4242, 1_500_000_000));

        let mut exited = r.clone();
        exited.state = Some(ContainerState {
            running: Some(false),
            pid: Some(0),
            started_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        let c = container_from_inspect(exited).unwrap();
        assert_eq!((c.pid, c.started_at), (0, 0));

        assert_eq!(
            container_from_inspect(ContainerInspectResponse::default()),
            None
        );
    }
}
