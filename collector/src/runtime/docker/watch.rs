//! [`watch`]: Docker's containers as a stream of [`Event`]s.
//!
//! Work is done in *sessions*, one per connection to dockerd:
//!
//! 1. negotiate the API version and read the daemon's clock (`/info`);
//! 2. subscribe to container events (`start`, `die`, `destroy`, `rename`)
//!    *since that time*, in a task that queues them: dockerd replays the
//!    events it buffered since then, so nothing that happens between the
//!    subscription and the list is missed, even before the subscription
//!    is in place;
//! 3. list and inspect the running containers: `Stopped` for known ones
//!    that are gone (they stopped while Docker was unreachable), `Running`
//!    for every one that runs;
//! 4. apply the queued events in order, inspecting on `start`/`rename`.
//!
//! When the event stream ends or fails (dockerd restarted) or a request
//! fails, the session ends; the next starts after a backoff. Replayed
//! events and the list may repeat what was already sent: a `Running` for
//! a known id is an update, a `Stopped` for an unknown one is nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures::StreamExt;
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::logging::{RateLimited, error_chain};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

use super::time::{docker_since, parse_rfc3339};
use super::{Containers, Event, container_from_inspect};
use crate::container::Container;
use crate::runtime::Listed;
use spillway_proto::now_nanos;

/// The container events that change what runs.
const ACTIONS: [&str; 4] = ["start", "die", "destroy", "rename"];

/// Containers inspected at once while (re)listing.
const INSPECT_CONCURRENCY: usize = 8;

/// How often "Docker unreachable" may be logged.
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(30);

/// Watches Docker's containers and sends an [`Event`] for each change to
/// `tx`, reconnecting forever; ends when `tx`'s receiver is dropped.
pub fn watch(docker: Docker, tx: UnboundedSender<Event>) -> JoinHandle<()> {
    watch_into(docker, tx, Containers::default())
}

/// [`watch`], also keeping `known` up to date: it holds exactly the
/// containers sent as `Running` and not `Stopped` since (updated before
/// the event is sent).
pub fn watch_into(docker: Docker, tx: UnboundedSender<Event>, known: Containers) -> JoinHandle<()> {
    watch_with(docker, tx, known, None)
}

/// [`watch_into`], calling `listed` once, when the running containers have
/// been listed and sent for the first time (capture is ready then).
pub fn watch_with(
    docker: Docker,
    tx: UnboundedSender<Event>,
    known: Containers,
    listed: Option<Listed>,
) -> JoinHandle<()> {
    let mut watcher = Watcher::new(docker, tx, known);
    watcher.listed = listed;
    tokio::spawn(watcher.run())
}

/// Why a session ended.
enum End {
    /// The receiver of the events is gone: stop watching.
    Closed,
    /// Docker is unreachable, or the event stream broke: reconnect.
    Lost(String),
}

impl From<bollard::errors::Error> for End {
    fn from(e: bollard::errors::Error) -> Self {
        End::Lost(error_chain(&e))
    }
}

type Queued = Result<EventMessage, String>;

struct Watcher {
    docker: Docker,
    tx: UnboundedSender<Event>,
    known: Containers,
    /// Running containers that opted out, so that each is logged once.
    ignored: HashSet<String>,
    /// Called after the first list.
    listed: Option<Listed>,
}

impl Watcher {
    fn new(docker: Docker, tx: UnboundedSender<Event>, known: Containers) -> Self {
        Watcher {
            docker,
            tx,
            known,
            ignored: HashSet::new(),
            listed: None,
        }
    }

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
            unreachable.warn(|| format!("Docker: {why}; reconnecting"));
            tokio::select! {
                () = backoff.wait() => {}
                () = receiver.closed() => return,
            }
        }
    }

    /// One connection's worth of watching; see the module docs.
    async fn session(&mut self, backoff: &mut Backoff) -> End {
        let (since, version) = match self.handshake().await {
            Ok(v) => v,
            Err(end) => return end,
        };
        let (queue_tx, mut queue) = mpsc::unbounded_channel();
        let subscription = tokio::spawn(subscribe(self.docker.clone(), since, queue_tx));
        let _abort = AbortOnDropHandle::new(subscription);
        if let Err(end) = self.resync().await {
            return end;
        }
        backoff.reset();
        if let Some(listed) = self.listed.take() {
            listed();
        }
        tracing::info!(
            "Docker {version}: watching containers; {} running, {} opted out",
            self.known.len(),
            self.ignored.len()
        );
        while let Some(queued) = queue.recv().await {
            let applied = match queued {
                Ok(event) => self.apply(event).await,
                Err(e) => Err(End::Lost(format!("event stream: {e}"))),
            };
            if let Err(end) = applied {
                return end;
            }
        }
        End::Lost("dockerd closed the event stream".into())
    }

    /// Negotiates the API version; returns the daemon's clock (ns since
    /// the epoch) and its version, for the log.
    async fn handshake(&self) -> Result<(i64, String), End> {
        let version = self.docker.version().await?;
        self.docker.clone().negotiate_version().await?;
        let info = self.docker.info().await?;
        let clock = info
            .system_time
            .and_then(|t| parse_rfc3339(t.as_bytes()))
            .unwrap_or_else(now_nanos);
        let version = format!(
            "{} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        );
        Ok((clock, version))
    }

    /// Sends the state after a (re)connect; see the module docs.
    async fn resync(&mut self) -> Result<(), End> {
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions::default()))
            .await?;
        let inspected: Vec<_> = futures::stream::iter(listed.into_iter().filter_map(|s| s.id))
            .map(|id| {
                let docker = self.docker.clone();
                async move { inspect(&docker, &id).await }
            })
            .buffered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        let mut running = Vec::new();
        let mut opted_out = HashSet::new();
        for c in inspected {
            let Some(c) = c? else { continue };
            if c.is_ignored() {
                self.note_ignored(&c);
                self.send(Event::OptedOut { id: c.id.clone() })?;
                opted_out.insert(c.id);
            } else {
                running.push(Arc::new(c));
            }
        }
        self.ignored.retain(|id| opted_out.contains(id));

        let running_ids: HashSet<&str> = running.iter().map(|c| c.id.as_str()).collect();
        for id in self.known.ids() {
            if !running_ids.contains(id.as_str()) {
                self.known.remove(&id);
                self.send(Event::Stopped { id })?;
            }
        }
        for c in running {
            self.known.insert(c.clone());
            self.send(Event::Running(c))?;
        }
        Ok(())
    }

    async fn apply(&mut self, event: EventMessage) -> Result<(), End> {
        let Some(actor) = event.actor else {
            return Ok(());
        };
        let Some(id) = actor.id else {
            return Ok(());
        };
        match event.action.as_deref().unwrap_or_default() {
            // A container that already exited still ran: sources reading
            // the Docker API can still get its output, and the eBPF source
            // has what it wrote. One removed already (`--rm`) is described
            // by the event itself.
            "start" => {
                let attributes = actor.attributes.unwrap_or_default();
                self.started(&id, Some(&attributes)).await
            }
            "rename" => self.started(&id, None).await,
            "die" => self.stopped(id, false),
            "destroy" => self.stopped(id, true),
            _ => Ok(()),
        }
    }

    /// Inspects `id` and sends `Running` (unless it opted out, or exited
    /// and `start` is `None`). `start` holds the attributes of a start
    /// event, which describe a container that is gone before it could be
    /// inspected.
    async fn started(
        &mut self,
        id: &str,
        start: Option<&HashMap<String, String>>,
    ) -> Result<(), End> {
        let even_if_exited = start.is_some();
        let c = match (inspect(&self.docker, id).await?, start) {
            (Some(c), _) => c,
            (None, Some(attributes)) => container_from_event(id, attributes),
            // Removed already, and not a start: its die and destroy
            // events follow.
            (None, None) => return Ok(()),
        };
        if c.is_ignored() {
            self.note_ignored(&c);
            return self.send(Event::OptedOut { id: c.id });
        }
        if c.pid == 0 && !even_if_exited {
            return Ok(());
        }
        let c = Arc::new(c);
        self.known.insert(c.clone());
        self.send(Event::Running(c))
    }

    fn stopped(&mut self, id: String, destroyed: bool) -> Result<(), End> {
        if self.ignored.contains(&id) {
            if destroyed {
                self.ignored.remove(&id);
            }
            return Ok(());
        }
        self.known.remove(&id);
        self.send(Event::Stopped { id })
    }

    fn note_ignored(&mut self, c: &Container) {
        if self.ignored.insert(c.id.clone()) {
            tracing::info!(
                "not collecting container {} ({}): {}",
                c.name,
                c.instance_id(),
                why_ignored(c)
            );
        }
    }

    fn send(&self, event: Event) -> Result<(), End> {
        self.tx.send(event).map_err(|_| End::Closed)
    }
}

/// Subscribes to container events since `since` (daemon clock) and
/// queues them; a failure is queued as the last item.
async fn subscribe(docker: Docker, since: i64, queue: UnboundedSender<Queued>) {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), ACTIONS.map(str::to_owned).to_vec()),
    ]);
    let options = EventsOptions {
        since: Some(docker_since(since)),
        until: None,
        filters: Some(filters),
    };
    let mut events = docker.events(Some(options));
    while let Some(event) = events.next().await {
        let failed = event.is_err();
        if queue.send(event.map_err(|e| error_chain(&e))).is_err() || failed {
            return;
        }
    }
}

/// What a start event says of a container that is already gone: its
/// attributes are its labels plus `name` and `image` (a label of the same
/// name loses to them, as in Docker's own events).
fn container_from_event(id: &str, attributes: &HashMap<String, String>) -> Container {
    let mut labels: std::collections::BTreeMap<String, String> = attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let name = labels.remove("name").unwrap_or_default();
    let image = labels.remove("image").unwrap_or_default();
    Container {
        id: id.to_owned(),
        name,
        image,
        labels,
        ..Container::default()
    }
}

/// The container `id`; `None` if it no longer exists.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, End> {
    match docker.inspect_container(id, None).await {
        Ok(r) => Ok(container_from_inspect(r)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(End::Lost(format!(
            "inspecting container {id}: {}",
            error_chain(&e)
        ))),
    }
}

fn why_ignored(c: &Container) -> String {
    c.env
        .iter()
        .find(|kv| *kv == "LOGSPOUT=ignore" || *kv == "SPILLWAY=ignore")
        .map_or_else(
            || "label spillway.ignore=true".to_owned(),
            |kv| format!("environment {kv}"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_daemon_it_retries_until_the_receiver_is_gone() {
        let docker = super::super::connect("unix:///nonexistent/docker.sock").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watcher = watch(docker, tx);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "nothing to report");
        assert!(!watcher.is_finished(), "still retrying");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), watcher)
            .await
            .expect("ends once nobody listens")
            .unwrap();
    }

    #[test]
    fn the_reason_for_ignoring_is_named() {
        let mut c = Container {
            env: vec!["A=b".into(), "LOGSPOUT=ignore".into()],
            ..Default::default()
        };
        assert_eq!(why_ignored(&c), "environment LOGSPOUT=ignore");
        c.env.clear();
        assert_eq!(why_ignored(&c), "label spillway.ignore=true");
    }

    #[test]
    fn a_gone_container_is_described_by_its_start_event() {
        let attributes = HashMap::from([
            ("name".to_owned(), "job-7".to_owned()),
            ("image".to_owned(), "busybox".to_owned()),
            ("spillway.source_id".to_owned(), "batch".to_owned()),
        ]);
        let c = container_from_event(&"a".repeat(64), &attributes);
        assert_eq!((c.name.as_str(), c.image.as_str()), ("job-7", "busybox"));
        assert_eq!(c.source_id(), "batch");
        assert_eq!(c.labels.len(), 1);
        assert_eq!(c.pid, 0);
    }
}
