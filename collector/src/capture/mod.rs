//! Container sources: what containers write to stdout and stderr, as
//! envelopes in the [`Output`].
//!
//! Both sources follow the same container metadata, from the runtime
//! ([`crate::runtime::Runtime::watch`]):
//!
//! - [`ebpf`]: a program at every syscall's exit copies what `write`/`writev`
//!   wrote, in the kernel, at the moment of the write; one io_uring loop per ring buffer (one
//!   ring per CPU) makes the lines, into the shard diode of its ring.
//! - [`docker_api`]: each container's log stream through the
//!   Docker API, as logspout reads it. Needs no privileges beyond the Docker
//!   socket, but every line goes through dockerd's log driver first.
//!
//! `--source auto` takes eBPF when this host and process allow it, else the
//! Docker API (Docker and podman only), and logs why.

pub mod docker_api;
pub mod ebpf;

use std::sync::Arc;

use clap::ValueEnum;
use spillway_plumbing::health::Health;
use tokio::sync::mpsc;

use crate::output::Output;
use crate::runtime::{Containers, Runtime};

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

/// Starts container capture as `kind` says, following `runtime`, with
/// eBPF rings of `ring_bytes` each. Returns the source chosen; an error
/// when the chosen source cannot run (eBPF asked for but unavailable, the
/// Docker API asked for on a runtime without it). The `capture` part of
/// `health` is ready once the source runs and the runtime's running
/// containers are listed.
pub fn start(
    kind: SourceKind,
    runtime: Option<Box<dyn Runtime>>,
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
    let runtime = runtime.ok_or("container capture needs a runtime")?;
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = ebpf::kernel::Options {
        loops: output.shards(),
        ring_bytes,
    };
    let docker = runtime.docker_api();
    let capture = match kind {
        SourceKind::Ebpf => Some(load_ebpf(opts).map_err(|why| format!("--source ebpf: {why}"))?),
        SourceKind::Auto => match load_ebpf(opts) {
            Ok(capture) => Some(capture),
            Err(why) if docker.is_some() => {
                tracing::warn!(
                    "eBPF capture is not possible here ({why}); following container logs through the Docker API instead"
                );
                None
            }
            Err(why) => {
                return Err(format!(
                    "--source auto: eBPF capture is not possible here ({why}), and {} has no Docker API to read logs from",
                    runtime.describe()
                ));
            }
        },
        _ => None,
    };
    let described = runtime.describe();
    let chosen = match (capture, docker) {
        (Some(capture), _) => {
            let loops = capture.loops();
            ebpf::start(capture, rx, output, metrics)?;
            tracing::info!(
                "container capture: eBPF, {loops} io_uring loop(s); metadata from {described}"
            );
            SourceKind::Ebpf
        }
        (None, Some(docker)) => {
            docker_api::spawn(docker, rx, output);
            tracing::info!("container capture: Docker API log streams from {described}");
            SourceKind::Docker
        }
        (None, None) => {
            return Err(format!(
                "--source docker: {described} has no Docker API to read logs from"
            ));
        }
    };
    health.pending(
        HEALTH_PART,
        format!("waiting for the list of running containers from {described}"),
    );
    runtime.watch(
        tx,
        Containers::default(),
        Some(Box::new(move || health.ready(HEALTH_PART))),
    );
    Ok(chosen)
}

fn load_ebpf(opts: ebpf::kernel::Options) -> Result<ebpf::kernel::Capture, String> {
    ebpf::kernel::check_support()?;
    ebpf::kernel::Capture::load(opts).map_err(|e| e.to_string())
}
