//! `--source docker`: container output read through the Docker API, the
//! way logspout does it.
//!
//! For every container that runs ([`Event::Running`]), a *follower* task
//! streams `GET /containers/{id}/logs?follow&stdout&stderr&timestamps&since=…`.
//! Each message in it is `<RFC 3339 timestamp> <bytes>`: the timestamp
//! becomes the envelope's (Docker's, when the container wrote), the bytes
//! go through an [`Assembler`] per stream (stdout, stderr; a TTY
//! container's one console stream counts as stdout), and each line goes
//! to the container's shard of the [`Output`]. A timer flushes lines left
//! incomplete for [`PARTIAL_LINE_TIMEOUT`].
//!
//! Nothing twice, nothing lost:
//!
//! - **Where to start.** A container running when the collector started
//!   is read from that moment; one started later, from its start, less
//!   [`START_SLACK`]: Docker stamps a fast container's first lines a little
//!   *before* it records `StartedAt`.
//! - **Reopening.** Docker's `since` is whole seconds, so every opened
//!   stream replays part of a second. A [`Cursor`] (the newest timestamp
//!   delivered and how many messages had it: all pieces of a long line get
//!   its first piece's timestamp) skips what was delivered.
//! - **Ends.** When a stream ends but the container was not reported
//!   `Stopped` (dockerd restarted, or the `Stopped` is on its way), the
//!   follower reopens it from the cursor, with backoff. A restarted
//!   container is followed on from the cursor too. After `Stopped`,
//!   Docker ends the stream once it has sent everything; then incomplete
//!   lines are flushed and the follower ends.
//! - **Renames** take effect for the lines read after the new `Running`.
//!
//! Bytes pass unchanged, but Docker's default `json-file` log driver
//! stores lines as JSON strings and so has already replaced invalid UTF-8
//! with U+FFFD (the `local` driver keeps bytes; eBPF capture does not go
//! through Docker at all).

mod cursor;
mod tty;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::logging::{RateLimited, error_chain};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::container::{Container, EnvelopeTemplate, Stream};
use crate::lines::{Assembler, Line, PARTIAL_LINE_TIMEOUT};
use crate::output::Output;
use crate::runtime::docker::Event;
use crate::runtime::docker::time::split_timestamp;
use cursor::{Cursor, Resume};
use spillway_proto::now_nanos;
use tty::TtyMessages;

/// How early before `StartedAt` a new container's lines are taken.
pub const START_SLACK: Duration = Duration::from_secs(1);

/// How often incomplete lines are checked against [`PARTIAL_LINE_TIMEOUT`].
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How long a stream may stay silent after its container stopped before
/// the follower gives up on it (Docker does not always end it). While
/// output keeps coming, a follower that lags behind the log file reads on.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How many failed reads after its container stopped before the follower
/// gives up on the rest of its output.
const DRAIN_ATTEMPTS: u32 = 3;

/// How often the followers may warn.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Reads the output of every container `events` reports running, until
/// `events` closes (then the followers stop).
pub fn spawn(docker: Docker, events: UnboundedReceiver<Event>, out: Output) -> JoinHandle<()> {
    let source = Source {
        ctx: Arc::new(Ctx {
            docker,
            out,
            started: now_nanos(),
            warn: Mutex::new(RateLimited::new(WARN_EVERY)),
        }),
        followed: HashMap::new(),
        tasks: JoinSet::new(),
    };
    tokio::spawn(source.run(events))
}

struct Ctx {
    docker: Docker,
    out: Output,
    /// When this source started, ns since the epoch.
    started: i64,
    /// Shared by all followers: when dockerd goes away, all of them fail
    /// at once.
    warn: Mutex<RateLimited>,
}

impl Ctx {
    fn warn(&self, msg: impl FnOnce() -> String) {
        self.warn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .warn(msg);
    }
}

/// Turns events into followers: one per container id at a time.
struct Source {
    ctx: Arc<Ctx>,
    /// Every container with a follower, or whose follower ended but which
    /// may start again (it keeps its cursor).
    followed: HashMap<String, Followed>,
    /// The followers; each returns its container's id.
    tasks: JoinSet<String>,
}

/// A container's state shared between [`Source`] and its follower.
struct Followed {
    shared: Arc<Mutex<Shared>>,
    /// Wakes the follower when `shared` changed.
    wake: Arc<Notify>,
}

struct Shared {
    container: Arc<Container>,
    /// A `Stopped` came since the last `Running`.
    stopped: bool,
    /// How many: two (die, destroy) mean the container is gone for good.
    stops: u32,
    /// The follower ended; the next `Running` needs a new one.
    done: bool,
    /// Where the ended follower got to.
    cursor: Cursor,
}

impl Source {
    async fn run(mut self, mut events: UnboundedReceiver<Event>) {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Running(c)) => self.running(c),
                    Some(Event::Stopped { id }) => self.stopped(&id),
                    // Never followed: nothing to do.
                    Some(Event::OptedOut { .. }) => {}
                    // Dropping `tasks` aborts the followers.
                    None => return,
                },
                Some(Ok(id)) = self.tasks.join_next() => self.forget_if_gone(&id),
            }
        }
    }

    fn running(&mut self, c: Arc<Container>) {
        if c.is_ignored() {
            return;
        }
        let id = c.id.clone();
        match self.followed.get(&id) {
            Some(f) => {
                let mut s = lock(&f.shared);
                s.container = c;
                s.stopped = false;
                s.stops = 0;
                if !s.done {
                    // Its follower takes the update (rename, restart).
                    drop(s);
                    f.wake.notify_one();
                    return;
                }
                s.done = false;
            }
            None => {
                let cursor = Cursor::start(c.started_at, self.ctx.started);
                self.followed.insert(id.clone(), Followed::new(c, cursor));
            }
        }
        let f = &self.followed[&id];
        let follower = Follower::new(self.ctx.clone(), id, f.shared.clone(), f.wake.clone());
        self.tasks.spawn(follower.run());
    }

    fn stopped(&mut self, id: &str) {
        let Some(f) = self.followed.get(id) else {
            return;
        };
        {
            let mut s = lock(&f.shared);
            s.stopped = true;
            s.stops = s.stops.saturating_add(1);
        }
        f.wake.notify_one();
        self.forget_if_gone(id);
    }

    /// Drops a container that was removed and whose follower ended.
    fn forget_if_gone(&mut self, id: &str) {
        let gone = self.followed.get(id).is_some_and(|f| {
            let s = lock(&f.shared);
            s.done && s.stops >= 2
        });
        if gone {
            self.followed.remove(id);
        }
    }
}

impl Followed {
    fn new(container: Arc<Container>, cursor: Cursor) -> Self {
        Followed {
            shared: Arc::new(Mutex::new(Shared {
                container,
                stopped: false,
                stops: 0,
                done: false,
                cursor,
            })),
            wake: Arc::new(Notify::new()),
        }
    }
}

/// How a read of the log stream ended.
enum ReadEnd {
    /// Docker ended it: the container stopped (or dockerd is stopping).
    Clean,
    Failed(String),
    /// The container stopped and the stream stayed silent, but open, for
    /// [`DRAIN_TIMEOUT`].
    Abandoned,
}

/// Reads one container's log stream, reopening it until the container
/// stops.
struct Follower {
    ctx: Arc<Ctx>,
    id: String,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    container: Arc<Container>,
    emit: Emit,
    /// stdout, stderr.
    lines: [Assembler; 2],
    cursor: Cursor,
    /// The last read saw everything Docker had (or gave up on the rest).
    drained: bool,
    failures_after_stop: u32,
    backoff: Backoff,
}

/// Sends a container's lines.
struct Emit {
    out: Output,
    shard: usize,
    template: EnvelopeTemplate,
}

impl Emit {
    fn line(&self, stream: Stream, line: Line) {
        self.out.line(self.shard, &self.template, stream, line);
    }
}

impl Follower {
    fn new(ctx: Arc<Ctx>, id: String, shared: Arc<Mutex<Shared>>, wake: Arc<Notify>) -> Self {
        let (container, cursor) = {
            let s = lock(&shared);
            (s.container.clone(), s.cursor)
        };
        let emit = Emit {
            out: ctx.out.clone(),
            shard: ctx.out.shard_of(&id),
            template: ctx.out.template(&container),
        };
        Follower {
            ctx,
            id,
            shared,
            wake,
            container,
            emit,
            lines: [Assembler::new(), Assembler::new()],
            cursor,
            drained: false,
            failures_after_stop: 0,
            backoff: Backoff::for_peers(),
        }
    }

    /// Follows until the container stopped and its output is read;
    /// returns the container's id.
    async fn run(mut self) -> String {
        tracing::debug!("following the output of container {}", self.container.name);
        loop {
            let end = self.read().await;
            self.drained = match end {
                ReadEnd::Clean | ReadEnd::Abandoned => true,
                ReadEnd::Failed(why) => {
                    let name = &self.container.name;
                    self.ctx
                        .warn(|| format!("reading the output of container {name}: {why}"));
                    if lock(&self.shared).stopped {
                        self.failures_after_stop += 1;
                    }
                    self.failures_after_stop >= DRAIN_ATTEMPTS
                }
            };
            if self.finish_if_stopped() {
                break;
            }
            self.pause().await;
            if self.finish_if_stopped() {
                break;
            }
        }
        tracing::debug!("done with the output of container {}", self.container.name);
        self.id
    }

    /// One log stream, from the cursor until it ends.
    async fn read(&mut self) -> ReadEnd {
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: self.cursor.since(),
            ..Default::default()
        };
        let (docker, id) = (self.ctx.docker.clone(), self.id.clone());
        let mut stream = std::pin::pin!(docker.logs(&id, Some(options)));
        let mut resume = Resume::from(self.cursor);
        let mut tty = TtyMessages::default();
        let mut tick = flush_ticker();
        let mut drain_by = self.refresh().then(drain_deadline);
        loop {
            tokio::select! {
                // An update first, so lines after a rename get the new name.
                biased;
                () = self.wake.notified() => {
                    if self.refresh() && drain_by.is_none() {
                        drain_by = Some(drain_deadline());
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(output)) => {
                        self.on_output(output, &mut resume, &mut tty);
                        if drain_by.is_some() {
                            drain_by = Some(drain_deadline());
                        }
                    }
                    Some(Err(e)) => return ReadEnd::Failed(error_chain(&e)),
                    None => {
                        while let Some(m) = tty.next(true) {
                            self.on_message(Stream::Stdout, &m, &mut resume);
                        }
                        return ReadEnd::Clean;
                    }
                },
                _ = tick.tick(), if self.has_incomplete_lines() => self.flush_old(),
                () = tokio::time::sleep_until(drain_by.unwrap_or_else(Instant::now)),
                    if drain_by.is_some() => return ReadEnd::Abandoned,
            }
        }
    }

    /// Waits before reopening the stream: a backoff, cut short by news.
    async fn pause(&mut self) {
        let until = Instant::now() + self.backoff.next_delay();
        let mut tick = flush_ticker();
        loop {
            tokio::select! {
                () = self.wake.notified() => {
                    self.refresh();
                    return;
                }
                () = tokio::time::sleep_until(until) => return,
                _ = tick.tick(), if self.has_incomplete_lines() => self.flush_old(),
            }
        }
    }

    /// Ends the follower if its container stopped and its output was
    /// read: flushes the incomplete lines and hands the cursor back.
    /// Decided under the lock, so a `Running` either comes before (and
    /// the follower goes on) or finds it done (and starts a new one).
    fn finish_if_stopped(&mut self) -> bool {
        let shared = self.shared.clone();
        let mut s = lock(&shared);
        if !s.stopped || !self.drained {
            return false;
        }
        for (stream, lines) in [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .zip(&mut self.lines)
        {
            lines.flush(|line| self.emit.line(stream, line));
        }
        s.cursor = self.cursor;
        s.done = true;
        true
    }

    /// Takes the latest container (a rename changes the template);
    /// returns whether it stopped.
    fn refresh(&mut self) -> bool {
        let s = lock(&self.shared);
        if !Arc::ptr_eq(&s.container, &self.container) {
            self.container = s.container.clone();
            self.emit.template = self.ctx.out.template(&self.container);
        }
        if !s.stopped {
            self.failures_after_stop = 0;
        }
        s.stopped
    }

    fn on_output(&mut self, output: LogOutput, resume: &mut Resume, tty: &mut TtyMessages) {
        match output {
            LogOutput::StdOut { message } => self.on_message(Stream::Stdout, &message, resume),
            LogOutput::StdErr { message } => self.on_message(Stream::Stderr, &message, resume),
            LogOutput::Console { message } => {
                tty.push(&message);
                while let Some(m) = tty.next(false) {
                    self.on_message(Stream::Stdout, &m, resume);
                }
            }
            LogOutput::StdIn { .. } => {}
        }
    }

    /// One Docker message: `<timestamp> <bytes>`.
    fn on_message(&mut self, stream: Stream, message: &[u8], resume: &mut Resume) {
        let (timestamp, payload) = match split_timestamp(message) {
            Some((ts, payload)) if resume.admit(ts) => {
                self.cursor.advance(ts);
                (ts, payload)
            }
            Some(_) => return,
            None => {
                // Not Docker's format: pass it on as it is, stamped now.
                let name = &self.container.name;
                self.ctx.warn(|| {
                    format!("container {name}: a log message without a timestamp from Docker")
                });
                (now_nanos(), message)
            }
        };
        self.backoff.reset();
        let emit = &self.emit;
        self.lines[stream_index(stream)].push(
            payload,
            timestamp,
            std::time::Instant::now(),
            |line| emit.line(stream, line),
        );
    }

    fn has_incomplete_lines(&self) -> bool {
        self.lines.iter().any(|l| !l.is_empty())
    }

    fn flush_old(&mut self) {
        let now = std::time::Instant::now();
        for (stream, lines) in [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .zip(&mut self.lines)
        {
            lines.flush_if_older(PARTIAL_LINE_TIMEOUT, now, |line| {
                self.emit.line(stream, line)
            });
        }
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn flush_ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

fn drain_deadline() -> Instant {
    Instant::now() + DRAIN_TIMEOUT
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Every change under the lock is a few plain assignments: a panic
    // cannot leave it half done.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}
