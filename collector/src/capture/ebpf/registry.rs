//! Which streams the kernel captures, and what each cookie stands for.
//!
//! For every running container (from the Docker watcher), the inodes of
//! `/proc/<pid>/fd/1` and `/2` are registered in the kernel under a
//! *cookie* naming the container and stream. A TTY container has one inode
//! (its pty), registered once as stdout. A stopped container's inodes are
//! unregistered after a grace period, so its last writes still drain from
//! the rings.
//!
//! A container that is gone before it could be registered (it lived for
//! milliseconds, or Docker told of it only after it exited) still gets
//! cookies, one per stream, but no inodes: the loops place its unclaimed
//! writes by the cgroup they came from (see [`super::streams`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::kernel::{Capture, InodeKey, inode_of};
use crate::container::{Container, EnvelopeTemplate, Stream};
use crate::output::Output;
use crate::runtime::docker::Event;

/// How long a stopped container's streams stay registered.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long the streams of a container that exited before it could be
/// registered wait for its writes still in the rings.
pub const EXITED_GRACE: Duration = Duration::from_secs(5);

/// What a cookie stands for.
pub struct StreamInfo {
    pub stream: Stream,
    pub template: EnvelopeTemplate,
}

/// Registered streams, shared by the registration task and the loops.
#[derive(Default)]
pub struct Registry {
    by_cookie: RwLock<HashMap<u32, Arc<StreamInfo>>>,
    by_key: RwLock<HashMap<InodeKey, u32>>,
    /// Bumped on every change, so loops refresh their copies lazily.
    generation: AtomicU64,
    next_cookie: AtomicU32,
    /// Containers whose streams are registered by inode.
    containers: RwLock<HashSet<String>>,
    /// Containers gone before they could be registered → their
    /// (stdout, stderr) cookies.
    exited: RwLock<HashMap<String, (u32, u32)>>,
    /// Containers that opted out of collection.
    opted_out: RwLock<HashSet<String>>,
}

/// Where the unclaimed writes of a container go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Registered by inode: a write to another inode is not its stdio.
    Registered,
    /// Gone before it could be registered: fd 1 is stdout, fd 2 stderr.
    Exited { stdout: u32, stderr: u32 },
    /// Opted out: its writes are not collected.
    OptedOut,
    /// Not known yet.
    Unknown,
}

impl Registry {
    pub fn cookie_of(&self, key: &InodeKey) -> Option<u32> {
        self.by_key.read().unwrap().get(key).copied()
    }

    pub fn info(&self, cookie: u32) -> Option<Arc<StreamInfo>> {
        self.by_cookie.read().unwrap().get(&cookie).cloned()
    }

    pub fn placement(&self, container: &str) -> Placement {
        if self.containers.read().unwrap().contains(container) {
            Placement::Registered
        } else if let Some(&(stdout, stderr)) = self.exited.read().unwrap().get(container) {
            Placement::Exited { stdout, stderr }
        } else if self.opted_out.read().unwrap().contains(container) {
            Placement::OptedOut
        } else {
            Placement::Unknown
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn add_stream(&self, stream: Stream, template: &EnvelopeTemplate) -> u32 {
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed) + 1;
        self.by_cookie.write().unwrap().insert(
            cookie,
            Arc::new(StreamInfo {
                stream,
                template: template.clone(),
            }),
        );
        cookie
    }
}

/// A running container's registration.
struct Watched {
    pid: u32,
    keys: Vec<(InodeKey, u32)>,
    /// Its process is in the host's pid namespace (`--pid host`).
    host_pid: bool,
}

/// Keeps the kernel's inode map in step with Docker's running containers.
pub async fn follow_containers(
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
                    set_host_streams(&capture, &watched);
                }
                let registered = if c.pid == 0 {
                    Err(NotRegistered::Gone(
                        "it exited before Docker could tell its pid".to_owned(),
                    ))
                } else {
                    register(&capture, &registry, &c, &output)
                };
                match registered {
                    Ok(keys) => {
                        registry.containers.write().unwrap().insert(c.id.clone());
                        registry.changed();
                        tracing::info!("capturing container {} ({}) by eBPF", c.name, &c.id[..12]);
                        let host_pid = in_host_pid_namespace(c.pid);
                        watched.insert(
                            c.id.clone(),
                            Watched {
                                pid: c.pid,
                                keys,
                                host_pid,
                            },
                        );
                        if host_pid {
                            set_host_streams(&capture, &watched);
                        }
                    }
                    Err(NotRegistered::Gone(why)) => {
                        // What it wrote is in the rings as unclaimed, from
                        // its cgroup.
                        tracing::debug!(
                            "container {} ({}) is placed by its cgroup: {why}",
                            c.name,
                            &c.id[..12]
                        );
                        exited(&registry, &c, &output);
                    }
                    Err(NotRegistered::Failed(e)) => {
                        tracing::warn!("cannot capture container {} ({}): {e}", c.name, &c.id[..12])
                    }
                }
            }
            Event::Stopped { id } => {
                // At once: a restart's first writes (unclaimed, from new
                // inodes) must wait for registration, not be ignored.
                registry.containers.write().unwrap().remove(&id);
                if let Some(w) = watched.remove(&id) {
                    set_host_streams(&capture, &watched);
                    let (capture, registry) = (capture.clone(), registry.clone());
                    tokio::spawn(async move {
                        // The last writes still drain from the rings.
                        tokio::time::sleep(STOP_GRACE).await;
                        unregister(&capture, &registry, &w.keys);
                    });
                }
            }
            Event::OptedOut { id } => {
                registry.opted_out.write().unwrap().insert(id);
                registry.changed();
            }
        }
    }
}

/// Gives `c`, gone before it could be registered, a cookie per stream for
/// [`EXITED_GRACE`].
fn exited(registry: &Arc<Registry>, c: &Container, output: &Output) {
    let template = output.template(c);
    let stdout = registry.add_stream(Stream::Stdout, &template);
    let stderr = if c.tty {
        stdout
    } else {
        registry.add_stream(Stream::Stderr, &template)
    };
    registry
        .exited
        .write()
        .unwrap()
        .insert(c.id.clone(), (stdout, stderr));
    registry.changed();
    let (registry, id) = (registry.clone(), c.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(EXITED_GRACE).await;
        let mut exited = registry.exited.write().unwrap();
        if exited.get(&id) == Some(&(stdout, stderr)) {
            exited.remove(&id);
        }
        drop(exited);
        let mut by_cookie = registry.by_cookie.write().unwrap();
        by_cookie.remove(&stdout);
        by_cookie.remove(&stderr);
        drop(by_cookie);
        registry.changed();
    });
}

/// Why a container's streams were not registered.
enum NotRegistered {
    /// Its process is gone: place its writes by its cgroup.
    Gone(String),
    /// Its process runs, but its stdio could not be read or registered
    /// (privileges): it is not captured.
    Failed(String),
}

/// Registers the stdout and stderr inodes of `c`'s init process.
fn register(
    capture: &Capture,
    registry: &Registry,
    c: &Container,
    output: &Output,
) -> Result<Vec<(InodeKey, u32)>, NotRegistered> {
    debug_assert!(c.pid != 0);
    let fd = |n: u32| {
        let path = format!("/proc/{}/fd/{n}", c.pid);
        inode_of(std::path::Path::new(&path)).map_err(|e| {
            let why = format!("{path}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                NotRegistered::Gone(why)
            } else {
                NotRegistered::Failed(why)
            }
        })
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
        let cookie = registry.add_stream(stream, &template);
        registry.by_key.write().unwrap().insert(key, cookie);
        registry.changed();
        if let Err(e) = capture.register(key, cookie) {
            unregister(capture, registry, &keys);
            return Err(NotRegistered::Failed(format!(
                "registering {stream:?} in the kernel: {e}"
            )));
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

/// Whether `pid` shares the host's (this process's) pid namespace.
fn in_host_pid_namespace(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    ns(&pid.to_string()).is_some_and(|theirs| Some(theirs) == ns("self"))
}

/// Tells the kernel whether any watched container runs in the host's pid
/// namespace: only then must it look at host processes' writes.
fn set_host_streams(capture: &Capture, watched: &HashMap<String, Watched>) {
    let any = watched.values().any(|w| w.host_pid);
    if let Err(e) = capture.set_host_streams(any) {
        tracing::warn!("{e}");
    }
}
