//! The eBPF container source: from kernel records to envelopes.
//!
//! [`kernel`] delivers the bytes containers write to their stdout and
//! stderr, as records tagged with the written file's inode. This module
//! decides which inodes to watch and turns records into lines:
//!
//! - **Registration.** For every running container (from the Docker
//!   watcher), the inodes of `/proc/<pid>/fd/1` and `/2` are registered in
//!   the kernel under a *cookie* naming the container and stream. A TTY
//!   container has one inode (its pty), registered once as stdout. A
//!   stopped container's inodes are unregistered after a grace period, so
//!   its last writes still drain from the rings.
//! - **Lines.** Each core loop owns the streams whose records land in its
//!   ring (the kernel picks the ring from the inode, so a stream never
//!   splits between loops), with a line [`Assembler`] each, and parks the
//!   envelopes in the diode of its own core.
//! - **Unclaimed writes.** A container writes before the collector could
//!   register it (Docker tells of a start only after the process runs). The
//!   kernel sends such writes with cookie 0 (fd 1 or 2 of a process in a
//!   child pid namespace, to a pipe or tty); the loop keeps them for a few
//!   seconds per inode. When the inode is registered, they are replayed
//!   first, in order; if it never is (a pipe inside a container, say), they
//!   are discarded and the kernel is told to ignore that inode.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use spillway_collector_common::MAX_CAPTURE;
use spillway_plumbing::metrics::Labels;
use tokio::sync::mpsc;

use crate::container::{Container, EnvelopeTemplate, Stream};
use crate::docker::Event;
pub mod kernel;
mod rings;

use kernel::{Capture, Handler, InodeKey, KernelDrops, Record, inode_of};
use crate::lines::{Assembler, PARTIAL_LINE_TIMEOUT};
use crate::output::Output;

/// How long a stopped container's streams stay registered.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long unclaimed writes wait for their inode to be registered.
const UNCLAIMED_TTL: Duration = Duration::from_secs(5);
/// Most unclaimed bytes one loop keeps (oldest inodes are dropped first).
const UNCLAIMED_MAX_BYTES: usize = 8 << 20;

/// Starts the source: registration follows `events`; one loop per core.
pub fn start(
    capture: Capture,
    events: mpsc::UnboundedReceiver<Event>,
    output: Output,
    drops: Family<Labels, Counter>,
) -> Result<(), String> {
    let capture = Arc::new(capture);
    tokio::spawn(export_kernel_drops(capture.clone(), drops));
    let registry = Arc::new(Registry::default());
    {
        let (registry, capture, output) = (registry.clone(), capture.clone(), output.clone());
        capture
            .clone()
            .spawn_loops(move |core| LoopHandler {
                core,
                registry: registry.clone(),
                capture: capture.clone(),
                output: output.clone(),
                generation: 0,
                streams: HashMap::new(),
                unclaimed: HashMap::new(),
                unclaimed_bytes: 0,
            })
            .map_err(|e| format!("starting the capture loops: {e}"))?;
    }
    tokio::spawn(follow_containers(capture, registry, events, output));
    Ok(())
}

/// Copies the kernel's drop counts to `spillway_capture_dropped_total`.
async fn export_kernel_drops(capture: Arc<Capture>, family: Family<Labels, Counter>) {
    let mut shown = KernelDrops::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = capture.kernel_drops();
        for (reason, was, is) in [
            ("ring_full", shown.ring_full, now.ring_full),
            ("read_fault", shown.read_fault, now.read_fault),
            ("pending_full", shown.pending_full, now.pending_full),
            ("truncated", shown.truncated, now.truncated),
            ("no_ring", shown.no_ring, now.no_ring),
        ] {
            family
                .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                .inc_by(is.saturating_sub(was));
        }
        shown = now;
    }
}

/// What a cookie stands for.
struct StreamInfo {
    stream: Stream,
    template: EnvelopeTemplate,
}

/// Registered streams, shared by the registration task and the loops.
#[derive(Default)]
struct Registry {
    by_cookie: RwLock<HashMap<u32, Arc<StreamInfo>>>,
    by_key: RwLock<HashMap<InodeKey, u32>>,
    /// Bumped on every change, so loops refresh their copies lazily.
    generation: AtomicU64,
    next_cookie: AtomicU32,
    /// Ids of the containers whose streams are registered.
    containers: RwLock<HashSet<String>>,
}

impl Registry {
    fn cookie_of(&self, key: &InodeKey) -> Option<u32> {
        self.by_key.read().unwrap().get(key).copied()
    }

    fn info(&self, cookie: u32) -> Option<Arc<StreamInfo>> {
        self.by_cookie.read().unwrap().get(&cookie).cloned()
    }

    fn has_container(&self, id: &str) -> bool {
        self.containers.read().unwrap().contains(id)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A running container's registration.
struct Watched {
    pid: u32,
    keys: Vec<(InodeKey, u32)>,
}

/// Keeps the kernel's inode map in step with Docker's running containers.
async fn follow_containers(
    capture: Arc<Capture>,
    registry: Arc<Registry>,
    mut events: mpsc::UnboundedReceiver<Event>,
    output: Output,
) {
    let mut watched: HashMap<String, Watched> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Running(c) => {
                if let Some(w) = watched.get(&c.id)
                    && w.pid == c.pid
                {
                    // Same process, new metadata (a rename): new templates.
                    let template = output.template(&c);
                    let mut by_cookie = registry.by_cookie.write().unwrap();
                    for (_, cookie) in &w.keys {
                        if let Some(info) = by_cookie.get_mut(cookie) {
                            *info = Arc::new(StreamInfo {
                                stream: info.stream,
                                template: template.clone(),
                            });
                        }
                    }
                    drop(by_cookie);
                    registry.changed();
                    continue;
                }
                // While a container is in `containers`, unclaimed writes from
                // it are taken for pipes inside it: not while its new
                // process's inodes are being registered.
                registry.containers.write().unwrap().remove(&c.id);
                if let Some(old) = watched.remove(&c.id) {
                    unregister(&capture, &registry, &old.keys);
                }
                if c.pid == 0 {
                    // Exited before Docker could tell its pid: what it wrote
                    // was kept as unclaimed, and is dropped with them.
                    tracing::debug!("container {} exited before it could be registered", c.name);
                    continue;
                }
                match register(&capture, &registry, &c, &output) {
                    Ok(keys) => {
                        registry.containers.write().unwrap().insert(c.id.clone());
                        registry.changed();
                        tracing::info!("capturing container {} ({}) by eBPF", c.name, &c.id[..12]);
                        watched.insert(c.id.clone(), Watched { pid: c.pid, keys });
                    }
                    Err(e) => {
                        tracing::warn!("cannot capture container {} ({}): {e}", c.name, &c.id[..12])
                    }
                }
            }
            Event::Stopped { id } => {
                // At once: a restart's first writes (unclaimed, from new
                // inodes) must wait for registration, not be ignored.
                registry.containers.write().unwrap().remove(&id);
                if let Some(w) = watched.remove(&id) {
                    let (capture, registry) = (capture.clone(), registry.clone());
                    tokio::spawn(async move {
                        // The last writes still drain from the rings.
                        tokio::time::sleep(STOP_GRACE).await;
                        unregister(&capture, &registry, &w.keys);
                    });
                }
            }
        }
    }
}

/// Registers the stdout and stderr inodes of `c`'s init process.
fn register(
    capture: &Capture,
    registry: &Registry,
    c: &Container,
    output: &Output,
) -> Result<Vec<(InodeKey, u32)>, String> {
    debug_assert!(c.pid != 0);
    let fd = |n: u32| {
        let path = format!("/proc/{}/fd/{n}", c.pid);
        inode_of(std::path::Path::new(&path)).map_err(|e| format!("{path}: {e}"))
    };
    let (out, err) = (fd(1)?, fd(2)?);
    let mut streams = vec![(out, Stream::Stdout)];
    if err != out {
        // A TTY container has one pty for both: all of it is stdout.
        streams.push((err, Stream::Stderr));
    }
    let template = output.template(c);
    let mut keys = Vec::new();
    for (key, stream) in streams {
        let cookie = registry.next_cookie.fetch_add(1, Ordering::Relaxed) + 1;
        registry.by_cookie.write().unwrap().insert(
            cookie,
            Arc::new(StreamInfo {
                stream,
                template: template.clone(),
            }),
        );
        registry.by_key.write().unwrap().insert(key, cookie);
        registry.changed();
        if let Err(e) = capture.register(key, cookie) {
            unregister(capture, registry, &keys);
            return Err(format!("registering {stream:?} in the kernel: {e}"));
        }
        keys.push((key, cookie));
    }
    Ok(keys)
}

fn unregister(capture: &Capture, registry: &Registry, keys: &[(InodeKey, u32)]) {
    for (key, cookie) in keys {
        capture.unregister(*key);
        // A process of the container that lives on would have its writes
        // come back as unclaimed: nobody would claim them.
        capture.ignore(*key);
        let mut by_key = registry.by_key.write().unwrap();
        if by_key.get(key) == Some(cookie) {
            by_key.remove(key);
        }
        drop(by_key);
        registry.by_cookie.write().unwrap().remove(cookie);
    }
    registry.changed();
}

/// One stream's state on its loop.
struct StreamState {
    info: Arc<StreamInfo>,
    lines: Assembler,
}

/// Writes seen before their inode was registered.
struct Unclaimed {
    /// The writer's container, from its cgroup, if it could be read.
    container: Option<String>,
    first_seen: Instant,
    bytes: usize,
    writes: Vec<(i64, Vec<u8>, bool)>,
}

/// The per-core loop's handler: records in, envelopes out (into the diode
/// of this core).
struct LoopHandler {
    core: usize,
    registry: Arc<Registry>,
    capture: Arc<Capture>,
    output: Output,
    generation: u64,
    streams: HashMap<u32, StreamState>,
    unclaimed: HashMap<InodeKey, Unclaimed>,
    unclaimed_bytes: usize,
}

impl LoopHandler {
    /// Feeds one write into its stream's lines.
    fn write(&mut self, cookie: u32, data: &[u8], timestamp: i64, truncated: bool, now: Instant) {
        let state = match self.streams.entry(cookie) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match self.registry.info(cookie) {
                Some(info) => v.insert(StreamState {
                    info,
                    lines: Assembler::new(),
                }),
                // Unregistered meanwhile: its container is gone.
                None => return,
            },
        };
        let (output, core, info) = (&self.output, self.core, &state.info);
        let send = |line| output.line(core, &info.template, info.stream, line);
        state.lines.push(data, timestamp, now, send);
        if truncated {
            // The rest of this write was not captured: end the line here
            // rather than glue the next write onto it.
            state
                .lines
                .flush(|line| output.line(core, &info.template, info.stream, line));
        }
    }

    /// Replays the unclaimed writes of `key`, now known as `cookie`.
    fn claim(&mut self, key: &InodeKey, cookie: u32, now: Instant) {
        if let Some(u) = self.unclaimed.remove(key) {
            self.unclaimed_bytes -= u.bytes;
            for (timestamp, data, truncated) in u.writes {
                self.write(cookie, &data, timestamp, truncated, now);
            }
        }
    }

    fn claimed(&mut self, r: &Record<'_>, cookie: u32, truncated: bool, now: Instant) {
        self.claim(&r.key, cookie, now);
        self.write(cookie, r.data, r.timestamp, truncated, now);
    }

    fn keep_unclaimed(&mut self, r: &Record<'_>, truncated: bool, now: Instant) {
        if !self.unclaimed.contains_key(&r.key) {
            let container = container_of_process(r.tgid);
            // A registered container has all its keys registered, so look
            // the key up again: it may have been registered just now.
            if container
                .as_deref()
                .is_some_and(|id| self.registry.has_container(id))
                && self.registry.cookie_of(&r.key).is_none()
            {
                // Its container is registered, and this is not one of its
                // stdio inodes: a pipe or /dev/null inside it.
                self.capture.ignore(r.key);
                return;
            }
            if let Some(cookie) = self.registry.cookie_of(&r.key) {
                return self.claimed(r, cookie, truncated, now);
            }
            self.unclaimed.insert(
                r.key,
                Unclaimed {
                    container,
                    first_seen: now,
                    bytes: 0,
                    writes: Vec::new(),
                },
            );
        }
        let u = self.unclaimed.get_mut(&r.key).unwrap();
        u.bytes += r.data.len();
        u.writes.push((r.timestamp, r.data.to_vec(), truncated));
        self.unclaimed_bytes += r.data.len();
        while self.unclaimed_bytes > UNCLAIMED_MAX_BYTES {
            let Some(oldest) = self
                .unclaimed
                .iter()
                .min_by_key(|(_, u)| u.first_seen)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.forget(&oldest);
        }
    }

    /// Gives up on an unclaimed inode: not a container's stdio.
    fn forget(&mut self, key: &InodeKey) {
        if let Some(u) = self.unclaimed.remove(key) {
            self.unclaimed_bytes -= u.bytes;
            self.capture.ignore(*key);
        }
    }
}

impl Handler for LoopHandler {
    fn record(&mut self, r: &Record<'_>) {
        let now = Instant::now();
        let truncated =
            r.total as usize > MAX_CAPTURE && (r.offset + r.len) as usize >= MAX_CAPTURE;
        let cookie = match r.cookie {
            0 => self.registry.cookie_of(&r.key),
            c => Some(c),
        };
        match cookie {
            Some(cookie) => self.claimed(r, cookie, truncated, now),
            None => self.keep_unclaimed(r, truncated, now),
        }
    }

    fn tick(&mut self, now: Instant) {
        for state in self.streams.values_mut() {
            let (output, core, info) = (&self.output, self.core, &state.info);
            state
                .lines
                .flush_if_older(PARTIAL_LINE_TIMEOUT, now, |line| {
                    output.line(core, &info.template, info.stream, line)
                });
        }
        let generation = self.registry.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            self.refresh(now);
        }
        let expired: Vec<InodeKey> = self
            .unclaimed
            .iter()
            .filter(|(_, u)| now.duration_since(u.first_seen) > UNCLAIMED_TTL)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.forget(&key);
        }
    }
}

impl LoopHandler {
    /// Follows registry changes: renamed containers, gone streams, and
    /// unclaimed inodes that are registered now.
    fn refresh(&mut self, now: Instant) {
        let cookies: Vec<u32> = self.streams.keys().copied().collect();
        for cookie in cookies {
            match self.registry.info(cookie) {
                Some(info) => self.streams.get_mut(&cookie).unwrap().info = info,
                None => {
                    let mut state = self.streams.remove(&cookie).unwrap();
                    let (output, core, info) = (&self.output, self.core, &state.info);
                    state
                        .lines
                        .flush(|line| output.line(core, &info.template, info.stream, line));
                }
            }
        }
        let keys: Vec<InodeKey> = self.unclaimed.keys().copied().collect();
        for key in keys {
            if let Some(cookie) = self.registry.cookie_of(&key) {
                self.claim(&key, cookie, now);
            } else if self.unclaimed[&key]
                .container
                .as_deref()
                .is_some_and(|id| self.registry.has_container(id))
            {
                self.forget(&key);
            }
        }
    }
}

/// The Docker container a process runs in, from its cgroup paths: the
/// cgroupfs driver has `/docker/<id>`, the systemd driver
/// `docker-<id>.scope`.
fn container_of_process(pid: u32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    container_in_cgroups(&cgroups)
}

fn container_in_cgroups(cgroups: &str) -> Option<String> {
    cgroups
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .map(|part| {
            part.strip_prefix("docker-")
                .and_then(|p| p.strip_suffix(".scope"))
                .unwrap_or(part)
        })
        .find(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "0123456789abcdef".repeat(4);
        let v1 = format!("12:pids:/docker/{id}\n11:memory:/docker/{id}\n0::/\n");
        assert_eq!(container_in_cgroups(&v1), Some(id.clone()));
        let systemd = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(container_in_cgroups(&systemd), Some(id));
        assert_eq!(
            container_in_cgroups("0::/user.slice/session-1.scope\n"),
            None
        );
    }
}
