//! `--source files`: container output read from the CRI log files the
//! kubelet keeps, `<pod logs dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`
//! (see [`cri`] for the format). The Kubernetes counterpart of the Docker
//! API source: no privileges beyond reading the directory, and no runtime
//! socket; but every line has gone through the runtime's log file first.
//!
//! One thread polls: every `--files-poll-interval` it lists the directory
//! (new pods, containers, restarts and rotated files appear there) and
//! reads what each followed file gained. Polling rather than inotify:
//! inotify needs a watch per pod and per container directory, set up
//! again for each new one with a window where writes are missed, and it
//! says nothing on some filesystems; a listing and an `fstat` per file
//! cost microseconds, so a 250 ms poll of a node's few hundred files is
//! well under 1% of a core, and it is the latency that a poll adds
//! (Vector's file source polls the same way).
//!
//! Each round, in this order:
//!
//! 1. the files the listing shows are matched by identity (device and
//!    inode) to the files followed, and new ones are opened: at their
//!    saved position if one was saved for them (same identity and
//!    fingerprint), else at their start;
//! 2. files whose path no longer names them (renamed by the kubelet's
//!    rotation, or deleted with their pod) are read first, then the
//!    others, up to [`ROUND_BYTES`] in all; a renamed or deleted file is
//!    let go once it has been read to its end and got nothing for
//!    [`ROTATED_GRACE`] (the runtime may write a last record to it before
//!    it reopens the new one);
//! 3. the positions are saved ([`positions`]), *then* the round's lines
//!    are handed on: a collector killed in between loses those lines (as it
//!    loses what sits in its diodes), and never sends a line twice.
//!
//! Tags come from the path alone ([`pod`]).

pub mod cri;
pub mod pod;
pub mod positions;
pub mod tail;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use spillway_plumbing::health::Health;
use spillway_plumbing::logging::RateLimited;
use spillway_plumbing::metrics::Labels;

use crate::container::EnvelopeTemplate;
use crate::output::Output;
use pod::PodContainer;
use positions::{FileId, Position, Store};
use tail::{Skipped, Tailer};

/// Where the kubelet keeps the pods' log files.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";

/// How often the directory is listed and the files read, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The range of `--files-poll-interval`.
pub const POLL_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(10));

/// Bytes read from all files in one round, at most: bounds the lines held
/// between reading and handing on. A round that reads this much is
/// followed by the next one at once.
pub const ROUND_BYTES: usize = 1 << 20;

/// How long a renamed or deleted file read to its end is kept open.
pub const ROTATED_GRACE: Duration = Duration::from_secs(2);

/// How often the source may warn about the same kind of trouble.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Parses `--files-poll-interval`: a duration from 10ms to 10s.
pub fn parse_poll_interval(s: &str) -> Result<Duration, String> {
    let d = spillway_plumbing::parse_duration(s)?;
    let (lo, hi) = POLL_INTERVAL_RANGE;
    if d < lo || d > hi {
        return Err(format!("`{s}` is out of range: from 10ms to 10s"));
    }
    Ok(d)
}

/// What the files source is told.
#[derive(Clone, Debug)]
pub struct Options {
    /// The pod logs directory (`--pod-logs-dir`).
    pub dir: PathBuf,
    /// `--files-poll-interval`.
    pub poll_interval: Duration,
    /// Where the positions are saved (`--state-dir`).
    pub state_dir: PathBuf,
}

/// The files source's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// `spillway_capture_dropped_total{reason}`: records skipped
    /// (`malformed`, `too_long`).
    pub dropped: Family<Labels, Counter>,
    /// `spillway_files_followed`: log files open.
    pub followed: Gauge,
}

/// Starts the source's thread. An error when the state directory cannot
/// be made.
pub fn spawn(
    opts: Options,
    out: Output,
    metrics: Metrics,
    health: Arc<Health>,
) -> Result<(), String> {
    let store = Store::new(&opts.state_dir)?;
    let saved = store
        .load()
        .into_iter()
        .map(|p| (p.id, p))
        .collect::<HashMap<_, _>>();
    let source = Source {
        opts,
        out,
        metrics,
        store,
        saved,
        files: BTreeMap::new(),
        last_saved: Vec::new(),
        warn: RateLimited::new(WARN_EVERY),
    };
    std::thread::Builder::new()
        .name("files-source".into())
        .spawn(move || source.run(&health))
        .map_err(|e| format!("cannot start the files source: {e}"))?;
    Ok(())
}

struct Source {
    opts: Options,
    out: Output,
    metrics: Metrics,
    store: Store,
    /// Positions saved by the last run, for the files of the first round.
    saved: HashMap<FileId, Position>,
    files: BTreeMap<FileId, Tailer>,
    last_saved: Vec<Position>,
    warn: RateLimited,
}

impl Source {
    fn run(mut self, health: &Health) {
        let dir = self.opts.dir.display().to_string();
        let mut first = true;
        loop {
            let listed = self.scan();
            if first && listed {
                // Positions of files gone while the collector was down.
                self.saved.clear();
                health.ready(super::HEALTH_PART);
                tracing::info!(
                    "files source: following {} log file(s) in {dir}",
                    self.files.len()
                );
                first = false;
            } else if first {
                health.pending(
                    super::HEALTH_PART,
                    format!("waiting for the pod logs directory {dir}"),
                );
            }
            let full = self.round();
            if !full {
                std::thread::sleep(self.opts.poll_interval);
            }
        }
    }

    /// Lists the directory and follows the files it shows; false when it
    /// cannot be listed.
    fn scan(&mut self) -> bool {
        let was_current: Vec<FileId> = self
            .files
            .values_mut()
            .filter_map(|t| std::mem::take(&mut t.current).then_some(t.id))
            .collect();
        let found = match list(&self.opts.dir) {
            Ok(found) => found,
            Err(e) => {
                let dir = &self.opts.dir;
                self.warn
                    .warn(|| format!("cannot list the pod logs directory {}: {e}", dir.display()));
                Vec::new()
            }
        };
        let listed = !found.is_empty() || self.opts.dir.is_dir();
        for (path, pod, rotated) in found {
            if let Err(e) = self.follow(&path, &pod, rotated) {
                self.warn
                    .warn(|| format!("cannot read {}: {e}", path.display()));
            }
        }
        // The grace of a file renamed or deleted just now starts now.
        let now = Instant::now();
        for id in was_current {
            if let Some(t) = self.files.get_mut(&id).filter(|t| !t.current) {
                t.last_news = now;
            }
        }
        listed
    }

    /// Follows the file at `path`. A `rotated` file (`0.log.<time>`) is
    /// taken only when a position was saved for it: it was renamed while
    /// the collector was down, before all of it was read.
    fn follow(&mut self, path: &Path, pod: &PodContainer, rotated: bool) -> std::io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if rotated && !self.saved.contains_key(&id) {
            return Ok(());
        }
        if let Some(t) = self.files.get_mut(&id) {
            t.current = !rotated;
            t.path = path.to_owned();
            return Ok(());
        }
        let file = File::open(path)?;
        // The file opened may not be the one listed (rotated in between).
        let meta = file.metadata()?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if self.files.contains_key(&id) {
            return Ok(());
        }
        let head = Tailer::head(&file)?;
        let saved = self
            .saved
            .remove(&id)
            .filter(|p| Tailer::matches(&head, meta.size(), p));
        let template = EnvelopeTemplate::from_parts(
            pod.source_id().to_owned(),
            pod.instance_id().to_owned(),
            pod.tags(self.out.host()),
            pod.info(),
        );
        let shard = self.out.shard_of(&pod.key());
        tracing::debug!(
            "following {} from {}",
            path.display(),
            saved
                .as_ref()
                .map_or("its start".into(), |p| format!("byte {}", p.resume_at()))
        );
        let mut t = Tailer::new(
            file,
            id,
            path.to_owned(),
            Arc::new(template),
            shard,
            saved.as_ref(),
        );
        t.current = !rotated;
        self.files.insert(id, t);
        Ok(())
    }

    /// Reads, saves the positions, hands the lines on. True when it read
    /// all it may in one round (more may be waiting).
    fn round(&mut self) -> bool {
        let mut budget = ROUND_BYTES;
        let mut skipped = Skipped::default();
        // Renamed and deleted files first: their lines came before those
        // of the file that replaced them.
        let mut order: Vec<FileId> = self.files.keys().copied().collect();
        order.sort_by_key(|id| self.files[id].current);
        for &id in &order {
            let t = self.files.get_mut(&id).expect("listed");
            match t.read(budget, &mut skipped) {
                Ok(n) => budget -= n,
                Err(e) => {
                    let path = t.path.display().to_string();
                    self.warn.warn(|| format!("cannot read {path}: {e}"));
                }
            }
            if budget == 0 {
                break;
            }
        }
        let now = Instant::now();
        let done: Vec<FileId> = self
            .files
            .values()
            .filter(|t| !t.current && t.at_eof && now.duration_since(t.last_news) >= ROTATED_GRACE)
            .map(|t| t.id)
            .collect();
        let mut finished = Vec::new();
        for id in done {
            let mut t = self.files.remove(&id).expect("listed");
            tracing::debug!("done with {}", t.path.display());
            t.flush();
            finished.push(t);
        }
        let positions: Vec<Position> = self.files.values().map(Tailer::position).collect();
        if positions != self.last_saved {
            match self.store.save(positions.clone()) {
                Ok(()) => self.last_saved = positions,
                Err(e) => self.warn.warn(|| e),
            }
        }
        // In the order read: a renamed file's last lines before those of
        // the file that replaced it.
        let read = order.iter().filter_map(|id| self.files.get(id));
        for t in finished.iter().chain(read) {
            for (stream, line) in &t.pending {
                self.out.line(t.shard, &t.template, *stream, line.clone());
            }
        }
        for t in self.files.values_mut() {
            t.pending.clear();
        }
        self.count(skipped);
        self.metrics.followed.set(self.files.len() as i64);
        budget == 0
    }

    fn count(&self, skipped: Skipped) {
        for (reason, n) in [
            ("malformed", skipped.malformed),
            ("too_long", skipped.too_long),
        ] {
            if n > 0 {
                self.metrics
                    .dropped
                    .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                    .inc_by(n);
            }
        }
    }
}

/// The container log files under `dir`, with what their paths say, and
/// whether each is a rotated one (`<n>.log.<time>`, not compressed).
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, PodContainer, bool)>> {
    let mut found = Vec::new();
    for pod_dir in std::fs::read_dir(dir)? {
        let pod_dir = pod_dir?;
        let Some(pod_name) = pod_dir.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // A pod directory may go away while it is listed.
        let Ok(containers) = std::fs::read_dir(pod_dir.path()) else {
            continue;
        };
        for container_dir in containers.flatten() {
            let Some(container) = container_dir.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(pod) = PodContainer::from_dirs(&pod_name, &container) else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(container_dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let name = file.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                let (current, rotated) = match name.split_once(".log.") {
                    Some((n, time)) if !time.ends_with(".gz") => (format!("{n}.log"), true),
                    Some(_) => continue,
                    None => (name.to_owned(), false),
                };
                let relative = Path::new(&pod_name).join(&container).join(current);
                if PodContainer::from_log_path(&relative).is_some() {
                    found.push((path, pod.clone(), rotated));
                }
            }
        }
    }
    Ok(found)
}
