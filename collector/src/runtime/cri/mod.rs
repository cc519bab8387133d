//! The Kubernetes CRI runtimes (containerd, CRI-O) through the CRI gRPC
//! API `runtime.v1`, as the kubelet sees them.
//!
//! Work is done in *sessions*, one per connection to the runtime:
//!
//! 1. `Version`: the runtime's name and version, for the log;
//! 2. `GetContainerEvents` (containerd 1.7+, CRI-O): each event triggers a
//!    resync at once; a runtime without it (containerd 1.6) is polled
//!    every [`POLL_EVERY`], one with it every [`POLL_WITH_EVENTS_EVERY`]
//!    as a safety net;
//! 3. a resync lists the pod sandboxes and the containers, and compares
//!    them with what was sent: `Running` for each new running container
//!    (its pid from `ContainerStatus` with `verbose`), `Stopped` for each
//!    sent one that no longer runs. A container that started and exited
//!    between two resyncs is sent as `Running` with pid 0, then
//!    `Stopped`, so what it wrote can be placed by its cgroup.
//!
//! When a request fails (the runtime restarted), the session ends; the
//! next starts after a backoff and resyncs the same way.
//!
//! [`pod`] holds the Kubernetes rules: source id, instance id, tags.

pub mod pod;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use spillway_cri_api::RuntimeServiceClient;
use spillway_cri_api::v1::{
    self, ContainerState, ContainerStatusRequest, GetEventsRequest, ListContainersRequest,
    ListPodSandboxRequest, VersionRequest,
};
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::logging::RateLimited;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{Containers, Event, Listed, Runtime};
use crate::container::Container;
use pod::Pod;

/// How often a runtime without container events is listed.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often a runtime that sends container events is listed anyway.
pub const POLL_WITH_EVENTS_EVERY: Duration = Duration::from_secs(10);
/// How long one CRI request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often "runtime unreachable" may be logged.
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(30);

/// A CRI runtime at an endpoint (`unix:///run/containerd/containerd.sock`).
pub struct Cri {
    endpoint: String,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// A client for `endpoint`; nothing is sent yet (see
    /// [`spillway_cri_api::channel`]).
    pub fn new(endpoint: &str) -> Result<Self, String> {
        let (client, _) = spillway_cri_api::connect(endpoint)?;
        Ok(Cri {
            endpoint: endpoint.to_owned(),
            client,
        })
    }

    /// The runtime's name and version, if it answers within `within`.
    pub async fn probe(&self, within: Duration) -> Result<String, String> {
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(within, client.version(version_request()))
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        Ok(format!(
            "{} {} (CRI {})",
            answer.runtime_name, answer.runtime_version, answer.runtime_api_version
        ))
    }
}

fn version_request() -> VersionRequest {
    VersionRequest {
        version: "v1".into(),
    }
}

impl Runtime for Cri {
    fn describe(&self) -> String {
        format!("CRI at {}", self.endpoint)
    }

    fn watch(
        &self,
        tx: UnboundedSender<Event>,
        known: Containers,
        listed: Option<Listed>,
    ) -> JoinHandle<()> {
        let watcher = Watcher {
            client: self.client.clone(),
            endpoint: self.endpoint.clone(),
            tx,
            known,
            ignored: HashSet::new(),
            seen_exited: HashSet::new(),
            first_list_done: false,
            listed,
        };
        tokio::spawn(watcher.run())
    }
}

/// Why a session ended.
enum End {
    /// The receiver of the events is gone: stop watching.
    Closed,
    /// The runtime is unreachable or failed a request: reconnect.
    Lost(String),
}

impl From<tonic::Status> for End {
    fn from(s: tonic::Status) -> Self {
        End::Lost(format!("{:?}: {}", s.code(), s.message()))
    }
}

struct Watcher {
    client: RuntimeServiceClient<Channel>,
    endpoint: String,
    tx: UnboundedSender<Event>,
    known: Containers,
    /// Running containers that opted out, so that each is logged once.
    ignored: HashSet<String>,
    /// Exited containers already handled (sent, or there before the
    /// first list), while the runtime still lists them.
    seen_exited: HashSet<String>,
    first_list_done: bool,
    listed: Option<Listed>,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = Backoff::for_peers();
        let mut unreachable = RateLimited::new(UNREACHABLE_WARN_EVERY);
        let receiver = self.tx.clone();
        loop {
            let why = tokio::select! {
                end = self.session(&mut backoff) => match end {
                    End::Closed => return,
                    End::Lost(why) => why,
                },
                () = receiver.closed() => return,
            };
            unreachable.warn(|| format!("CRI runtime at {}: {why}; reconnecting", self.endpoint));
            tokio::select! {
                () = backoff.wait() => {}
                () = receiver.closed() => return,
            }
        }
    }

    /// One connection's worth of watching; see the module docs.
    async fn session(&mut self, backoff: &mut Backoff) -> End {
        let version = match self
            .request(|mut c| async move { c.version(version_request()).await })
            .await
        {
            Ok(v) => v,
            Err(end) => return end,
        };
        // Each event (or the end of the stream) wakes the loop.
        let (wake_tx, mut wake) = mpsc::channel::<()>(1);
        let mut events = self.client.clone();
        let with_events = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            events.get_container_events(GetEventsRequest {}),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let mut stream = stream.into_inner();
                tokio::spawn(async move {
                    while let Some(Ok(_)) = stream.next().await {
                        if wake_tx.try_send(()).is_err() && wake_tx.is_closed() {
                            return;
                        }
                    }
                    // Ended or failed: the next resync finds out why.
                    let _ = wake_tx.send(()).await;
                });
                true
            }
            // Unimplemented (containerd 1.6), or anything else: poll.
            _ => false,
        };
        let poll_every = if with_events {
            POLL_WITH_EVENTS_EVERY
        } else {
            POLL_EVERY
        };
        let mut logged = false;
        loop {
            if let Err(end) = self.resync().await {
                return end;
            }
            if !logged {
                logged = true;
                backoff.reset();
                if let Some(listed) = self.listed.take() {
                    listed();
                }
                tracing::info!(
                    "{} {} (CRI {}) at {}: watching containers ({}); {} running, {} opted out",
                    version.runtime_name,
                    version.runtime_version,
                    version.runtime_api_version,
                    self.endpoint,
                    if with_events {
                        "container events"
                    } else {
                        "polling: no container events"
                    },
                    self.known.len(),
                    self.ignored.len()
                );
            }
            tokio::select! {
                () = tokio::time::sleep(poll_every) => {}
                Some(()) = wake.recv() => {}
            }
        }
    }

    /// `call` with a fresh client handle, timed out.
    async fn request<T, F, Fut>(&self, call: F) -> Result<T, End>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(REQUEST_TIMEOUT, call(self.client.clone())).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(End::Lost(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        }
    }

    /// Lists pods and containers and sends what changed; see the module
    /// docs.
    async fn resync(&mut self) -> Result<(), End> {
        let sandboxes = self
            .request(|mut c| async move {
                c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                    .await
            })
            .await?
            .items;
        let pods: HashMap<String, Arc<Pod>> = sandboxes
            .into_iter()
            .map(|s| (s.id.clone(), Arc::new(pod_of(s))))
            .collect();
        let containers = self
            .request(|mut c| async move {
                c.list_containers(ListContainersRequest { filter: None })
                    .await
            })
            .await?
            .containers;

        let mut running = HashSet::new();
        let mut listed_exited = HashSet::new();
        for listed in containers {
            let state = listed.state();
            let id = listed.id.clone();
            let pod = pods.get(&listed.pod_sandbox_id).cloned();
            match state {
                ContainerState::ContainerRunning => {
                    running.insert(id.clone());
                    if self.known.get(&id).is_some() || self.ignored.contains(&id) {
                        continue;
                    }
                    let Some(c) = self.status(&id, pod).await? else {
                        continue;
                    };
                    // It may have exited between the list and the status.
                    if c.pid == 0 {
                        running.remove(&id);
                        listed_exited.insert(id.clone());
                        self.seen_exited.insert(id.clone());
                    }
                    self.found(c)?;
                }
                ContainerState::ContainerExited | ContainerState::ContainerUnknown => {
                    listed_exited.insert(id.clone());
                    if self.seen_exited.contains(&id) || self.known.get(&id).is_some() {
                        continue;
                    }
                    self.seen_exited.insert(id.clone());
                    // Before the first list: old history, not news.
                    if !self.first_list_done {
                        continue;
                    }
                    // Ran and exited between two lists: what it wrote is
                    // placed by its cgroup.
                    if let Some(mut c) = self.status(&id, pod).await? {
                        c.pid = 0;
                        if !c.is_ignored() {
                            let id = c.id.clone();
                            self.send(Event::Running(Arc::new(c)))?;
                            self.send(Event::Stopped { id })?;
                        }
                    }
                }
                ContainerState::ContainerCreated => {}
            }
        }
        self.first_list_done = true;
        self.seen_exited.retain(|id| listed_exited.contains(id));
        self.ignored.retain(|id| running.contains(id));
        for id in self.known.ids() {
            if !running.contains(&id) {
                self.known.remove(&id);
                self.send(Event::Stopped { id })?;
            }
        }
        Ok(())
    }

    /// Sends `Running` (or `OptedOut`) for `c`, which runs or just ran.
    fn found(&mut self, c: Container) -> Result<(), End> {
        if c.is_ignored() {
            if self.ignored.insert(c.id.clone()) {
                tracing::info!(
                    "not collecting container {} of pod {}: spillway.ignore=true",
                    c.name,
                    c.instance_id()
                );
            }
            return self.send(Event::OptedOut { id: c.id });
        }
        let c = Arc::new(c);
        if c.pid != 0 {
            self.known.insert(c.clone());
        }
        let (id, exited) = (c.id.clone(), c.pid == 0);
        self.send(Event::Running(c))?;
        if exited {
            self.send(Event::Stopped { id })?;
        }
        Ok(())
    }

    /// The container `id` with its pid (0 if it no longer runs); `None` if
    /// it is gone.
    async fn status(&self, id: &str, pod: Option<Arc<Pod>>) -> Result<Option<Container>, End> {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: true,
        };
        let answer = match self
            .request(|mut c| async move { c.container_status(request).await })
            .await
        {
            Ok(a) => a,
            // Removed between the list and the status.
            Err(End::Lost(why)) if why.starts_with("NotFound") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(status) = answer.status else {
            return Ok(None);
        };
        let info = answer
            .info
            .get("info")
            .map(|s| VerboseInfo::parse(s))
            .unwrap_or_default();
        Ok(Some(container_of(status, &info, pod)))
    }

    fn send(&self, event: Event) -> Result<(), End> {
        self.tx.send(event).map_err(|_| End::Closed)
    }
}

/// A pod sandbox's [`Pod`].
fn pod_of(s: v1::PodSandbox) -> Pod {
    let meta = s.metadata.unwrap_or_default();
    Pod {
        namespace: meta.namespace,
        name: meta.name,
        uid: meta.uid,
        labels: s.labels.into_iter().collect(),
        annotations: s.annotations.into_iter().collect(),
    }
}

/// What the runtime's verbose `info` (JSON) says: containerd and CRI-O
/// both give `pid`; the TTY is in the CRI config (containerd) or the OCI
/// spec (both).
#[derive(Debug, Default, PartialEq, Eq)]
struct VerboseInfo {
    pid: u32,
    tty: bool,
}

impl VerboseInfo {
    fn parse(json: &str) -> Self {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return Self::default();
        };
        let pid = v["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let tty = v["config"]["tty"].as_bool().unwrap_or(false)
            || v["runtimeSpec"]["process"]["terminal"]
                .as_bool()
                .unwrap_or(false);
        VerboseInfo { pid, tty }
    }
}

/// A [`Container`] from its CRI status, verbose info and pod.
fn container_of(
    status: v1::ContainerStatus,
    info: &VerboseInfo,
    pod: Option<Arc<Pod>>,
) -> Container {
    let running = status.state() == ContainerState::ContainerRunning;
    let meta = status.metadata.unwrap_or_default();
    let image = status
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .unwrap_or(status.image_ref);
    Container {
        id: status.id,
        name: meta.name,
        image,
        hostname: String::new(),
        labels: pod.as_ref().map(|p| p.labels.clone()).unwrap_or_default(),
        env: Vec::new(),
        pid: if running { info.pid } else { 0 },
        started_at: status.started_at.max(0),
        tty: info.tty,
        pod: Some(pod.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_info_of_containerd_and_cri_o() {
        let containerd = r#"{"sandboxID":"abc","pid":4242,"removing":false,
            "config":{"metadata":{"name":"app"},"tty":true},
            "runtimeSpec":{"process":{"terminal":true}}}"#;
        assert_eq!(
            VerboseInfo::parse(containerd),
            VerboseInfo {
                pid: 4242,
                tty: true
            }
        );
        let crio = r#"{"sandboxID":"abc","pid":77,"runtimeSpec":{"process":{"args":["sh"]}}}"#;
        assert_eq!(
            VerboseInfo::parse(crio),
            VerboseInfo {
                pid: 77,
                tty: false
            }
        );
        assert_eq!(VerboseInfo::parse("not json"), VerboseInfo::default());
        assert_eq!(VerboseInfo::parse(r#"{"pid":-1}"#), VerboseInfo::default());
    }

    #[test]
    fn a_cri_container_with_its_pod() {
        let sandbox = v1::PodSandbox {
            id: "s1".into(),
            metadata: Some(v1::PodSandboxMetadata {
                name: "web-7d4b9c8f6d-x2k9p".into(),
                uid: "uid-1".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            labels: [("pod-template-hash".to_owned(), "7d4b9c8f6d".to_owned())].into(),
            ..Default::default()
        };
        let pod = Arc::new(pod_of(sandbox));
        let mut status = v1::ContainerStatus {
            id: "c".repeat(64),
            metadata: Some(v1::ContainerMetadata {
                name: "nginx".into(),
                attempt: 1,
            }),
            state: ContainerState::ContainerRunning as i32,
            started_at: 1_500,
            image: Some(v1::ImageSpec {
                image: "docker.io/library/nginx:1".into(),
                ..Default::default()
            }),
            image_ref: "sha256:abc".into(),
            ..Default::default()
        };
        let info = VerboseInfo { pid: 9, tty: false };
        let c = container_of(status.clone(), &info, Some(pod.clone()));
        assert_eq!(
            (c.name.as_str(), c.image.as_str(), c.pid, c.started_at),
            ("nginx", "docker.io/library/nginx:1", 9, 1_500)
        );
        assert_eq!(c.source_id(), "web");
        assert_eq!(c.instance_id(), "web-7d4b9c8f6d-x2k9p");
        assert_eq!(c.labels, pod.labels);

        status.state = ContainerState::ContainerExited as i32;
        status.image = None;
        let c = container_of(status, &info, None);
        assert_eq!((c.pid, c.image.as_str()), (0, "sha256:abc"));
        assert!(
            c.pod.is_some(),
            "a pod (empty) even if its sandbox was not listed"
        );
    }
}
