//! Container sources: what containers write to stdout and stderr, as
//! envelopes in the [`Output`].
//!
//! The first two follow the same container metadata, from the runtime
//! ([`crate::runtime::Runtime::watch`]):
//!
//! - [`ebpf`]: a program at every syscall's exit copies what `write`/`writev`
//!   wrote, in the kernel, at the moment of the write; one io_uring loop per ring buffer (one
//!   ring per CPU) makes the lines, into the shard diode of its ring.
//! - [`docker_api`]: each container's log stream through the
//!   Docker API, as logspout reads it. Needs no privileges beyond the Docker
//!   socket, but every line goes through dockerd's log driver first.
//! - [`files`]: the CRI log files the kubelet keeps in `/var/log/pods`, on
//!   Kubernetes nodes (containerd, CRI-O); tags from the files' paths, no
//!   Docker.
//!
//! `--source auto` takes eBPF when this host and process allow it, else the
//! log files when the pod logs directory exists (a Kubernetes node), else
//! the Docker API (Docker and podman only), and logs why ([`choose`]).

pub mod docker_api;
pub mod ebpf;
pub mod files;

use std::path::Path;
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
    /// eBPF where the kernel and privileges allow, else the CRI log files
    /// when the pod logs directory exists, else the Docker API.
    Auto,
    /// eBPF capture in the kernel (root and BTF needed).
    Ebpf,
    /// Each container's log stream through the Docker API.
    Docker,
    /// The CRI log files in the pod logs directory (Kubernetes nodes).
    Files,
    /// No container capture: only what apps send to the v2 Ingress API.
    None,
}

/// The source chosen, with the eBPF capture when it is eBPF.
#[derive(Debug)]
pub enum Chosen<C> {
    Ebpf(C),
    Files,
    Docker,
}

/// Decides the source for `kind`: `load_ebpf` is tried only for `ebpf`
/// and `auto`; `cri_node` says whether the pod logs directory exists.
/// `auto` takes eBPF if it loads, else the files on a CRI node, else the
/// Docker API, and logs why. An error when `ebpf` was asked for and
/// cannot load.
pub fn choose<C>(
    kind: SourceKind,
    load_ebpf: impl FnOnce() -> Result<C, String>,
    cri_node: bool,
    pod_logs_dir: &Path,
) -> Result<Chosen<C>, String> {
    Ok(match kind {
        SourceKind::Ebpf => {
            Chosen::Ebpf(load_ebpf().map_err(|why| format!("--source ebpf: {why}"))?)
        }
        SourceKind::Docker | SourceKind::None => Chosen::Docker,
        SourceKind::Files => Chosen::Files,
        SourceKind::Auto => match load_ebpf() {
            Ok(capture) => Chosen::Ebpf(capture),
            Err(why) if cri_node => {
                tracing::warn!(
                    "eBPF capture is not possible here ({why}); reading the CRI log files in {} instead",
                    pod_logs_dir.display()
                );
                Chosen::Files
            }
            Err(why) => {
                tracing::warn!(
                    "eBPF capture is not possible here ({why}), and {} does not exist (not a Kubernetes node); following container logs through the Docker API instead",
                    pod_logs_dir.display()
                );
                Chosen::Docker
            }
        },
    })
}

/// Starts container capture as `kind` says, following `runtime`, with
/// eBPF rings of `ring_bytes` each, or the files source with `files`.
/// Returns the source chosen; an error when the chosen source cannot run
/// (eBPF asked for but unavailable, the Docker API asked for on a runtime
/// without it, a state directory that cannot be made). The `capture` part
/// of `health` is ready once the source runs and the runtime's running
/// containers are listed (the pod logs directory, for the files source).
pub fn start(
    kind: SourceKind,
    runtime: Option<Box<dyn Runtime>>,
    ring_bytes: u32,
    files: files::Options,
    output: Output,
    metrics: Metrics,
    health: Arc<Health>,
) -> Result<SourceKind, String> {
    if kind == SourceKind::None {
        tracing::info!("container capture is off (--source none)");
        health.ready(HEALTH_PART);
        return Ok(kind);
    }
    let opts = ebpf::kernel::Options {
        loops: output.shards(),
        ring_bytes,
    };
    let cri_node = files.dir.is_dir();
    let chosen = choose(kind, || load_ebpf(opts), cri_node, &files.dir)?;
    if let Chosen::Files = chosen {
        let dir = files.dir.display().to_string();
        let interval = files.poll_interval;
        files::spawn(files, output, metrics.files, health)?;
        tracing::info!("container capture: CRI log files in {dir}, read every {interval:?}");
        return Ok(SourceKind::Files);
    }
    let runtime = runtime.ok_or("container capture needs a runtime")?;
    let (tx, rx) = mpsc::unbounded_channel();
    let described = runtime.describe();
    let chosen = match (chosen, runtime.docker_api()) {
        (Chosen::Ebpf(capture), _) => {
            let loops = capture.loops();
            ebpf::start(capture, rx, output, metrics.ebpf)?;
            tracing::info!(
                "container capture: eBPF, {loops} io_uring loop(s); metadata from {described}"
            );
            SourceKind::Ebpf
        }
        (_, Some(docker)) => {
            docker_api::spawn(docker, rx, output);
            tracing::info!("container capture: Docker API log streams from {described}");
            SourceKind::Docker
        }
        (_, None) => {
            return Err(format!(
                "eBPF capture is not running and {described} has no Docker API to read logs from"
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

/// The metrics of every source.
pub struct Metrics {
    pub ebpf: ebpf::Metrics,
    pub files: files::Metrics,
}

fn load_ebpf(opts: ebpf::kernel::Options) -> Result<ebpf::kernel::Capture, String> {
    ebpf::kernel::check_support()?;
    ebpf::kernel::Capture::load(opts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(kind: SourceKind, ebpf: bool, cri_node: bool) -> Result<&'static str, String> {
        let load = || {
            if ebpf {
                Ok(())
            } else {
                Err("no BTF".to_owned())
            }
        };
        Ok(
            match choose(kind, load, cri_node, Path::new("/var/log/pods"))? {
                Chosen::Ebpf(()) => "ebpf",
                Chosen::Files => "files",
                Chosen::Docker => "docker",
            },
        )
    }

    #[test]
    fn auto_takes_ebpf_then_files_on_cri_nodes_then_docker() {
        for cri in [false, true] {
            assert_eq!(decide(SourceKind::Auto, true, cri), Ok("ebpf"));
        }
        assert_eq!(decide(SourceKind::Auto, false, true), Ok("files"));
        assert_eq!(decide(SourceKind::Auto, false, false), Ok("docker"));
    }

    #[test]
    fn an_explicit_source_is_taken_as_is() {
        for (ebpf, cri) in [(false, false), (false, true), (true, false), (true, true)] {
            assert_eq!(decide(SourceKind::Files, ebpf, cri), Ok("files"));
            assert_eq!(decide(SourceKind::Docker, ebpf, cri), Ok("docker"));
        }
        assert_eq!(decide(SourceKind::Ebpf, true, true), Ok("ebpf"));
        assert_eq!(
            decide(SourceKind::Ebpf, false, true),
            Err("--source ebpf: no BTF".to_owned())
        );
    }
}
