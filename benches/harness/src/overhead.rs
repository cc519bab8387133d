//! The collector's cost to everything else on the host: a host process (not
//! in a container) writing small messages to a pipe, timed without a
//! collector, with the collector's eBPF capture attached, and with the
//! collector reading the Docker logs API.
//!
//! The collector's program runs at every syscall exit of the machine; for
//! a host process's write it reads the writer's pid-namespace level and
//! returns. That is what this measures. Next to it, a program that does
//! nothing, attached to the same raw tracepoint ([`NoopHook`]): the floor
//! that any syscall hook pays on this kernel. (The Docker-API source hooks
//! no write: it is the control.) Runs alternate (without, no-op hook,
//! eBPF, Docker, …) so that drift of the machine hits every side alike;
//! the medians are compared.

use std::io::Read as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::bail;
use spillway_bench_report::results::Overhead;
use spillway_e2e::{Certs, Collector, Router};

use crate::noop_hook::NoopHook;
use crate::run::Source;

pub struct Args {
    pub writes: u64,
    pub write_bytes: u32,
    pub reps: u32,
    /// The collector sources to measure (`ebpf`, `docker`).
    pub sources: Vec<Source>,
}

pub async fn measure(certs: &Certs, args: &Args) -> anyhow::Result<Overhead> {
    let mut out = Overhead {
        write_bytes: args.write_bytes,
        writes: args.writes,
        ..Overhead::default()
    };
    let router = Router::start(certs, &[]);
    // Warm-up: page cache, CPU frequency.
    pipe_writes(args.writes / 4, args.write_bytes)?;
    for rep in 0..args.reps {
        let without = pipe_writes(args.writes, args.write_bytes)?;
        out.without_ns.push(without);
        let mut line = format!("  overhead rep {}: {without:.1} ns/write without", rep + 1);
        if args.sources.contains(&Source::Ebpf) {
            let hook = NoopHook::attach()?;
            let floor = pipe_writes(args.writes, args.write_bytes)?;
            drop(hook);
            line.push_str(&format!(", {floor:.1} with a no-op hook"));
            out.with_floor_ns.push(floor);
        }
        for &source in &args.sources {
            if source == Source::None {
                continue;
            }
            let mut collector = Collector::start(certs, &[&router], &["--source", source.name()]);
            // Loaded and attached (the collector logs when it is).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if !collector.proc.alive() {
                bail!("the collector exited:\n{}", collector.proc.log());
            }
            let with = pipe_writes(args.writes, args.write_bytes)?;
            collector.proc.kill();
            line.push_str(&format!(", {with:.1} with {}", source.name()));
            match source {
                Source::Ebpf => out.with_ns.push(with),
                _ => out.with_docker_ns.push(with),
            }
        }
        eprintln!("{line}");
    }
    // 0 when eBPF was not measured (`with_ns` empty says so): JSON has no NaN.
    out.overhead_pct = overhead_pct(&out.without_ns, &out.with_ns).unwrap_or(0.0);
    out.docker_overhead_pct = overhead_pct(&out.without_ns, &out.with_docker_ns);
    out.floor_overhead_pct = overhead_pct(&out.without_ns, &out.with_floor_ns);
    Ok(out)
}

/// The slowdown of the median of `with` over that of `without`, %.
fn overhead_pct(without: &[f64], with: &[f64]) -> Option<f64> {
    let pct = 100.0 * (median(with) / median(without) - 1.0);
    pct.is_finite().then_some(pct)
}

/// Nanoseconds per `write(2)` of `bytes` bytes to a pipe that a thread
/// drains.
fn pipe_writes(writes: u64, bytes: u32) -> anyhow::Result<f64> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::from(read);
        let mut buf = vec![0u8; 1 << 16];
        while matches!(file.read(&mut buf), Ok(n) if n > 0) {}
    });
    let msg = vec![b'x'; bytes as usize];
    let started = Instant::now();
    for _ in 0..writes {
        // SAFETY: `msg` is valid for `msg.len()` bytes; the descriptor is open.
        let n = unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&write),
                msg.as_ptr().cast(),
                msg.len(),
            )
        };
        if n != msg.len() as isize {
            bail!("write: {}", std::io::Error::last_os_error());
        }
    }
    let elapsed = started.elapsed();
    drop(write);
    reader.join().expect("reader thread");
    Ok(elapsed.as_nanos() as f64 / writes as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn overhead_of_the_medians() {
        assert_eq!(overhead_pct(&[100.0, 90.0, 110.0], &[150.0]), Some(50.0));
        assert_eq!(overhead_pct(&[100.0], &[]), None);
        assert_eq!(overhead_pct(&[], &[1.0]), None);
    }

    /// The figure is the time of one write: the writes together take
    /// no more than the call (a total not divided, or another unit, would
    /// exceed it) and most of it (the pipe and the reader thread are set up
    /// outside the timed loop; a division by bytes, or a loop that writes
    /// nothing, would take far less).
    #[test]
    fn times_pipe_writes() {
        const WRITES: u64 = 20_000;
        let started = Instant::now();
        let ns = pipe_writes(WRITES, 64).unwrap();
        let call = started.elapsed().as_nanos() as f64;
        let writes = ns * WRITES as f64;
        assert!(writes <= call, "{ns} ns per write, {call} ns for the call");
        assert!(
            writes >= call / 4.0,
            "{ns} ns per write: {writes} of the call's {call} ns"
        );
    }
}
