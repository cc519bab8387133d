//! The eBPF container source: from kernel records to envelopes.
//!
//! - [`kernel`] loads the program (`collector-ebpf/`), which delivers the
//!   bytes containers write to their stdout and stderr into BPF ring
//!   buffers, as records tagged with the written file's inode and the
//!   writer's cgroup.
//! - [`rings`] runs one io_uring loop per ring, which drains it.
//! - [`registry`] decides which inodes the kernel captures, following
//!   Docker's containers, and what each cookie stands for.
//! - [`streams`] turns each loop's records into lines and envelopes, and
//!   places writes that came before their container was registered.

pub mod kernel;
mod registry;
mod rings;
mod streams;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use spillway_plumbing::metrics::Labels;
use tokio::sync::mpsc;

use crate::output::Output;
use crate::runtime::docker::Event;
use kernel::{Capture, DropReason, KernelDrops, cgroup};
use registry::Registry;
use streams::LoopHandler;

/// The counters the eBPF source keeps.
#[derive(Clone, Default)]
pub struct Metrics {
    /// `spillway_capture_dropped_total{reason}`: container writes not
    /// delivered whole, by the kernel ([`DropReason`]) or by the loops
    /// (`unplaced`: written before their container was known, and never
    /// placed).
    pub dropped: Family<Labels, Counter>,
    /// `spillway_capture_container_dropped_total{container, reason}`: the
    /// kernel's drops per container (by name; the cgroup's name for a
    /// cgroup no container claimed).
    pub container_dropped: Family<Labels, Counter>,
}

/// Starts the source: registration follows `events`; one loop per ring.
pub fn start(
    capture: Capture,
    events: mpsc::UnboundedReceiver<Event>,
    output: Output,
    metrics: Metrics,
) -> Result<(), String> {
    let capture = Arc::new(capture);
    let registry = Arc::new(Registry::default());
    let unplaced = metrics
        .dropped
        .get_or_create(&vec![("reason".to_owned(), "unplaced".to_owned())])
        .clone();
    {
        let (registry, capture, output) = (registry.clone(), capture.clone(), output.clone());
        capture
            .clone()
            .spawn_loops(move |ring| {
                LoopHandler::new(
                    ring,
                    registry.clone(),
                    capture.clone(),
                    output.clone(),
                    unplaced.clone(),
                )
            })
            .map_err(|e| format!("starting the capture loops: {e}"))?;
    }
    tokio::spawn(export_kernel_drops(capture.clone(), metrics));
    tokio::spawn(registry::follow_containers(
        capture, registry, events, output,
    ));
    Ok(())
}

/// Copies the kernel's drop counts to the metrics, every second.
async fn export_kernel_drops(capture: Arc<Capture>, metrics: Metrics) {
    let mut shown = KernelDrops::default();
    let mut shown_by_cgroup: HashMap<u64, KernelDrops> = HashMap::new();
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = capture.kernel_drops();
        add_drops(&metrics.dropped, &[], &shown, &now);
        shown = now;
        for (cgroup, now) in capture.kernel_drops_by_cgroup() {
            let was = shown_by_cgroup.entry(cgroup).or_default();
            if *was == now {
                continue;
            }
            let name = names.entry(cgroup).or_insert_with(|| {
                let name = capture
                    .cgroup_name(cgroup)
                    .unwrap_or_else(|| format!("cgroup {cgroup}"));
                match cgroup::container_id(&name) {
                    Some(id) => id[..12].to_owned(),
                    None => name,
                }
            });
            let label = [("container".to_owned(), name.clone())];
            add_drops(&metrics.container_dropped, &label, was, &now);
            *was = now;
        }
    }
}

/// Adds what `now` counts beyond `was` to `family`, by reason.
fn add_drops(
    family: &Family<Labels, Counter>,
    labels: &[(String, String)],
    was: &KernelDrops,
    now: &KernelDrops,
) {
    for reason in DropReason::ALL {
        let mut l = labels.to_vec();
        l.push(("reason".to_owned(), reason.name().to_owned()));
        family
            .get_or_create(&l)
            .inc_by(now.get(reason).saturating_sub(was.get(reason)));
    }
}
