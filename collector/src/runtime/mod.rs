//! Container runtimes: which containers run on this node, what they are
//! called, and which process to capture.
//!
//! A [`Runtime`] lists its containers and follows their changes (events,
//! or polling), turns each into a [`Container`] (whose metadata gives the
//! envelopes' source id, instance id and tags, and whose `pid` is the
//! process to capture) and sends them as a stream of [`Event`]s, keeping
//! [`Containers`] up to date. Capture sources only follow those events;
//! the eBPF source places writes that came before registration by the
//! container id in the writer's cgroup name, which every runtime here
//! puts there.
//!
//! - [`docker`]: the Docker Engine API (dockerd), also podman's
//!   Docker-compatible API (`podman system service`);
//! - [`cri`]: the Kubernetes CRI (containerd, CRI-O).
//!
//! [`select`] picks one as `--runtime` says, `auto` by which socket
//! answers.

pub mod cri;
pub mod docker;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use clap::ValueEnum;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::container::Container;

/// Called once, when a runtime's running containers have been listed and
/// sent for the first time (capture is ready then).
pub type Listed = Box<dyn FnOnce() + Send + Sync>;

/// A container runtime, as the collector follows it.
pub trait Runtime: Send + Sync {
    /// What and where it is, for logs: `CRI at unix:///run/...`.
    fn describe(&self) -> String;

    /// Follows the running containers: an [`Event`] to `tx` for each
    /// change, `known` kept to exactly the containers sent as `Running`
    /// and not `Stopped` since (updated before the event is sent),
    /// `listed` called after the first complete list. Reconnects forever;
    /// ends when `tx`'s receiver is dropped.
    fn watch(
        &self,
        tx: UnboundedSender<Event>,
        known: Containers,
        listed: Option<Listed>,
    ) -> JoinHandle<()>;

    /// A Docker API client, for a runtime that speaks that API (the
    /// `docker` source reads container logs through it).
    fn docker_api(&self) -> Option<bollard::Docker> {
        None
    }
}

/// Which runtime to follow (`--runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// The first that answers: Docker (`--docker-host`), then CRI
    /// (`--cri-endpoint`, or containerd's then CRI-O's socket), then
    /// podman (`--podman-host`); Docker if none does.
    Auto,
    /// The Docker Engine API at `--docker-host`.
    Docker,
    /// The Kubernetes CRI at `--cri-endpoint` (containerd, CRI-O).
    Cri,
    /// podman's Docker-compatible API at `--podman-host`.
    Podman,
}

/// Where each runtime listens (the flags).
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub docker_host: String,
    /// `None`: the known defaults, [`spillway_cri_api::CONTAINERD_ENDPOINT`]
    /// then [`spillway_cri_api::CRIO_ENDPOINT`].
    pub cri_endpoint: Option<String>,
    pub podman_host: String,
}

/// How long `auto` waits for each socket's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The runtime `kind` names, with `auto` and a CRI runtime without
/// `--cri-endpoint` detected by which socket answers. Errors are bad
/// endpoints (one line).
pub async fn select(kind: RuntimeKind, at: &Endpoints) -> Result<Box<dyn Runtime>, String> {
    let cri_endpoints: Vec<&str> = match &at.cri_endpoint {
        Some(e) => vec![e.as_str()],
        None => vec![
            spillway_cri_api::CONTAINERD_ENDPOINT,
            spillway_cri_api::CRIO_ENDPOINT,
        ],
    };
    match kind {
        RuntimeKind::Docker => Ok(Box::new(docker::DockerRuntime::docker(&at.docker_host)?)),
        RuntimeKind::Podman => Ok(Box::new(docker::DockerRuntime::podman(&at.podman_host)?)),
        RuntimeKind::Cri => {
            let runtimes = cri_endpoints
                .iter()
                .map(|e| cri::Cri::new(e))
                .collect::<Result<Vec<_>, _>>()?;
            let mut answering = None;
            for (i, r) in runtimes.iter().enumerate() {
                if let Ok(version) = r.probe(PROBE_TIMEOUT).await {
                    tracing::info!("container runtime: {version}, {}", r.describe());
                    answering = Some(i);
                    break;
                }
            }
            let mut runtimes = runtimes;
            if let Some(i) = answering {
                return Ok(Box::new(runtimes.swap_remove(i)));
            }
            let first = runtimes.swap_remove(0);
            tracing::warn!(
                "container runtime: no CRI runtime answers yet; following {}",
                first.describe()
            );
            Ok(Box::new(first))
        }
        RuntimeKind::Auto => {
            let docker = docker::DockerRuntime::docker(&at.docker_host)?;
            let cris = cri_endpoints
                .iter()
                .map(|e| cri::Cri::new(e))
                .collect::<Result<Vec<_>, _>>()?;
            let podman = docker::DockerRuntime::podman(&at.podman_host)?;
            if let Ok(version) = docker.probe(PROBE_TIMEOUT).await {
                tracing::info!("container runtime (auto): {version}, {}", docker.describe());
                return Ok(Box::new(docker));
            }
            for cri in cris {
                if let Ok(version) = cri.probe(PROBE_TIMEOUT).await {
                    tracing::info!("container runtime (auto): {version}, {}", cri.describe());
                    return Ok(Box::new(cri));
                }
            }
            if let Ok(version) = podman.probe(PROBE_TIMEOUT).await {
                tracing::info!("container runtime (auto): {version}, {}", podman.describe());
                return Ok(Box::new(podman));
            }
            tracing::warn!(
                "container runtime (auto): none answers (Docker, CRI, podman); following {}",
                docker.describe()
            );
            Ok(Box::new(docker))
        }
    }
}

/// What happened to a container, as sources need to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The container runs (or ran: a container that exited before it could
    /// be inspected comes with `pid` 0, so its output can still be read
    /// through the Docker API; its `Stopped` follows). Sent at the first
    /// list, on every start and rename, and again for every running
    /// container after a reconnect: a `Running` for a known id is an
    /// update (new name, or a restart: new `pid` and `started_at`).
    Running(Arc<Container>),
    /// The container died or was removed, or was found gone after a
    /// reconnect. May come for an id never sent as `Running`, and twice
    /// for one stop (die, then destroy).
    Stopped { id: String },
    /// The container runs but opted out of collection (see
    /// [`Container::is_ignored`]): nothing it writes is to be shipped.
    OptedOut { id: String },
}

/// The containers last sent as [`Event::Running`] and not stopped since,
/// by full id; kept by [`watch_into`]. Cheap to clone and to read.
#[derive(Clone, Debug, Default)]
pub struct Containers(Arc<RwLock<HashMap<String, Arc<Container>>>>);

impl Containers {
    /// The container with this full id.
    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        self.read().get(id).cloned()
    }

    /// The container with this full id, name, or id prefix of at least 12
    /// characters (as `docker` shows ids).
    pub fn find(&self, id_or_name: &str) -> Option<Arc<Container>> {
        let map = self.read();
        if let Some(c) = map.get(id_or_name) {
            return Some(c.clone());
        }
        let name = id_or_name.strip_prefix('/').unwrap_or(id_or_name);
        map.values()
            .find(|c| c.name == name || (id_or_name.len() >= 12 && c.id.starts_with(id_or_name)))
            .cloned()
    }

    /// All of them, by name.
    pub fn all(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn insert(&self, c: Arc<Container>) {
        self.write().insert(c.id.clone(), c);
    }

    fn remove(&self, id: &str) -> Option<Arc<Container>> {
        self.write().remove(id)
    }

    // A panic elsewhere while holding the lock leaves the map consistent
    // (every write is one insert or remove), so poisoning is ignored.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Container>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Container>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_lookup() {
        let known = Containers::default();
        let c = Arc::new(Container {
            id: "0123456789ab".repeat(5) + "cdef",
            name: "web".into(),
            ..Default::default()
        });
        known.insert(c.clone());
        assert_eq!(known.get(&c.id), Some(c.clone()));
        assert_eq!(known.find("web"), Some(c.clone()));
        assert_eq!(known.find("/web"), Some(c.clone()));
        assert_eq!(known.find("0123456789ab"), Some(c.clone()));
        assert_eq!(known.find("0123"), None, "too short a prefix");
        assert_eq!(known.all(), vec![c.clone()]);
        known.remove(&c.id);
        assert!(known.is_empty());
    }
}
