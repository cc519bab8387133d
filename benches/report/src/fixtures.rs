//! A small synthetic set of runs for the unit tests.
//!
//! - 64 B × 1 container (`sweep`): `none` at 10k–100k; eBPF at 10k–200k,
//!   holding up to 100k; Docker at 10k (held) and 25k (2 % loss).
//! - 512 B × 10 (`sweep`): eBPF only, holding at 10k and 25k.
//! - 100 B × 10 (`target`): eBPF and `none` at 10k and 100k.
//!
//! Every run lasts 10 s, so `sent` = 10 × offered.

use std::collections::BTreeMap;

use crate::results::{Overhead, RunResult};

/// A run of `source` writing `offered` lines/s for 10 s and losing
/// `loss_pct` of them, with the given CPU seconds by process group.
pub fn run(
    suite: &str,
    source: &str,
    line_bytes: u32,
    containers: u32,
    offered: f64,
    loss_pct: f64,
    cpu: &[(&str, f64)],
) -> RunResult {
    let duration = 10.0;
    let sent = (offered * duration) as u64;
    let collector = source != "none";
    let delivered = if collector {
        (sent as f64 * (1.0 - loss_pct / 100.0)).round() as u64
    } else {
        0
    };
    let lost = if collector { sent - delivered } else { 0 };
    let cpu_s: BTreeMap<String, f64> = cpu.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
    let mut rss_mb = BTreeMap::new();
    rss_mb.insert("dockerd".to_owned(), 80.0);
    if collector {
        rss_mb.insert("collector".to_owned(), 20.0 + offered / 10_000.0);
    }
    RunResult {
        source: source.to_owned(),
        containers,
        line_bytes,
        offered_lps: offered,
        delivered_lps: collector.then(|| delivered as f64 / duration),
        loss_pct: collector.then(|| 100.0 * lost as f64 / sent as f64),
        dup: 0,
        p50_ms: collector.then_some(1.0),
        p99_ms: collector.then(|| 2.0 + offered / 20_000.0),
        max_ms: collector.then_some(40.0),
        cpu_s,
        rss_mb,
        suite: suite.to_owned(),
        sent,
        delivered,
        lost,
        emitted_lps: offered,
        duration_s: duration,
        dropped: BTreeMap::new(),
        ..RunResult::default()
    }
}

/// CPU of a `none` run at `k` × 10k lines/s.
fn none_cpu(k: f64) -> Vec<(&'static str, f64)> {
    vec![("dockerd", 1.0 * k), ("emitters", 0.5 * k)]
}

/// CPU of an eBPF run at `k` × 10k lines/s: 0.3 s per 10k lines/s above
/// `none`, of which 0.2 s the collector's.
fn ebpf_cpu(k: f64) -> Vec<(&'static str, f64)> {
    vec![
        ("collector", 0.2 * k),
        ("router", 0.1 * k),
        ("dockerd", 1.0 * k),
        ("emitters", 0.5 * k),
    ]
}

/// CPU of a Docker-API run at `k` × 10k lines/s: 2.0 s per 10k lines/s
/// above `none`, of which 0.5 s the collector's.
fn docker_cpu(k: f64) -> Vec<(&'static str, f64)> {
    vec![
        ("collector", 0.5 * k),
        ("router", 0.1 * k),
        ("dockerd", 2.4 * k),
        ("emitters", 0.5 * k),
    ]
}

/// The whole set (see the module's documentation).
pub fn runs() -> Vec<RunResult> {
    let mut runs = Vec::new();
    for (rate, loss) in [
        (10e3, 0.0),
        (25e3, 0.0),
        (50e3, 0.05),
        (100e3, 0.1),
        (200e3, 5.0),
    ] {
        let k = rate / 10e3;
        if rate <= 100e3 {
            runs.push(run("sweep", "none", 64, 1, rate, 0.0, &none_cpu(k)));
        }
        runs.push(run("sweep", "ebpf", 64, 1, rate, loss, &ebpf_cpu(k)));
    }
    runs.push(run("sweep", "docker", 64, 1, 10e3, 0.0, &docker_cpu(1.0)));
    runs.push(run("sweep", "docker", 64, 1, 25e3, 2.0, &docker_cpu(2.5)));
    for rate in [10e3, 25e3] {
        runs.push(run(
            "sweep",
            "ebpf",
            512,
            10,
            rate,
            0.0,
            &ebpf_cpu(rate / 10e3),
        ));
    }
    for rate in [10e3, 100e3] {
        let k = rate / 10e3;
        runs.push(run("target", "none", 100, 10, rate, 0.0, &none_cpu(k)));
        runs.push(run("target", "ebpf", 100, 10, rate, 0.0, &ebpf_cpu(k)));
    }
    runs
}

/// An overhead measurement of +1.2 %.
pub fn overhead() -> Overhead {
    Overhead {
        write_bytes: 64,
        writes: 2_000_000,
        without_ns: vec![500.0, 510.0, 505.0],
        with_ns: vec![506.0, 516.0, 511.0],
        overhead_pct: 1.2,
        ..Overhead::default()
    }
}

/// A scenario run (suite `maxrate` or `shortlived`) of `containers` ×
/// `lines` lines of 100 B: `delivered` of them, the app writing at
/// `app_lps`, with the given CPU seconds by process group.
#[allow(clippy::too_many_arguments)]
fn scenario(
    suite: &str,
    source: &str,
    containers: u32,
    lines: u64,
    app_lps: f64,
    delivered: u64,
    wrong_tags: u64,
    cpu: &[(&str, f64)],
) -> RunResult {
    let sent = lines * u64::from(containers);
    let collector = source != "none";
    let delivered = if collector { delivered } else { 0 };
    let lost = if collector { sent - delivered } else { 0 };
    let mut rss_mb = BTreeMap::new();
    if collector {
        rss_mb.insert("collector".to_owned(), 30.0);
    }
    RunResult {
        source: source.to_owned(),
        containers,
        line_bytes: 100,
        offered_lps: 0.0,
        delivered_lps: collector.then(|| delivered as f64 / 2.0),
        loss_pct: collector.then(|| 100.0 * lost as f64 / sent as f64),
        p50_ms: collector.then_some(5.0),
        p99_ms: collector.then_some(50.0),
        max_ms: collector.then_some(90.0),
        cpu_s: cpu.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
        rss_mb,
        suite: suite.to_owned(),
        sent,
        delivered,
        lost,
        emitted_lps: app_lps * 0.9,
        duration_s: 4.0,
        app_lps: Some(app_lps),
        lag_ms: collector.then_some(if source == "docker" { 1800.0 } else { 50.0 }),
        wrong_tags: collector.then_some(wrong_tags),
        drain_end: collector.then(|| "all".to_owned()),
        ..RunResult::default()
    }
}

/// The scenario suites: `maxrate` 1 × 300,000 and 10 × 30,000 lines (none
/// at 400k lines/s, Docker at 300k losing nothing 1.8 s behind, eBPF at
/// 200k losing 10 % to full rings), `shortlived` 200 × 10 (Docker all
/// 2000 lines, eBPF 13 of which 3 with wrong tags).
pub fn scenario_runs() -> Vec<RunResult> {
    let mut ebpf = scenario(
        "maxrate",
        "ebpf",
        1,
        300_000,
        200e3,
        270_000,
        0,
        &[("collector", 1.8), ("router", 0.4), ("emitters", 1.0)],
    );
    ebpf.dropped.insert("capture/ring_full".into(), 30_000);
    vec![
        scenario(
            "maxrate",
            "none",
            1,
            300_000,
            400e3,
            0,
            0,
            &[("dockerd", 1.0), ("emitters", 1.0)],
        ),
        scenario(
            "maxrate",
            "docker",
            1,
            300_000,
            300e3,
            300_000,
            0,
            &[("collector", 2.1), ("router", 0.5), ("dockerd", 2.0)],
        ),
        ebpf,
        scenario(
            "maxrate",
            "ebpf",
            10,
            30_000,
            150e3,
            300_000,
            0,
            &[("collector", 2.25)],
        ),
        scenario("shortlived", "none", 200, 10, 1e3, 0, 0, &[]),
        scenario("shortlived", "docker", 200, 10, 1e3, 2000, 0, &[]),
        scenario("shortlived", "ebpf", 200, 10, 1e3, 13, 3, &[]),
    ]
}

/// [`overhead`] with the Docker-API source too (+0.2 %).
pub fn overhead_with_docker() -> Overhead {
    Overhead {
        with_docker_ns: vec![506.0, 511.0, 505.0],
        docker_overhead_pct: Some(0.2),
        ..overhead()
    }
}
