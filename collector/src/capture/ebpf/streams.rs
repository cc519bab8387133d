//! A ring loop's records made into lines, per stream.
//!
//! Each loop owns the streams whose records land in its ring (the kernel
//! picks the ring from the inode, so a stream never splits between
//! loops), with a line [`Assembler`] each, and parks the envelopes in the
//! diode of its own shard.
//!
//! **Unclaimed writes.** A container writes before the collector could
//! register it (Docker tells of a start only after the process runs). The
//! kernel sends such writes with cookie 0 (fd 1 or 2 of a process in a
//! child pid namespace, to a pipe or tty), stamped with the writer's
//! cgroup, whose name carries the container id. The loop keeps them per
//! inode, bounded in time and bytes, and then:
//!
//! - when the inode is registered, replays them first, in order;
//! - when their container is registered but the inode is not, drops them
//!   (a pipe inside the container) and has the kernel ignore the inode;
//! - when their container turned out to be gone before it could be
//!   registered, places them by fd (1 stdout, 2 stderr) under the
//!   container's metadata;
//! - when their container opted out, or the writer is in no container's
//!   cgroup, drops them and has the kernel ignore the inode;
//! - when none of this happened in time, drops them and counts them as
//!   `unplaced`: never silently.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use spillway_collector_common::{MAX_CAPTURE, STDERR_FD};

use super::kernel::{Capture, Handler, InodeKey, Record, cgroup};
use super::registry::{EXITED_GRACE, Placement, Registry, StreamInfo};
use crate::lines::{Assembler, PARTIAL_LINE_TIMEOUT};
use crate::output::Output;

/// How long unclaimed writes wait to be placed: longer than Docker takes to
/// tell of a container, shorter than [`EXITED_GRACE`].
const UNCLAIMED_TTL: Duration = Duration::from_secs(4);
/// Most unclaimed bytes one loop keeps (oldest inodes are dropped first).
const UNCLAIMED_MAX_BYTES: usize = 8 << 20;
/// Most bytes of placed writes a loop keeps waiting for room in its shard
/// diode (see [`Backlog`]); beyond it the oldest are dropped and counted.
const BACKLOG_MAX_BYTES: usize = 8 << 20;
const _: () = assert!(UNCLAIMED_TTL.as_nanos() < EXITED_GRACE.as_nanos());

/// One stream's state on its loop.
struct StreamState {
    info: Arc<StreamInfo>,
    lines: Assembler,
}

/// One write seen before it could be placed.
struct Write {
    timestamp: i64,
    data: Vec<u8>,
    truncated: bool,
    fd: u32,
}

/// Lines a write ends (what it will put in the diode, give or take a
/// partial line).
fn newlines(data: &[u8]) -> usize {
    data.iter().filter(|&&b| b == b'\n').count()
}

/// Writes placed (their stream known) but not yet handed to the shard
/// diode: the replay of an inode's unclaimed writes, a write with more
/// lines than the diode had room for, and the writes to the same inode
/// that came after them (kept behind, in order). The loop feeds them to the
/// diode as its lane makes room, and takes no more records from its ring
/// meanwhile ([`Handler::ready_for_more`]): a burst faster than the lane
/// ships waits in the ring, and only what was already drained waits here
/// (bounded by [`BACKLOG_MAX_BYTES`]), instead of overwriting the diode's
/// oldest lines.
#[derive(Default)]
struct Backlog {
    writes: VecDeque<(u32, Write)>,
    bytes: usize,
}

/// Writes to one inode seen before it could be placed.
struct Unclaimed {
    /// The writer's container, from its cgroup's name; `None` while the
    /// kernel could not name the cgroup.
    container: Option<String>,
    first_seen: Instant,
    bytes: usize,
    writes: Vec<Write>,
}

/// The per-ring loop's handler: records in, envelopes out (into the diode
/// of each container's shard).
pub struct LoopHandler {
    /// This loop's shard: its output diode (a stream never leaves its ring).
    shard: usize,
    registry: Arc<Registry>,
    capture: Arc<Capture>,
    output: Output,
    /// Unclaimed writes that could never be placed.
    unplaced: Counter,
    generation: u64,
    streams: HashMap<u32, StreamState>,
    unclaimed: HashMap<InodeKey, Unclaimed>,
    unclaimed_bytes: usize,
    /// Placed writes waiting for room in the shard diode, by inode.
    backlogs: HashMap<InodeKey, Backlog>,
    backlog_bytes: usize,
    /// Cgroup id → the container id in its name (`None`: not a container's
    /// cgroup). Cgroup ids are inode numbers: never reused while the
    /// cgroup exists, and rarely after.
    cgroups: HashMap<u64, Option<String>>,
}

impl LoopHandler {
    pub fn new(
        shard: usize,
        registry: Arc<Registry>,
        capture: Arc<Capture>,
        output: Output,
        unplaced: Counter,
    ) -> Self {
        LoopHandler {
            shard,
            registry,
            capture,
            output,
            unplaced,
            generation: 0,
            streams: HashMap::new(),
            unclaimed: HashMap::new(),
            unclaimed_bytes: 0,
            backlogs: HashMap::new(),
            backlog_bytes: 0,
            cgroups: HashMap::new(),
        }
    }

    /// Feeds one write into its stream's lines.
    fn write(&mut self, cookie: u32, data: &[u8], timestamp: i64, truncated: bool, now: Instant) {
        let state = match self.streams.entry(cookie) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => match self.registry.info(cookie) {
                Some(info) => v.insert(StreamState {
                    info,
                    lines: Assembler::new(),
                }),
                // Unregistered meanwhile: its container is gone.
                None => return,
            },
        };
        let (output, shard, info) = (&self.output, self.shard, &state.info);
        let send = |line| output.line_in_round(shard, &info.template, info.stream, line);
        state.lines.push(data, timestamp, now, send);
        if truncated {
            // The rest of this write was not captured: end the line here
            // rather than glue the next write onto it.
            state
                .lines
                .flush(|line| output.line_in_round(shard, &info.template, info.stream, line));
        }
    }

    /// Replays the unclaimed writes of `key`, now known as `cookie`.
    fn claim(&mut self, key: &InodeKey, cookie: u32, now: Instant) {
        if let Some(u) = self.unclaimed.remove(key) {
            self.unclaimed_bytes -= u.bytes;
            for w in u.writes {
                self.queue(key, cookie, w);
            }
            self.pump(now);
        }
    }

    /// Puts a placed write in `key`'s backlog, behind the ones there.
    fn queue(&mut self, key: &InodeKey, cookie: u32, w: Write) {
        let backlog = self.backlogs.entry(*key).or_default();
        backlog.bytes += w.data.len();
        self.backlog_bytes += w.data.len();
        backlog.writes.push_back((cookie, w));
        while self.backlog_bytes > BACKLOG_MAX_BYTES {
            self.drop_oldest_backlog();
        }
    }

    /// Drops the oldest write of the largest backlog, counted with the
    /// shard diode's own drops (the same loss: no room towards the routers).
    fn drop_oldest_backlog(&mut self) {
        let Some(key) = self
            .backlogs
            .iter()
            .max_by_key(|(_, b)| b.bytes)
            .map(|(k, _)| *k)
        else {
            self.backlog_bytes = 0;
            return;
        };
        let backlog = self.backlogs.get_mut(&key).unwrap();
        match backlog.writes.pop_front() {
            Some((_, w)) => {
                backlog.bytes -= w.data.len();
                self.backlog_bytes -= w.data.len();
                self.output
                    .dropped_before_diode(newlines(&w.data).max(1) as u64);
            }
            None => {
                self.backlogs.remove(&key);
            }
        }
    }

    /// Whether the shard diode takes the lines of `data` without dropping
    /// any. A write of `n` bytes ends at most `n` lines, so the newlines
    /// are counted only when the diode is nearly full.
    fn has_room_for(&self, data: &[u8]) -> bool {
        let room = self.output.room(self.shard);
        room >= data.len() || newlines(data) <= room
    }

    /// Whether writes of stream `cookie` wait in a backlog.
    fn is_backlogged(&self, cookie: u32) -> bool {
        self.backlogs
            .values()
            .any(|b| b.writes.iter().any(|(c, _)| *c == cookie))
    }

    /// Feeds backlogged writes into their streams while the shard diode has
    /// room: a replay of thousands of unclaimed lines goes out at the pace
    /// the lane ships them, instead of overflowing the diode in one round.
    fn pump(&mut self, now: Instant) {
        while !self.backlogs.is_empty() {
            let keys: Vec<InodeKey> = self.backlogs.keys().copied().collect();
            for key in keys {
                let Some(backlog) = self.backlogs.get_mut(&key) else {
                    continue;
                };
                let Some((_, front)) = backlog.writes.front() else {
                    self.backlogs.remove(&key);
                    continue;
                };
                // A write of more lines than the diode holds goes when the
                // diode is empty; it then drops its own oldest, counted.
                let lines = newlines(&front.data);
                if lines > self.output.room(self.shard) && !self.output.is_drained(self.shard) {
                    return;
                }
                let (cookie, w) = backlog.writes.pop_front().unwrap();
                backlog.bytes -= w.data.len();
                self.backlog_bytes -= w.data.len();
                if backlog.writes.is_empty() {
                    self.backlogs.remove(&key);
                }
                self.write(cookie, &w.data, w.timestamp, w.truncated, now);
            }
        }
    }

    /// Places the unclaimed writes of `key` by their fds.
    fn place_by_fd(&mut self, key: &InodeKey, stdout: u32, stderr: u32, now: Instant) {
        if let Some(u) = self.unclaimed.remove(key) {
            self.unclaimed_bytes -= u.bytes;
            for w in u.writes {
                let cookie = if w.fd == STDERR_FD { stderr } else { stdout };
                self.queue(key, cookie, w);
            }
            self.pump(now);
        }
    }

    /// The container id named by cgroup `id`; `None` while unknown,
    /// `Some(None)` for a cgroup that is no container's.
    fn container_of_cgroup(&mut self, id: u64) -> Option<Option<String>> {
        if let Some(known) = self.cgroups.get(&id) {
            return Some(known.clone());
        }
        let name = self.capture.cgroup_name(id)?;
        let container = cgroup::container_id(&name).map(str::to_owned);
        self.cgroups.insert(id, container.clone());
        Some(container)
    }

    fn unclaimed_record(&mut self, r: &Record<'_>, truncated: bool, now: Instant) {
        let new = !self.unclaimed.contains_key(&r.key);
        if new {
            let container = match self.container_of_cgroup(r.cgroup) {
                Some(Some(id)) => Some(id),
                // A process in a pid namespace of its own, but in no
                // container (a sandbox): not ours to ship.
                Some(None) => return self.capture.ignore(r.key),
                None => None,
            };
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
        u.writes.push(Write {
            timestamp: r.timestamp,
            data: r.data.to_vec(),
            truncated,
            fd: r.fd,
        });
        self.unclaimed_bytes += r.data.len();
        if new || u.container.is_some() {
            // Its container may be known already (placed at once), or
            // gone (an exited container's later writes).
            self.settle(&r.key, now);
        }
        while self.unclaimed_bytes > UNCLAIMED_MAX_BYTES {
            let Some(oldest) = self
                .unclaimed
                .iter()
                .min_by_key(|(_, u)| u.first_seen)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.give_up(&oldest);
        }
    }

    /// Places or drops the unclaimed writes of `key` if the registry now
    /// says where they belong; `false` while they must wait.
    fn settle(&mut self, key: &InodeKey, now: Instant) -> bool {
        if let Some(cookie) = self.registry.cookie_of(key) {
            self.claim(key, cookie, now);
            return true;
        }
        let placement = match &self.unclaimed[key].container {
            Some(id) => self.registry.placement(id),
            None => Placement::Unknown,
        };
        match placement {
            Placement::Unknown => false,
            Placement::Exited { stdout, stderr } => {
                self.place_by_fd(key, stdout, stderr, now);
                // Exited: later writes of the same inode are placed the
                // same way, through the next unclaimed record.
                true
            }
            // A pipe inside a registered container, or an opted-out
            // container's output: not ours to ship.
            Placement::Registered | Placement::OptedOut => {
                self.forget(key);
                true
            }
        }
    }

    /// Drops the unclaimed writes of `key`, which are not a container's
    /// output to ship, and has the kernel ignore the inode.
    fn forget(&mut self, key: &InodeKey) {
        if let Some(u) = self.unclaimed.remove(key) {
            self.unclaimed_bytes -= u.bytes;
            self.capture.ignore(*key);
        }
    }

    /// Drops the unclaimed writes of `key` that could not be placed in
    /// time (or room), and counts them.
    fn give_up(&mut self, key: &InodeKey) {
        if let Some(u) = self.unclaimed.get(key) {
            self.unplaced.inc_by(u.writes.len() as u64);
            tracing::debug!(
                "dropping {} unclaimed writes to {key:?} (container {:?}): never placed",
                u.writes.len(),
                u.container
            );
        }
        self.forget(key);
    }

    /// Follows registry changes: renamed containers, gone streams, and
    /// unclaimed writes that can be placed now.
    fn refresh(&mut self, now: Instant) {
        let cookies: Vec<u32> = self.streams.keys().copied().collect();
        for cookie in cookies {
            match self.registry.info(cookie) {
                Some(info) => self.streams.get_mut(&cookie).unwrap().info = info,
                // Gone, but lines of it still wait in a backlog: they go out
                // under its last metadata; the stream ends at a later refresh.
                None if self.is_backlogged(cookie) => {}
                None => {
                    let mut state = self.streams.remove(&cookie).unwrap();
                    let (output, shard, info) = (&self.output, self.shard, &state.info);
                    state.lines.flush(|line| {
                        output.line_in_round(shard, &info.template, info.stream, line)
                    });
                }
            }
        }
        let keys: Vec<InodeKey> = self.unclaimed.keys().copied().collect();
        for key in keys {
            self.settle(&key, now);
        }
    }
}

impl Handler for LoopHandler {
    fn record(&mut self, r: &Record<'_>, now: Instant) {
        let truncated =
            r.total as usize > MAX_CAPTURE && (r.offset + r.len) as usize >= MAX_CAPTURE;
        let cookie = match r.cookie {
            0 => self.registry.cookie_of(&r.key),
            c => Some(c),
        };
        match cookie {
            Some(cookie) => {
                if !self.unclaimed.is_empty() {
                    self.claim(&r.key, cookie, now);
                }
                let behind = !self.backlogs.is_empty() && self.backlogs.contains_key(&r.key);
                if behind || !self.has_room_for(r.data) {
                    // Behind this inode's earlier writes that wait, or the
                    // diode is full: wait for the lane rather than drop.
                    let w = Write {
                        timestamp: r.timestamp,
                        data: r.data.to_vec(),
                        truncated,
                        fd: r.fd,
                    };
                    self.queue(&r.key, cookie, w);
                    if !behind {
                        // The lane has a full diode to ship: wake it now,
                        // not at the end of this round.
                        self.output.end_round(self.shard);
                    }
                } else {
                    self.write(cookie, r.data, r.timestamp, truncated, now);
                }
            }
            None => self.unclaimed_record(r, truncated, now),
        }
    }

    /// After each drain of the ring: flushes old partial lines, follows
    /// the registry, gives up on old unclaimed writes, then wakes this
    /// loop's lane once for the whole round (see [`Output::line_in_round`]).
    fn tick(&mut self, now: Instant) -> bool {
        self.pump(now);
        self.settle_round(now);
        self.output.end_round(self.shard);
        !self.backlogs.is_empty()
    }

    /// Not while writes wait in a backlog or the shard diode is full: the
    /// next records then wait in the ring until the lane makes room.
    fn ready_for_more(&self) -> bool {
        self.backlogs.is_empty() && self.output.room(self.shard) > 0
    }
}

impl LoopHandler {
    fn settle_round(&mut self, now: Instant) {
        // A stream whose next writes wait in a backlog is not idle: the rest
        // of its partial line is among them, however long the pump takes.
        let waiting: HashSet<u32> = self
            .backlogs
            .values()
            .flat_map(|b| b.writes.iter().map(|(cookie, _)| *cookie))
            .collect();
        for (cookie, state) in &mut self.streams {
            if waiting.contains(cookie) {
                continue;
            }
            let (output, shard, info) = (&self.output, self.shard, &state.info);
            state
                .lines
                .flush_if_older(PARTIAL_LINE_TIMEOUT, now, |line| {
                    output.line_in_round(shard, &info.template, info.stream, line)
                });
        }
        let generation = self.registry.generation();
        if generation != self.generation {
            self.generation = generation;
            self.refresh(now);
        }
        if self.unclaimed.is_empty() {
            return;
        }
        let expired: Vec<InodeKey> = self
            .unclaimed
            .iter()
            .filter(|(_, u)| now.duration_since(u.first_seen) > UNCLAIMED_TTL)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.give_up(&key);
        }
    }
}
