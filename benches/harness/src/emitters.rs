//! Emitter containers: the busybox test image with the static
//! `spillway-emitter` bind-mounted, run with the `docker` CLI.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::time::{Duration, Instant};

use anyhow::bail;
use spillway_e2e::docker::{IMAGE, docker};

/// How many `docker run`s (or `docker create`s) go at once.
const PARALLEL_STARTS: usize = 4;
/// How many `docker start`s go at once when containers start together
/// ([`Start::Together`]).
const PARALLEL_RELEASES: usize = 10;

/// How the emitters of a run start writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Containers run first and wait for a file in `/bench`; they all
    /// start writing when it appears ([`Emitters::release`]).
    OnFile,
    /// Containers are created first, then all started at once
    /// ([`Emitters::release`]): each writes as soon as it starts, and
    /// exits. What short-lived containers do, which a collector must
    /// notice and attach to as they start.
    Together,
}

/// What each emitter of a run does.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Lines per second per container; 0: as fast as they can.
    pub rate: u64,
    /// Lines per container.
    pub lines: u64,
    pub line_bytes: u32,
    /// A directory mounted at `/bench` in every emitter: they start
    /// writing when `go` appears in it ([`Start::OnFile`]), and write their
    /// reports (`<n>.report`) into it.
    pub start_dir: PathBuf,
    pub start: Start,
}

/// What the emitters measured themselves, together: their `--report-file`s.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Writes {
    /// Unix ns of the first write of any emitter and the last of any.
    pub first_ns: i64,
    pub last_ns: i64,
    /// Lines written, all emitters.
    pub lines: u64,
    /// Emitters that reported.
    pub reports: u32,
}

impl Writes {
    /// Adds one emitter's report (`first=<ns> last=<ns> lines=<n>`);
    /// `false` if it does not parse.
    pub fn add(&mut self, report: &str) -> bool {
        let mut first = None;
        let mut last = None;
        let mut lines = None;
        for field in report.split_whitespace() {
            let Some((key, value)) = field.split_once('=') else {
                return false;
            };
            let Ok(value) = value.parse::<u64>() else {
                return false;
            };
            match key {
                "first" => first = Some(value as i64),
                "last" => last = Some(value as i64),
                "lines" => lines = Some(value),
                _ => {}
            }
        }
        let (Some(first), Some(last), Some(lines)) = (first, last, lines) else {
            return false;
        };
        self.reports += 1;
        if lines > 0 {
            if self.lines == 0 {
                (self.first_ns, self.last_ns) = (first, last);
            } else {
                self.first_ns = self.first_ns.min(first);
                self.last_ns = self.last_ns.max(last);
            }
            self.lines += lines;
        }
        true
    }

    /// Lines/s from the first write to the last, all emitters together;
    /// `None` with fewer than two lines or no time between them.
    pub fn lines_per_s(&self) -> Option<f64> {
        let span = self.last_ns - self.first_ns;
        (self.lines > 1 && span > 0).then(|| self.lines as f64 / (span as f64 / 1e9))
    }

    /// Reads the reports in `dir` (`*.report`), warning about those that
    /// do not parse.
    pub fn read(dir: &Path) -> Writes {
        let mut writes = Writes::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return writes;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "report") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if !writes.add(&text) {
                    eprintln!("warning: bad emitter report {}: {text:?}", path.display());
                }
            }
        }
        writes
    }
}

/// The containers of one run, removed when dropped.
pub struct Emitters {
    /// Container ids, by emitter number.
    pub ids: Vec<String>,
    start: Start,
    start_dir: PathBuf,
}

impl Emitters {
    /// Starts containers `<prefix>0`, `<prefix>1`… (the name is the
    /// envelopes' source id).
    pub fn start(
        emitter: &Path,
        prefix: &str,
        count: u32,
        work: &Workload,
    ) -> anyhow::Result<Emitters> {
        let started = Mutex::new(Emitters {
            ids: vec![String::new(); count as usize],
            start: work.start,
            start_dir: work.start_dir.clone(),
        });
        let errors = Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_STARTS {
                s.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= count {
                            break;
                        }
                        match run_one(emitter, prefix, n, work) {
                            Ok(id) => started.lock().unwrap().ids[n as usize] = id,
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                    }
                });
            }
        });
        let started = started.into_inner().unwrap();
        if let Some(e) = errors.into_inner().unwrap().pop() {
            return Err(e); // `started` is dropped: its containers removed
        }
        Ok(started)
    }

    /// Lets the emitters write: the start file, or `docker start` of every
    /// container, [`PARALLEL_RELEASES`] at a time, each `docker start`
    /// given a share of the containers.
    pub fn release(&self) -> anyhow::Result<()> {
        match self.start {
            Start::OnFile => Ok(std::fs::write(self.start_dir.join("go"), "")?),
            Start::Together => {
                let share = self.ids.len().div_ceil(PARALLEL_RELEASES).max(1);
                let errors = Mutex::new(Vec::new());
                std::thread::scope(|s| {
                    for ids in self.ids.chunks(share) {
                        let errors = &errors;
                        s.spawn(move || {
                            let mut args = vec!["start"];
                            args.extend(ids.iter().map(String::as_str));
                            let (ok, _, err) = docker(&args);
                            if !ok {
                                errors.lock().unwrap().push(err);
                            }
                        });
                    }
                });
                match errors.into_inner().unwrap().pop() {
                    Some(err) => bail!("docker start failed: {err}"),
                    None => Ok(()),
                }
            }
        }
    }

    /// Waits for every emitter process to exit and returns when the last
    /// one did, ns since the epoch; fails if one failed (its writes failed)
    /// or they are still running after `limit`.
    ///
    /// The processes are watched in `/proc`, not through `docker wait`:
    /// Docker 20.10 sometimes loses the exit of a container when many exit
    /// at once, and reports it running forever.
    pub fn wait(&self, limit: Duration) -> anyhow::Result<i64> {
        // A started container's pid is 0 once it has exited.
        let mut args = vec!["inspect", "--format", "{{.State.Pid}}"];
        args.extend(self.ids.iter().map(String::as_str));
        let (ok, out, err) = docker(&args);
        if !ok {
            bail!("docker inspect failed: {err}");
        }
        let pids: Vec<u32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let deadline = Instant::now() + limit;
        while pids.iter().any(|&pid| is_running_emitter(pid)) {
            if Instant::now() > deadline {
                bail!("the emitters still run after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ended = spillway_proto::now_nanos();
        let mut args = vec![
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
        ];
        args.extend(self.ids.iter().map(String::as_str));
        let (_, states, _) = docker(&args);
        let failed = |l: &str| l.starts_with("false") && !l.ends_with(" 0");
        if states.lines().any(failed) {
            let logs = docker(&["logs", "--tail", "5", &self.ids[0]]);
            bail!("an emitter failed: {}", logs.2);
        }
        Ok(ended)
    }
}

/// Is `pid` an emitter (`/emitter` in its container) that has not exited?
fn is_running_emitter(pid: u32) -> bool {
    let Some(stat) = i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok()?.stat().ok())
    else {
        return false;
    };
    stat.comm == "emitter" && stat.state != 'Z'
}

impl Drop for Emitters {
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .ids
            .iter()
            .filter(|id| !id.is_empty())
            .cloned()
            .collect();
        for ids in ids.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let (ok, _, err) = docker(&args);
            if !ok {
                eprintln!("warning: could not remove emitter containers: {err}");
            }
        }
    }
}

/// Runs (or creates, for [`Start::Together`]) emitter `n`, container
/// `<prefix><n>`; returns its id.
fn run_one(emitter: &Path, prefix: &str, n: u32, work: &Workload) -> anyhow::Result<String> {
    let name = format!("{prefix}{n}");
    let binary = format!("{}:/emitter:ro", emitter.display());
    let start = format!("{}:/bench", work.start_dir.display());
    let (count, rate, size, src) = (
        work.lines.to_string(),
        work.rate.to_string(),
        work.line_bytes.to_string(),
        n.to_string(),
    );
    let report = format!("/bench/{n}.report");
    let mut args = vec![];
    args.extend(match work.start {
        Start::OnFile => ["run", "-d"].as_slice(),
        Start::Together => ["create"].as_slice(),
    });
    args.extend([
        "--network",
        "none",
        "--name",
        &name,
        "-v",
        &binary,
        "-v",
        &start,
        IMAGE,
        "/emitter",
        "--count",
        &count,
        "--rate",
        &rate,
        "--size",
        &size,
        "--src",
        &src,
        "--report-file",
        &report,
    ]);
    if work.start == Start::OnFile {
        args.extend(["--start-file", "/bench/go"]);
    }
    let (ok, id, err) = docker(&args);
    if !ok {
        bail!("docker {} {name} failed: {err}", args[0]);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_the_emitters_reports() {
        let mut w = Writes::default();
        assert_eq!(w.lines_per_s(), None);
        assert!(w.add("first=2000000000 last=3000000000 lines=1000\n"));
        assert!(w.add("first=1500000000 last=2500000000 lines=1000"));
        // Nothing written: counted as a report, not in the span.
        assert!(w.add("first=0 last=0 lines=0"));
        assert!(!w.add("first=1 last=x lines=1"));
        assert!(!w.add("garbage"));
        assert!(!w.add("first=1 lines=1"));
        assert_eq!(
            w,
            Writes {
                first_ns: 1_500_000_000,
                last_ns: 3_000_000_000,
                lines: 2000,
                reports: 3
            }
        );
        // 2000 lines over 1.5 s.
        let lps = w.lines_per_s().unwrap();
        assert!((lps - 1333.33).abs() < 0.01, "{lps}");
        let mut one = Writes::default();
        one.add("first=5 last=5 lines=1");
        assert_eq!(one.lines_per_s(), None);
    }

    #[test]
    fn reads_reports_from_a_directory() {
        let dir =
            std::env::temp_dir().join(format!("spillway-bench-reports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.report"), "first=10 last=20 lines=2\n").unwrap();
        std::fs::write(dir.join("1.report"), "first=5 last=30 lines=3\n").unwrap();
        std::fs::write(dir.join("go"), "").unwrap();
        let w = Writes::read(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((w.first_ns, w.last_ns, w.lines, w.reports), (5, 30, 5, 2));
    }

    #[test]
    fn only_live_emitters_count() {
        assert!(!is_running_emitter(std::process::id())); // not an emitter
        assert!(!is_running_emitter(u32::MAX)); // no such process
    }
}
