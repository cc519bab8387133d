//! Emitter containers: the busybox test image with the static
//! `spillway-emitter` bind-mounted, run with the `docker` CLI.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
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

    /// Waits for every emitter to exit; fails if one did not write all its
    /// lines. Returns the last exit time, ns since the epoch.
    pub fn wait(&self) -> anyhow::Result<i64> {
        let mut args = vec!["wait"];
        args.extend(self.ids.iter().map(String::as_str));
        let (ok, codes, err) = docker(&args);
        if !ok {
            bail!("docker wait failed: {err}");
        }
        if codes.lines().any(|c| c.trim() != "0") {
            let logs = docker(&["logs", "--tail", "5", &self.ids[0]]);
            bail!("an emitter failed (exit codes {codes:?}); {}", logs.2);
        }
        let mut args = vec!["inspect", "--format", "{{.State.FinishedAt}}"];
        args.extend(self.ids.iter().map(String::as_str));
        let (ok, out, err) = docker(&args);
        if !ok {
            bail!("docker inspect failed: {err}");
        }
        out.lines()
            .map(parse_time)
            .try_fold(0i64, |last, t| Ok(last.max(t?)))
    }
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

/// Docker's RFC 3339 time (nanosecond precision) as ns since the epoch.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("bad time from docker: {text:?}"))?;
    Ok(t.unix_timestamp_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times() {
        assert_eq!(
            parse_time("2026-11-21T10:00:00.123456789Z\n").unwrap(),
            1_795_255_200_123_456_789
        );
        assert!(parse_time("0001-01-01T00:00:00Z").unwrap() < 0);
        assert!(parse_time("yesterday").is_err());
    }
}
