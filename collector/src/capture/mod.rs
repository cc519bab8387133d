//! Container sources: what containers write to stdout and stderr, as
//! envelopes in the [`Output`].
//!
//! Both sources follow the same Docker metadata ([`crate::runtime::docker::watch`]):
//!
//! - [`ebpf`]: a program at every syscall's exit copies what `write`/`writev`
//!   wrote, in the kernel, at the moment of the write; one io_uring loop per ring buffer (one
//!   ring per CPU) makes the lines, into the shard diode of its ring.
//! - [`docker_api`]: each container's log stream through the
//!   Docker API, as logspout reads it. Needs no privileges beyond the Docker
//!   socket, but every line goes through dockerd's log driver first.
//!
//! `--source auto` takes eBPF when this host and process allow it, else the
//! Docker API, and logs why.

pub mod docker_api;
pub mod ebpf;

use std::sync::Arc;

use clap::ValueEnum;
use spillway_plumbing::health::Health;
use tokio::sync::mpsc;

use crate::output::Output;
use crate::runtime::docker;

/// The part of the collector's `/health` that capture reports.
pub const HEALTH_PART: &str = "capture";

/// Where container output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// eBPF where the kernel and privileges allow, else the Docker API.
    Auto,
    /// eBPF capture in the kernel (root and BTF needed).
    Ebpf,
    /// Each container's log stream through the Docker API.
    Docker,
    /// No container capture: only what apps send to the v2 Ingress API.
    None,
}

/// Starts container capture as `kind` says, with eBPF rings of
/// `ring_bytes` each. Returns the source chosen; an error when the chosen
/// source cannot run (bad Docker URI, eBPF asked for but unavailable).
/// The `capture` part of `health` is ready once the source runs and
/// Docker's running containers are listed.
pub fn start(
    kind: SourceKind,
    docker_host: &str,
    ring_bytes: u32,
    output: Output,
    metrics: ebpf::Metrics,
    health: Arc<Health>,
) -> Result<SourceKind, String> {
    if kind == SourceKind::None {
        tracing::info!("container capture is off (--source none)");
        health.ready(HEALTH_PART);
        return Ok(kind);
    }
    let docker = docker::connect(docker_host)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = ebpf::kernel::Options {
        loops: output.shards(),
        ring_bytes,
    };
    let capture = match kind {
        SourceKind::Ebpf => Some(load_ebpf(opts).map_err(|why| format!("--source ebpf: {why}"))?),
        SourceKind::Auto => match load_ebpf(opts) {
            Ok(capture) => Some(capture),
            Err(why) => {
                tracing::warn!(
                    "eBPF capture is not possible here ({why}); following container logs through the Docker API instead"
                );
                None
            }
        },
        _ => None,
    };
    let chosen = match capture {
        Some(capture) => {
            let loops = capture.loops();
            ebpf::start(capture, rx, output, metrics)?;
            tracing::info!(
                "container capture: eBPF, {loops} io_uring loop(s); metadata from {docker_host}"
            );
            SourceKind::Ebpf
        }
        None => {
            docker_api::spawn(docker.clone(), rx, output);
            tracing::info!("container capture: Docker API log streams from {docker_host}");
            SourceKind::Docker
        }
    };
    health.pending(
        HEALTH_PART,
        format!("waiting for the list of running containers from Docker at {docker_host}"),
    );
    docker::watch_notify(docker, tx, move || health.ready(HEALTH_PART));
    Ok(chosen)
}

fn load_ebpf(opts: ebpf::kernel::Options) -> Result<ebpf::kernel::Capture, String> {
    ebpf::kernel::check_support()?;
    ebpf::kernel::Capture::load(opts).map_err(|e| e.to_string())
}
