//! One end-to-end run: a fresh router, RLP, consumer and collector (none of
//! them for the `none` source), N emitter containers writing a workload,
//! and what came out.

use std::path::PathBuf;
use std::time::Duration;

use spillway_bench_report::results::RunResult;
use spillway_e2e::{Certs, Collector, Rlp, Router, http_get};
use spillway_proto::now_nanos;

use crate::consumer::Consumer;
use crate::emitters::{Emitters, Start, Workload, Writes};
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
    /// The same for the runs at full speed and of short-lived containers,
    /// where a source that lags must be waited for: its lag is measured,
    /// not counted as loss.
    pub lag_idle: Duration,
    /// The bound of that wait, from the emitters' end.
    pub lag_limit: Duration,
    /// Flags given to the collector, the router and the RLP alike.
    pub flags: Vec<String>,
}

/// One point of the plan.
#[derive(Clone, Debug)]
pub struct Case {
    pub suite: &'static str,
    pub source: Source,
    pub containers: u32,
    pub line_bytes: u32,
    /// Lines/s, all containers together; 0: as fast as the emitters can
    /// (then `lines` says how many).
    pub offered: u64,
    /// Lines per container; `None`: the offered rate for the setup's
    /// duration.
    pub lines: Option<u64>,
    pub start: Start,
}

impl Case {
    /// A run at an offered rate for the setup's duration, the emitters
    /// starting on a file.
    pub fn paced(
        suite: &'static str,
        source: Source,
        containers: u32,
        line_bytes: u32,
        offered: u64,
    ) -> Case {
        Case {
            suite,
            source,
            containers,
            line_bytes,
            offered,
            lines: None,
            start: Start::OnFile,
        }
    }

    /// Does the drain wait for a lagging source ([`Setup::lag_idle`])?
    fn waits_for_lag(&self) -> bool {
        self.offered == 0 || self.start == Start::Together
    }
}

/// When the consumer got the last line minus when the last line was
/// written, ms (`None` without either).
pub fn lag_ms(last_rx_ns: i64, last_write_ns: i64) -> Option<f64> {
    (last_rx_ns > 0 && last_write_ns > 0).then(|| (last_rx_ns - last_write_ns) as f64 / 1e6)
}

/// The consistency of a run's counts, checked by `--check` (the CI smoke
/// test of the harness): every line written was either delivered or found
/// missing, and nothing unexpected arrived.
///
/// Every delivered line must name its container (source id and tags), and
/// something must be delivered, except from short-lived containers: those
/// a source may miss entirely (that is what the suite measures).
pub fn check(r: &RunResult, missing: u64, garbled: u64) -> Result<(), String> {
    let mut problems = Vec::new();
    if r.source == "none" {
        return Ok(()); // nothing to deliver
    }
    if let Some(wrong) = r.wrong_tags.filter(|&w| w > 0) {
        problems.push(format!("{wrong} lines without the right container tags"));
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
    if r.delivered == 0 && r.suite != SHORTLIVED {
        problems.push("nothing delivered".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The suite of short-lived containers.
pub const SHORTLIVED: &str = "shortlived";
/// The suite of writes at full speed.
pub const MAXRATE: &str = "maxrate";

/// A run's result with the two counts only the check needs.
pub struct Outcome {
    pub result: RunResult,
    pub missing: u64,
    pub garbled: u64,
}

pub async fn run(setup: &Setup, case: &Case, run_no: u32) -> anyhow::Result<Outcome> {
    let n = case.containers.max(1);
    let rate = if case.offered == 0 {
        0
    } else {
        (case.offered / u64::from(n)).max(1)
    };
    let lines = case
        .lines
        .unwrap_or_else(|| (rate as f64 * setup.duration.as_secs_f64()).ceil() as u64);
    let sent = lines * u64::from(n);
    let prefix = format!("spillway-bench-{}-{run_no}-", std::process::id());

    // The pipeline, consumer first so that it misses nothing.
    let mut pipeline = None;
    if case.source != Source::None {
        let certs = &setup.certs;
        let flags: Vec<&str> = setup.flags.iter().map(String::as_str).collect();
        let router = Router::start(certs, &flags);
        let rlp = Rlp::start(certs, &[&router], &flags);
        let consumer = Consumer::start(&rlp, certs, prefix.clone(), n, lines).await;
        let collector_flags = [&["--source", case.source.name()], &flags[..]].concat();
        // Started once its /health says capture and shipping are ready.
        let mut collector = Collector::start(certs, &[&router], &collector_flags);
        if !collector.proc.alive() {
            anyhow::bail!(
                "the {} collector exited at start:\n{}",
                case.source.name(),
                log_tail(&collector.proc.log(), 20)
            );
        }
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
        start: case.start,
    };
    let emitter = setup.emitter.clone();
    let emitters = tokio::task::spawn_blocking({
        let (prefix, work) = (prefix.clone(), work.clone());
        move || Emitters::start(&emitter, &prefix, n, &work)
    })
    .await??;
    if let Some((.., consumer)) = &pipeline {
        consumer.expect_ids(emitters.ids.clone());
    }
    // Measure from the common start: container creation is not the
    // workload.
    let sampler = Sampler::start(named);
    let start_at = now_nanos();
    let limit = if case.offered == 0 {
        Duration::from_secs(300)
    } else {
        setup.duration * 5 + Duration::from_secs(60)
    };
    let (emitters, emit_end) = tokio::task::spawn_blocking(move || {
        let end = emitters.release().and_then(|()| emitters.wait(limit));
        (emitters, end)
    })
    .await?;
    let emit_end = emit_end?;
    let mut drain_end = None;
    if let Some((.., consumer)) = &pipeline {
        let (idle, limit) = if case.waits_for_lag() {
            (setup.lag_idle, setup.lag_limit)
        } else {
            (setup.idle, setup.duration * 4 + Duration::from_secs(30))
        };
        drain_end = Some(consumer.drain(sent, idle, limit).await);
    }
    let end = now_nanos();
    let usage = sampler.finish();
    drop(emitters);
    let writes = Writes::read(&start_dir);
    let _ = std::fs::remove_dir_all(&start_dir);
    if writes.reports != n {
        eprintln!(
            "warning: {} of {n} emitters reported their writes",
            writes.reports
        );
    }

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
        app_lps: writes.lines_per_s(),
        drain_end: drain_end.map(|d| d.name().to_owned()),
        ..RunResult::default()
    };
    let (mut missing, mut garbled) = (0, 0);
    if let Some((router, rlp, mut collector, consumer)) = pipeline {
        if !collector.proc.alive() {
            eprintln!(
                "warning: the collector exited during the run:\n{}",
                log_tail(&collector.proc.log(), 20)
            );
        }
        let pages = metrics_pages(&[
            ("collector", collector.http_port),
            ("router", router.metrics_port),
            ("rlp", rlp.metrics_port),
        ]);
        for (component, page) in &pages {
            result.dropped.extend(drop_counters(component, page));
            if let Some(mean) = batch_envelopes(page) {
                result.batch_envelopes.insert(component.to_string(), mean);
            }
        }
        let tally = consumer.finish().await?;
        let h = &tally.latency_us;
        result.delivered = tally.distinct;
        result.lost = sent - tally.distinct.min(sent);
        result.dup = tally.dup;
        result.wrong_tags = Some(tally.wrong_tags);
        result.loss_pct = Some(100.0 * result.lost as f64 / sent as f64);
        result.lag_ms = lag_ms(tally.last_rx, writes.last_ns);
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

/// The last `n` lines of a log.
fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn secs(nanos: i64) -> f64 {
    (nanos.max(1) as f64) / 1e9
}

/// The `/metrics` page of each component that answers.
fn metrics_pages<'a>(ports: &[(&'a str, u16)]) -> Vec<(&'a str, String)> {
    ports
        .iter()
        .filter_map(|(component, port)| match http_get(*port, "/metrics") {
            Some(page) => Some((*component, page)),
            None => {
                eprintln!("warning: no /metrics from the {component}");
                None
            }
        })
        .collect()
}

/// The value of the unlabelled sample `name` on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        let (sample, value) = l.rsplit_once(' ')?;
        (sample == name).then(|| value.parse().ok())?
    })
}

/// Mean envelopes per batch a component sent on, if it sent any.
fn batch_envelopes(page: &str) -> Option<f64> {
    let batches = sample(page, "spillway_egress_batches_total")?;
    let envelopes = sample(page, "spillway_egress_total")?;
    (batches > 0.0).then(|| envelopes / batches)
}

/// Non-zero drop counters of a component's `/metrics` page, keyed
/// `component/label` (`collector/egress`, `capture/ring_full`, …).
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
            // Every label's value: `egress`, or `egress/consumer_slow`.
            let label = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| Some(kv.split_once('=')?.1.trim_matches('"')))
                .collect::<Vec<_>>()
                .join("/");
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
    fn batch_size_from_the_egress_counters() {
        let page = "# TYPE spillway_egress_total counter\n\
                    spillway_egress_total 300\n\
                    spillway_egress_batches_total 4\n\
                    spillway_dropped_total{direction=\"egress\"} 0\n";
        assert_eq!(batch_envelopes(page), Some(75.0));
        assert_eq!(batch_envelopes("spillway_egress_total 3\n"), None);
        let idle = "spillway_egress_total 0\nspillway_egress_batches_total 0\n";
        assert_eq!(batch_envelopes(idle), None);
    }

    #[test]
    fn drop_counters_by_stage() {
        let page = "# HELP spillway_dropped Envelopes dropped\n\
                    spillway_dropped_total{direction=\"ingress\"} 0\n\
                    spillway_dropped_total{direction=\"egress\"} 12\n\
                    spillway_dropped_total{direction=\"egress\",reason=\"no_subscriber\"} 2\n\
                    spillway_capture_dropped_total{reason=\"ring_full\"} 3\n\
                    spillway_ingress_total 100\n";
        assert_eq!(
            drop_counters("collector", page),
            vec![
                ("collector/egress".to_owned(), 12),
                ("collector/egress/no_subscriber".to_owned(), 2),
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

    #[test]
    fn check_wants_the_right_tags_and_lets_short_lived_lines_be_missed() {
        let ok = RunResult {
            source: "ebpf".into(),
            suite: SHORTLIVED.into(),
            sent: 100,
            delivered: 98,
            lost: 2,
            wrong_tags: Some(0),
            ..RunResult::default()
        };
        assert_eq!(check(&ok, 2, 0), Ok(()));
        let wrong = RunResult {
            wrong_tags: Some(3),
            ..ok.clone()
        };
        assert!(check(&wrong, 2, 0).unwrap_err().contains("3 lines without"));
        let none_delivered = RunResult {
            delivered: 0,
            lost: 100,
            ..ok.clone()
        };
        assert_eq!(check(&none_delivered, 100, 0), Ok(()));
        let maxrate = RunResult {
            suite: MAXRATE.into(),
            ..none_delivered
        };
        assert!(check(&maxrate, 100, 0).unwrap_err().contains("nothing"));
    }

    #[test]
    fn lag_after_the_last_write() {
        assert_eq!(lag_ms(3_500_000_000, 1_500_000_000), Some(2000.0));
        // The tail was lost: the last line arrived before the last write.
        assert_eq!(lag_ms(1_000_000_000, 1_500_000_000), Some(-500.0));
        assert_eq!(lag_ms(0, 1_500_000_000), None, "nothing delivered");
        assert_eq!(lag_ms(1, 0), None, "no emitter reported");
    }

    #[test]
    fn cases_that_wait_for_a_lagging_source() {
        let paced = Case::paced("sweep", Source::Docker, 1, 64, 10_000);
        assert!(!paced.waits_for_lag());
        let full = Case {
            offered: 0,
            lines: Some(100),
            ..paced.clone()
        };
        assert!(full.waits_for_lag());
        let together = Case {
            start: Start::Together,
            ..paced
        };
        assert!(together.waits_for_lag());
    }
}
