//! Emitter containers: the busybox test image with the static
//! `spillway-emitter` bind-mounted, run with the `docker` CLI.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::time::{Duration, Instant};

use anyhow::bail;
use spillway_e2e::docker::{IMAGE, docker};

/// How many `docker run`s go at once.
const PARALLEL_STARTS: usize = 4;

/// What each emitter of a run does.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Lines per second per container.
    pub rate: u64,
    /// Lines per container.
    pub lines: u64,
    pub line_bytes: u32,
    /// A directory mounted at `/bench` in every emitter: they start
    /// writing when `go` appears in it ([`release`]).
    pub start_dir: PathBuf,
}

/// Starts the emitters waiting on `work.start_dir`.
pub fn release(work: &Workload) -> std::io::Result<()> {
    std::fs::write(work.start_dir.join("go"), "")
}

/// The containers of one run, removed when dropped.
pub struct Emitters {
    pub ids: Vec<String>,
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
        let started = Mutex::new(Emitters { ids: Vec::new() });
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
                        match run_one(emitter, &format!("{prefix}{n}"), work) {
                            Ok(id) => started.lock().unwrap().ids.push(id),
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

    /// Waits for every emitter process to exit and returns when the last
    /// one did, ns since the epoch; fails if one failed (its writes failed)
    /// or they are still running after `limit`.
    ///
    /// The processes are watched in `/proc`, not through `docker wait`:
    /// Docker 20.10 sometimes loses the exit of a container when many exit
    /// at once, and reports it running forever.
    pub fn wait(&self, limit: Duration) -> anyhow::Result<i64> {
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
        if states
            .lines()
            .any(|l| l.starts_with("false") && !l.ends_with(" 0"))
        {
            let logs = docker(&["logs", "--tail", "5", &self.ids[0]]);
            bail!("an emitter failed: {}", logs.2);
        }
        Ok(ended)
    }
}

/// Is `pid` an emitter (`/emitter` in its container) that has not exited?
fn is_running_emitter(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`
    let Some((comm, rest)) = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')) else {
        return false;
    };
    comm == "emitter" && !rest.trim_start().starts_with('Z')
}

impl Drop for Emitters {
    fn drop(&mut self) {
        for ids in self.ids.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let (ok, _, err) = docker(&args);
            if !ok {
                eprintln!("warning: could not remove emitter containers: {err}");
            }
        }
    }
}

fn run_one(emitter: &Path, name: &str, work: &Workload) -> anyhow::Result<String> {
    let binary = format!("{}:/emitter:ro", emitter.display());
    let start = format!("{}:/bench:ro", work.start_dir.display());
    let (count, rate, size) = (
        work.lines.to_string(),
        work.rate.to_string(),
        work.line_bytes.to_string(),
    );
    let args = [
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
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
        "--start-file",
        "/bench/go",
    ];
    let (ok, id, err) = docker(&args);
    if !ok {
        bail!("docker run {name} failed: {err}");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_emitters_count() {
        assert!(!is_running_emitter(std::process::id())); // not an emitter
        assert!(!is_running_emitter(u32::MAX)); // no such process
    }
}
