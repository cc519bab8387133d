//! The collector's routes: those from `--route` flags and those added by
//! the routes API, which persist in the state directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use spillway_plumbing::metrics::{Labels, SelfMetrics};

use crate::hub::{Hub, Tap};
use crate::route::{self, Counters, Status};
use crate::spec::{RouteRequest, RouteSpec};

/// The file in `--state-dir` that holds the routes added by the API.
pub const STATE_FILE: &str = "routes.json";
/// Routes a collector holds unless told otherwise (`--max-routes`).
pub const DEFAULT_MAX_ROUTES: usize = 1000;
/// The largest `--max-routes`.
pub const MAX_MAX_ROUTES: usize = 100_000;

/// The metric families of routes, labelled `route`.
#[derive(Clone)]
pub struct RouteMetrics {
    sent: Family<Labels, Counter>,
    truncated: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    /// `/logs` clients connected now.
    pub logs_clients: Gauge,
}

impl RouteMetrics {
    /// Registers the families (before `metrics` is shared).
    pub fn register(metrics: &mut SelfMetrics) -> RouteMetrics {
        RouteMetrics {
            sent: metrics.counter_family("route_sent", "Messages a route wrote to its receiver"),
            truncated: metrics.counter_family(
                "route_truncated",
                "Messages a route cut to its datagram limit",
            ),
            refused: metrics.counter_family(
                "route_refused",
                "Messages a receiver refused (nothing listening on a UDP port)",
            ),
            dropped: metrics.dropped_family(),
            logs_clients: {
                let gauge = Gauge::default();
                metrics.registry_mut().register(
                    "logs_clients",
                    "Clients streaming /logs now",
                    gauge.clone(),
                );
                gauge
            },
        }
    }

    /// The counter under `dropped{direction="egress",<key>="<value>"}`.
    pub fn dropped(&self, key: &str, value: &str) -> Counter {
        self.dropped
            .get_or_create(&vec![
                ("direction".into(), "egress".into()),
                (key.into(), value.into()),
            ])
            .clone()
    }

    fn counters(&self, id: &str) -> Counters {
        let label = vec![("route".to_owned(), id.to_owned())];
        Counters {
            sent: self.sent.get_or_create(&label).clone(),
            truncated: self.truncated.get_or_create(&label).clone(),
            refused: self.refused.get_or_create(&label).clone(),
            dropped: self.dropped("route", id),
        }
    }
}

/// A route as the API shows it: ours, with logspout's field names for
/// its filters next to `filters` (left out when unset, as logspout does).
#[derive(Debug, Serialize)]
pub struct RouteView {
    #[serde(flatten)]
    pub spec: RouteSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_labels: Vec<String>,
    pub uri: String,
    /// Added by the API (kept across restarts), not by `--route`.
    pub persisted: bool,
    pub connected: bool,
    pub sent: u64,
    pub dropped: u64,
    pub truncated: u64,
    pub refused: u64,
}

/// Why a route could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    /// Bad input: the message names the problem.
    Invalid(String),
    /// A route with this id exists.
    Exists(String),
    /// The state directory could not be written.
    Store(String),
}

struct Running {
    spec: RouteSpec,
    persisted: bool,
    tap: Arc<Tap>,
    counters: Counters,
    status: Arc<Status>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn view(&self) -> RouteView {
        let f = &self.spec.filters;
        RouteView {
            filter_name: f.name.clone(),
            filter_id: f.id.clone(),
            filter_sources: f.sources.clone(),
            filter_labels: f.labels.clone(),
            spec: self.spec.clone(),
            uri: self.spec.uri(),
            persisted: self.persisted,
            connected: self.status.connected.load(Ordering::Relaxed),
            sent: self.counters.sent.get(),
            dropped: self.counters.dropped.get(),
            truncated: self.counters.truncated.get(),
            refused: self.counters.refused.get(),
        }
    }
}

pub struct Routes {
    hub: Arc<Hub>,
    metrics: RouteMetrics,
    state_file: Option<PathBuf>,
    max_routes: usize,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serialises the API's changes: save, then start or stop.
    changing: Mutex<()>,
}

impl Routes {
    /// Routes publishing from `hub`, at most `max_routes` of them (from
    /// flags, the API and the state file together); API routes persist in
    /// `state_dir` (created if missing) when one is given.
    pub fn new(
        hub: Arc<Hub>,
        metrics: RouteMetrics,
        state_dir: Option<&Path>,
        max_routes: usize,
    ) -> Result<Arc<Routes>, String> {
        let state_file = match state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create --state-dir {}: {e}", dir.display()))?;
                Some(dir.join(STATE_FILE))
            }
            None => None,
        };
        Ok(Arc::new(Routes {
            hub,
            metrics,
            state_file,
            max_routes,
            running: Mutex::new(BTreeMap::new()),
            changing: Mutex::new(()),
        }))
    }

    /// Starts the `--route` URIs (not persisted). Ids are derived from the
    /// URI, so they (and their metrics) stay the same across restarts.
    pub fn start_flags(&self, uris: &[String]) -> Result<(), String> {
        for uri in uris {
            let id = format!(
                "flag-{:08x}",
                spillway_plumbing::fnv::hash(uri.as_bytes(), spillway_plumbing::fnv::OFFSET) as u32
            );
            let spec = RouteSpec::from_uri(id, uri).map_err(|e| format!("--route: {e}"))?;
            self.start(spec, false)
                .map_err(|e| format!("--route {uri:?}: {}", describe(&e)))?;
        }
        Ok(())
    }

    /// Starts the routes saved in the state directory. A file that is not
    /// JSON list of routes is copied to `routes.json.bak` and the collector starts
    /// without it. A route that does
    /// not start (written by another version: an option out of range, an
    /// adapter not compiled in, an entry that is not a route) is logged and
    /// skipped, the others start; the file as it was is then copied to
    /// `routes.json.bak` before anything overwrites it.
    pub fn restore(&self) -> Result<usize, String> {
        let Some(file) = &self.state_file else {
            return Ok(0);
        };
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let entries: Vec<serde_json::Value> = match serde_json::from_str(&text) {
            Ok(entries) => entries,
            Err(e) => {
                // Refusing to start would stop ingress and every --route
                // too, on every restart: start without the saved routes,
                // keeping the file for whoever mends it.
                tracing::error!(
                    "{} is not a routes file: {e}; starting without the saved routes",
                    file.display()
                );
                self.back_up(file);
                return Ok(0);
            }
        };
        let (mut started, mut skipped) = (0, 0);
        for (n, entry) in entries.into_iter().enumerate() {
            let spec = match serde_json::from_value::<RouteSpec>(entry) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(
                        "saved route #{} in {} skipped: not a route: {e}",
                        n + 1,
                        file.display()
                    );
                    skipped += 1;
                    continue;
                }
            };
            let id = spec.id.clone();
            match self.start(spec, true) {
                Ok(()) => started += 1,
                Err(e) => {
                    tracing::error!(
                        "saved route {id} in {} skipped: {}",
                        file.display(),
                        describe(&e)
                    );
                    skipped += 1;
                }
            }
        }
        if skipped > 0 {
            self.back_up(file);
        }
        Ok(started)
    }

    /// Copies the state file to `routes.json.bak`, so that routes this
    /// version could not start are not lost when it saves.
    fn back_up(&self, file: &Path) {
        let backup = file.with_extension("json.bak");
        match std::fs::copy(file, &backup) {
            Ok(_) => tracing::warn!(
                "kept a copy of {} as it was in {}",
                file.display(),
                backup.display()
            ),
            Err(e) => tracing::error!(
                "cannot copy {} to {}: {e}",
                file.display(),
                backup.display()
            ),
        }
    }

    pub fn list(&self) -> Vec<RouteView> {
        self.lock().values().map(Running::view).collect()
    }

    pub fn get(&self, id: &str) -> Option<RouteView> {
        self.lock().get(id).map(Running::view)
    }

    /// Adds a route from the API: checks it, saves the routes with it, and
    /// only then starts it. If saving fails, nothing changed.
    pub fn add(&self, request: RouteRequest) -> Result<RouteView, AddError> {
        let spec = request.into_spec(random_id()).map_err(AddError::Invalid)?;
        let parts = route::build(&spec).map_err(AddError::Invalid)?;
        let id = spec.id.clone();
        let _changing = self.changing();
        self.check_room(&self.lock(), &id)?;
        let mut specs = self.persisted_specs();
        specs.push(spec.clone());
        self.save(&specs).map_err(AddError::Store)?;
        self.launch(spec, parts, true)?;
        Ok(self.get(&id).expect("just started"))
    }

    /// Stops and forgets a route, once the routes without it are saved.
    /// `Ok(false)` if there was none; if saving fails, nothing changed.
    pub fn remove(&self, id: &str) -> Result<bool, String> {
        let _changing = self.changing();
        let Some(persisted) = self.lock().get(id).map(|r| r.persisted) else {
            return Ok(false);
        };
        if persisted {
            let specs: Vec<RouteSpec> = self
                .persisted_specs()
                .into_iter()
                .filter(|s| s.id != id)
                .collect();
            self.save(&specs)?;
        }
        self.remove_running(id);
        Ok(true)
    }

    fn start(&self, spec: RouteSpec, persisted: bool) -> Result<(), AddError> {
        let parts = route::build(&spec).map_err(AddError::Invalid)?;
        self.launch(spec, parts, persisted)
    }

    /// Whether a route `id` may be added.
    fn check_room(&self, running: &BTreeMap<String, Running>, id: &str) -> Result<(), AddError> {
        if running.contains_key(id) {
            return Err(AddError::Exists(id.to_owned()));
        }
        if running.len() >= self.max_routes {
            return Err(AddError::Invalid(format!(
                "the collector holds --max-routes {} routes already: delete one, or raise --max-routes",
                self.max_routes
            )));
        }
        Ok(())
    }

    /// Starts a built route.
    fn launch(
        &self,
        spec: RouteSpec,
        parts: route::Parts,
        persisted: bool,
    ) -> Result<(), AddError> {
        let mut running = self.lock();
        self.check_room(&running, &spec.id)?;
        let counters = self.metrics.counters(&spec.id);
        let tap = Tap::new(
            parts.matcher.clone(),
            parts.include_metrics,
            parts.buffer,
            counters.dropped.clone(),
        );
        let status = Arc::new(Status::default());
        let task = tokio::spawn(route::run(
            spec.id.clone(),
            spec.address.clone(),
            parts,
            tap.clone(),
            counters.clone(),
            status.clone(),
        ));
        self.hub.attach(tap.clone());
        tracing::info!("route {} started: {}", spec.id, spec.uri());
        running.insert(
            spec.id.clone(),
            Running {
                spec,
                persisted,
                tap,
                counters,
                status,
                task,
            },
        );
        Ok(())
    }

    fn remove_running(&self, id: &str) -> Option<Running> {
        let r = self.lock().remove(id)?;
        self.hub.detach(&r.tap);
        r.task.abort();
        tracing::info!("route {id} stopped");
        Some(r)
    }

    /// The routes the state file holds (those added by the API).
    fn persisted_specs(&self) -> Vec<RouteSpec> {
        self.lock()
            .values()
            .filter(|r| r.persisted)
            .map(|r| r.spec.clone())
            .collect()
    }

    /// Writes `specs` to the state file: to a temporary file, synced, then
    /// renamed over it, so that a crash leaves the old or the new list. A
    /// failure (read-only directory, full disk) removes the temporary file.
    fn save(&self, specs: &[RouteSpec]) -> Result<(), String> {
        let Some(file) = &self.state_file else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(specs).expect("routes serialise") + "\n";
        let tmp = file.with_extension("json.tmp");
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot save routes to {}: {e}", file.display()));
        }
        if let Some(dir) = file.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            // The rename itself on disk; a failure here loses nothing yet.
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Held while the table and its file change together (API calls).
    fn changing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        for r in self.lock().values() {
            r.task.abort();
        }
    }
}

fn describe(e: &AddError) -> String {
    match e {
        AddError::Invalid(m) | AddError::Store(m) => m.clone(),
        AddError::Exists(id) => format!("a route with id {id:?} exists"),
    }
}

/// A 12-hex-digit id, like logspout's.
fn random_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}
