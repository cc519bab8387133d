//! One end-to-end run: a fresh router, RLP, consumer and collector (none of
//! them for the `none` source), N emitter containers writing a workload,
//! and what came out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use spillway_bench_report::results::RunResult;
use spillway_e2e::{Certs, Collector, Rlp, Router, http_get};
use spillway_proto::now_nanos;

use crate::consumer::Consumer;
use crate::emitters::{Emitters, Workload, release};
use crate::sampler::Sampler;

/// Where the lines are captured from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The collector's eBPF capture.
    Ebpf,
    /// The collector reading Docker's logs API (what logspout does).
    Docker,
    /// No collector: the emitters, dockerd and containerd alone.
    None,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Ebpf => "ebpf",
            Source::Docker => "docker",
            Source::None => "none",
        }
    }
}

/// What stays the same over a whole benchmark.
pub struct Setup {
    /// The static emitter binary, bind-mounted into the containers.
    pub emitter: PathBuf,
    pub certs: Certs,
    /// How long the emitters write.
    pub duration: Duration,
    /// The drain ends when nothing arrived for this long.
    pub idle: Duration,
}

/// One point of the plan.
#[derive(Clone, Debug)]
pub struct Case {
    pub suite: &'static str,
    pub source: Source,
    pub containers: u32,
    pub line_bytes: u32,
    /// Lines/s, all containers together.
    pub offered: u64,
}

/// The consistency of a run's counts, checked by `--check` (the CI smoke
/// test of the harness): every line written was either delivered or found
/// missing, and nothing unexpected arrived.
pub fn check(r: &RunResult, missing: u64, garbled: u64) -> Result<(), String> {
    let mut problems = Vec::new();
    if r.source == "none" {
        return Ok(()); // nothing to deliver
    }
    if r.delivered + missing != r.sent {
        problems.push(format!(
            "delivered {} + missing {missing} != sent {}",
            r.delivered, r.sent
        ));
    }
    if garbled > 0 {
        problems.push(format!("{garbled} lines that no emitter wrote"));
    }
    if r.dup > 0 {
        problems.push(format!("{} duplicates", r.dup));
    }
    if r.delivered == 0 {
        problems.push("nothing delivered".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A run's result with the two counts only the check needs.
pub struct Outcome {
    pub result: RunResult,
    pub missing: u64,
    pub garbled: u64,
}

pub async fn run(setup: &Setup, case: &Case, run_no: u32) -> anyhow::Result<Outcome> {
    let n = case.containers.max(1);
    let rate = (case.offered / u64::from(n)).max(1);
    let lines = (rate as f64 * setup.duration.as_secs_f64()).ceil() as u64;
    let sent = lines * u64::from(n);
    let prefix = format!("spillway-bench-{}-{run_no}-", std::process::id());

    // The pipeline, consumer first so that it misses nothing.
    let mut pipeline = None;
    if case.source != Source::None {
        let certs = &setup.certs;
        let router = Router::start(certs, &[]);
        let rlp = Rlp::start(certs, &[&router], &[]);
        let consumer = Consumer::start(&rlp, certs, prefix.clone(), n, lines).await;
        let collector = Collector::start(certs, &[&router], &["--source", case.source.name()]);
        // The collector loads its eBPF program and lists the containers.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        pipeline = Some((router, rlp, collector, consumer));
    }
    let mut named = vec![];
    if let Some((router, rlp, collector, _)) = &pipeline {
        for (group, proc) in [
            ("collector", &collector.proc),
            ("router", &router.proc),
            ("rlp", &rlp.proc),
        ] {
            named.extend(proc.pid().map(|pid| (group.to_owned(), pid)));
        }
        named.push(("consumer".to_owned(), std::process::id()));
    }

    let start_dir = std::env::temp_dir().join(format!("{prefix}start"));
    std::fs::create_dir_all(&start_dir)?;
    let work = Workload {
        rate,
        lines,
        line_bytes: case.line_bytes,
        start_dir: start_dir.clone(),
    };
    let emitter = setup.emitter.clone();
    let emitters = tokio::task::spawn_blocking({
        let (prefix, work) = (prefix.clone(), work.clone());
        move || Emitters::start(&emitter, &prefix, n, &work)
    })
    .await??;
    // Measure from the common start: container creation is not the
    // workload.
    let sampler = Sampler::start(named);
    let start_at = now_nanos();
    release(&work)?;
    let limit = setup.duration * 5 + Duration::from_secs(60);
    let (emitters, emit_end) = tokio::task::spawn_blocking(move || {
        let end = emitters.wait(limit);
        (emitters, end)
    })
    .await?;
    let emit_end = emit_end?;
    if let Some((.., consumer)) = &pipeline {
        let limit = setup.duration * 4 + Duration::from_secs(30);
        consumer.drain(sent, setup.idle, limit).await;
    }
    let end = now_nanos();
    let usage = sampler.finish();
    drop(emitters);
    let _ = std::fs::remove_dir_all(&start_dir);

    let mut result = RunResult {
        source: case.source.name().into(),
        suite: case.suite.into(),
        containers: n,
        line_bytes: case.line_bytes,
        offered_lps: (rate * u64::from(n)) as f64,
        sent,
        emitted_lps: sent as f64 / secs(emit_end - start_at),
        duration_s: secs(end - start_at),
        cpu_s: usage.cpu_s,
        rss_mb: usage.rss_mb,
        ..RunResult::default()
    };
    let (mut missing, mut garbled) = (0, 0);
    if let Some((router, rlp, collector, consumer)) = pipeline {
        result.dropped = dropped(&[
            ("collector", collector.http_port),
            ("router", router.metrics_port),
            ("rlp", rlp.metrics_port),
        ]);
        let tally = consumer.finish().await?;
        let h = &tally.latency_us;
        result.delivered = tally.distinct;
        result.lost = sent - tally.distinct.min(sent);
        result.dup = tally.dup;
        result.loss_pct = Some(100.0 * result.lost as f64 / sent as f64);
        if tally.distinct > 0 {
            result.delivered_lps =
                Some(tally.distinct as f64 / secs(tally.last_rx - tally.first_ts));
            result.p50_ms = Some(h.value_at_quantile(0.5) as f64 / 1000.0);
            result.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
            result.max_ms = Some(h.max() as f64 / 1000.0);
        } else {
            result.delivered_lps = Some(0.0);
        }
        missing = tally.missing;
        garbled = tally.garbled;
    }
    Ok(Outcome {
        result,
        missing,
        garbled,
    })
}

fn secs(nanos: i64) -> f64 {
    (nanos.max(1) as f64) / 1e9
}

/// Non-zero drop counters of each component's `/metrics` page, keyed
/// `component/label` (`collector/egress`, `capture/ring_full`, …).
fn dropped(pages: &[(&str, u16)]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (component, port) in pages {
        let Some(page) = http_get(*port, "/metrics") else {
            eprintln!("warning: no /metrics from the {component}");
            continue;
        };
        out.extend(drop_counters(component, &page));
    }
    out
}

fn drop_counters(component: &str, page: &str) -> Vec<(String, u64)> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            let (name, labels) = sample.split_once('{')?;
            let value = value.parse::<f64>().ok()? as u64;
            if !name.ends_with("dropped_total") || value == 0 {
                return None;
            }
            let label = labels
                .trim_end_matches('}')
                .split_once('=')?
                .1
                .trim_matches('"');
            let stage = if name.contains("capture") {
                "capture"
            } else {
                component
            };
            Some((format!("{stage}/{label}"), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_by_stage() {
        let page = "# HELP spillway_dropped Envelopes dropped\n\
                    spillway_dropped_total{direction=\"ingress\"} 0\n\
                    spillway_dropped_total{direction=\"egress\"} 12\n\
                    spillway_capture_dropped_total{reason=\"ring_full\"} 3\n\
                    spillway_ingress_total 100\n";
        assert_eq!(
            drop_counters("collector", page),
            vec![
                ("collector/egress".to_owned(), 12),
                ("capture/ring_full".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn check_finds_inconsistent_counts() {
        let ok = RunResult {
            source: "ebpf".into(),
            sent: 100,
            delivered: 98,
            lost: 2,
            ..RunResult::default()
        };
        assert_eq!(check(&ok, 2, 0), Ok(()));
        assert!(check(&ok, 1, 0).unwrap_err().contains("!= sent"));
        assert!(check(&ok, 2, 1).unwrap_err().contains("no emitter wrote"));
        let dup = RunResult {
            dup: 1,
            ..ok.clone()
        };
        assert!(check(&dup, 2, 0).unwrap_err().contains("duplicates"));
        let nothing = RunResult { delivered: 0, ..ok };
        assert!(
            check(&nothing, 100, 0)
                .unwrap_err()
                .contains("nothing delivered")
        );
        let alone = RunResult {
            source: "none".into(),
            sent: 100,
            ..RunResult::default()
        };
        assert_eq!(check(&alone, 0, 0), Ok(()));
    }
}
