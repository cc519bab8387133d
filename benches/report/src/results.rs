//! What a benchmark run measured, as written to `target/bench/results.json`
//! (a JSON array, one [`RunResult`] per run), and the other files the report
//! reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One end-to-end run: `containers` emitters writing `line_bytes`-byte
/// lines at `offered_lps` lines/s in total, captured by `source`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// `ebpf`, `docker` (the Docker logs API) or `none` (no collector: what
    /// the emitters, dockerd and containerd cost on their own).
    pub source: String,
    pub containers: u32,
    /// Bytes per line, newline included.
    pub line_bytes: u32,
    /// The rate asked of the emitters, lines/s, all containers together.
    pub offered_lps: f64,
    /// Distinct lines delivered per second, from the first write to the
    /// last delivery (`null` without a collector).
    pub delivered_lps: Option<f64>,
    /// Lines written but never delivered, % of `sent`.
    pub loss_pct: Option<f64>,
    /// Lines delivered more than once (extra copies).
    pub dup: u64,
    /// Latency from the emitter's timestamp to the consumer, ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// CPU seconds (user + system) during the run, by process: collector,
    /// router, rlp, dockerd, containerd, containerd-shim (all), emitters
    /// (all), consumer (the harness's in-process consumer).
    pub cpu_s: BTreeMap<String, f64>,
    /// Peak resident memory during the run, MiB, by process group (the
    /// group's summed VmRSS, sampled every 100 ms).
    pub rss_mb: BTreeMap<String, f64>,

    // Beyond the fields the issue names.
    /// Which part of the plan this run belongs to (`sweep`, `target`, `quick`).
    pub suite: String,
    /// Lines the emitters wrote (they write every line; a pipe that is full
    /// blocks them, it never loses a line).
    pub sent: u64,
    /// Distinct lines the consumer got.
    pub delivered: u64,
    /// `sent - delivered`.
    pub lost: u64,
    /// The rate the emitters achieved: `sent` over the time from the
    /// common start to the last emitter's exit. Below `offered_lps` when
    /// the host (or Docker's log pipe) cannot take the offered rate.
    pub emitted_lps: f64,
    /// Seconds from the common start to the end of the drain.
    pub duration_s: f64,
    /// Drops counted by Spillway itself during the run, by stage
    /// (`capture/<reason>`, `collector/<direction>`, `router/...`, `rlp/...`).
    pub dropped: BTreeMap<String, u64>,

    // Added for the max-rate and short-lived suites (absent from older
    // results files).
    /// The write rate the emitters measured themselves: `sent` over the
    /// time from the first write of any emitter to the last write of any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_lps: Option<f64>,
    /// When the consumer got the last distinct line minus when the last
    /// line was written, ms: how far behind the writes the pipeline
    /// delivered. Negative when the last lines written were lost and the
    /// last line delivered arrived before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<f64>,
    /// Distinct delivered lines whose envelope did not name the container
    /// that wrote them (`source_id`, tags `container_name`,
    /// `container_id`): missing or wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_tags: Option<u64>,
    /// How the wait for the last lines ended: `all` (every line arrived),
    /// `idle` (nothing new for a while) or `limit` (the time bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_end: Option<String>,
    /// Mean envelopes per gRPC batch each component sent on (`collector`,
    /// `router`, `rlp`): `spillway_egress_total / spillway_egress_batches_total`.
    /// Small batches cost a wake-up and a message per few envelopes at
    /// every hop.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batch_envelopes: BTreeMap<String, f64>,
}

impl RunResult {
    /// Total CPU seconds of every process measured.
    pub fn cpu_total(&self) -> f64 {
        self.cpu_s.values().sum()
    }

    /// Did the run hold its offered rate: the emitters wrote at least 90%
    /// of it, the collector kept up (delivered at least 90% of what was
    /// written per second, so it did not just fall behind a file it reads
    /// later) and lost at most `max_loss_pct`?
    pub fn holds(&self, max_loss_pct: f64) -> bool {
        self.loss_pct.is_some_and(|l| l <= max_loss_pct)
            && self.emitted_lps >= 0.9 * self.offered_lps
            && self
                .delivered_lps
                .is_some_and(|d| d >= 0.9 * self.emitted_lps)
    }
}

/// The host-overhead measurement (`target/bench/overhead.json`): a host
/// process writing small messages to a pipe, with and without the collector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    pub write_bytes: u32,
    pub writes: u64,
    /// Nanoseconds per write, one figure per repetition: without a
    /// collector, with the eBPF collector.
    pub without_ns: Vec<f64>,
    pub with_ns: Vec<f64>,
    /// Slowdown of the median with the eBPF collector, %.
    pub overhead_pct: f64,
    /// With the Docker-API collector (absent from older files, or when
    /// not measured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_docker_ns: Vec<f64>,
    /// Slowdown of the median with the Docker-API collector, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_overhead_pct: Option<f64>,
    /// With a program that does nothing on the same raw tracepoint as the
    /// collector's: the floor of any syscall hook (absent from older files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_floor_ns: Vec<f64>,
    /// Slowdown of the median with the no-op hook, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_overhead_pct: Option<f64>,
}

/// What the report says about the machine (`target/bench/machine.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: u32,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub docker: String,
    /// The cargo profile the binaries were built with.
    pub profile: String,
    pub date: String,
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Writes `value` as pretty JSON, through a temporary file so that a
/// reader never sees half a file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(value)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_holds_only_when_it_keeps_up_without_loss() {
        let held = RunResult {
            offered_lps: 10_000.0,
            emitted_lps: 9_950.0,
            delivered_lps: Some(9_900.0),
            loss_pct: Some(0.05),
            ..RunResult::default()
        };
        assert!(held.holds(0.1));
        let lossy = RunResult {
            loss_pct: Some(0.2),
            ..held.clone()
        };
        assert!(!lossy.holds(0.1));
        let behind = RunResult {
            delivered_lps: Some(6_000.0),
            ..held.clone()
        };
        assert!(!behind.holds(0.1), "fell behind the emitters");
        let not_offered = RunResult {
            emitted_lps: 5_000.0,
            ..held.clone()
        };
        assert!(!not_offered.holds(0.1), "the host could not write the rate");
        let no_collector = RunResult {
            delivered_lps: None,
            loss_pct: None,
            ..held
        };
        assert!(!no_collector.holds(0.1));
    }
}
