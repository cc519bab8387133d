//! The figures of the two scenario suites, and what they are compared with:
//!
//! - `maxrate`: lines written as fast as the app can, every source side by
//!   side in the same invocation: the app's own write rate and its ratio to
//!   the run without a collector, what was lost (and where), how far behind
//!   the last write the last line arrived, CPU and memory;
//! - `shortlived`: many containers started together that print a few lines
//!   and exit: the lines delivered, and how many named their container;
//! - the figures measured before the capture rework ([`ISSUE_BEFORE`], from
//!   the issue), next to what the runs measure now
//!   ([`before_after_rows`]).
//!
//! Pure functions, no I/O.

use std::collections::BTreeMap;

use crate::analysis::{self, COLLECTOR, Config, DOCKER, EBPF, NONE};
use crate::format::{self, NA};
use crate::results::{Overhead, RunResult};

/// The suite of writes at full speed.
pub const MAXRATE: &str = "maxrate";
/// The suite of short-lived containers.
pub const SHORTLIVED: &str = "shortlived";

/// Is `run` one of the scenario suites (not a run at an offered rate)?
pub fn is_scenario(run: &RunResult) -> bool {
    run.suite == MAXRATE || run.suite == SHORTLIVED
}

/// The runs at an offered rate (every suite but the scenarios'): what the
/// targets, the highest rates held, CPU per line and the charts are about.
pub fn paced_runs(runs: &[RunResult]) -> Vec<RunResult> {
    runs.iter().filter(|r| !is_scenario(r)).cloned().collect()
}

/// The shape of a scenario run: how many containers, how many lines each,
/// of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    pub containers: u32,
    pub lines_per_container: u64,
    pub line_bytes: u32,
}

impl Shape {
    pub fn of(run: &RunResult) -> Shape {
        let containers = run.containers.max(1);
        Shape {
            containers,
            lines_per_container: run.sent / u64::from(containers),
            line_bytes: run.line_bytes,
        }
    }

    /// `10 containers × 30,000 lines of 100 B`.
    pub fn describe(&self) -> String {
        let s = if self.containers == 1 { "" } else { "s" };
        format!(
            "{} container{s} × {} lines of {} B",
            self.containers,
            thousands(self.lines_per_container),
            self.line_bytes
        )
    }
}

/// `300000` → `300,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The order of the scenario tables: the reference first, then Docker,
/// then eBPF, then any other source.
fn scenario_rank(source: &str) -> u8 {
    match source {
        NONE => 0,
        DOCKER => 1,
        EBPF => 2,
        _ => 3,
    }
}

/// The shapes of `suite`'s runs, fewest containers first.
pub fn shapes(runs: &[RunResult], suite: &str) -> Vec<Shape> {
    let mut out: Vec<Shape> = runs
        .iter()
        .filter(|r| r.suite == suite)
        .map(Shape::of)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The runs of `suite` in `shape`: the last one of each source (a later
/// invocation with `--append` replaces an earlier one), none, Docker,
/// eBPF, others.
pub fn shape_runs<'a>(runs: &'a [RunResult], suite: &str, shape: Shape) -> Vec<&'a RunResult> {
    let mut last: BTreeMap<(u8, &str), &RunResult> = BTreeMap::new();
    for r in runs
        .iter()
        .filter(|r| r.suite == suite && Shape::of(r) == shape)
    {
        last.insert((scenario_rank(&r.source), &r.source), r);
    }
    last.into_values().collect()
}

/// The app's write rate over that of the run without a collector.
pub fn write_ratio(run: &RunResult, alone: Option<&RunResult>) -> Option<f64> {
    let (rate, alone) = (run.app_lps?, alone?.app_lps?);
    (alone > 0.0).then(|| rate / alone)
}

/// The collector's CPU per delivered line, µs.
pub fn collector_us_per_line(run: &RunResult) -> Option<f64> {
    analysis::per_mline(run.cpu_s.get(COLLECTOR).copied()?, run.delivered)
}

/// Delivered lines that named their container.
pub fn right_tags(run: &RunResult) -> Option<u64> {
    Some(run.delivered.saturating_sub(run.wrong_tags?))
}

/// The drop counters of a run, `stage/reason n`, comma-separated; `0`
/// when none counted anything.
pub fn drops(run: &RunResult) -> String {
    if run.dropped.is_empty() {
        return "0".to_owned();
    }
    run.dropped
        .iter()
        .map(|(stage, n)| format!("{stage} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CPU-time groups of `runs`, in a fixed order (the pipeline's first,
/// then Docker's, then the rest alphabetically).
pub fn cpu_groups(runs: &[&RunResult]) -> Vec<String> {
    const ORDER: [&str; 8] = [
        "collector",
        "router",
        "rlp",
        "consumer",
        "dockerd",
        "containerd",
        "containerd-shim",
        "emitters",
    ];
    let mut groups: Vec<String> = runs.iter().flat_map(|r| r.cpu_s.keys().cloned()).collect();
    groups.sort_by_key(|g| {
        (
            ORDER.iter().position(|o| o == g).unwrap_or(ORDER.len()),
            g.clone(),
        )
    });
    groups.dedup();
    groups
}

/// The run of `source` among `runs`.
fn of<'a>(runs: &[&'a RunResult], source: &str) -> Option<&'a RunResult> {
    runs.iter().copied().find(|r| r.source == source)
}

/// A figure measured before the capture rework, as the issue gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeforeFigure {
    pub figure: &'static str,
    pub none: &'static str,
    pub docker: &'static str,
    pub ebpf: &'static str,
}

/// The figures of issue 11 ("the benchmark says it"), measured on this
/// 2-core VM before the capture rework.
pub const ISSUE_BEFORE: [BeforeFigure; 8] = [
    BeforeFigure {
        figure: "App write rate, 1 container × 300,000 lines of 100 B as fast as it can, lines/s",
        none: "343k",
        docker: "229k",
        ebpf: "100k",
    },
    BeforeFigure {
        figure: "Lines lost, same run",
        none: NA,
        docker: "0",
        ebpf: "up to 11 % (capture/ring_full)",
    },
    BeforeFigure {
        figure: "Lag after the last write, same run",
        none: NA,
        docker: "1.8 s",
        ebpf: NA,
    },
    BeforeFigure {
        figure: "Collector CPU per line, full speed, µs",
        none: NA,
        docker: "7.0",
        ebpf: "6.0 (9.7 with 10 containers)",
    },
    BeforeFigure {
        figure: "Host process, 64 B pipe write",
        none: "319 ns",
        docker: "+2 %",
        ebpf: "1116 ns (+250 %)",
    },
    BeforeFigure {
        figure: "Highest rate held (≤ 0.1 % loss), 1 container, lines/s",
        none: NA,
        docker: "50k",
        ebpf: "25k",
    },
    BeforeFigure {
        figure: "p99 write → consumer, 10 containers at 10k lines/s of 100 B",
        none: NA,
        docker: NA,
        ebpf: "192 ms",
    },
    BeforeFigure {
        figure: "200 containers printing 10 lines and exiting: lines captured",
        none: NA,
        docker: "all",
        ebpf: "13",
    },
];

/// One row of the before/after table: the figure, then before (none,
/// Docker, eBPF), then now (none, Docker, eBPF).
pub type BeforeAfterRow = [String; 7];

/// [`ISSUE_BEFORE`] next to the same figures from `runs` and `overhead`
/// ([`NA`] where the runs have none).
pub fn before_after_rows(runs: &[RunResult], overhead: Option<&Overhead>) -> Vec<BeforeAfterRow> {
    let maxrate_of = |containers: u32| {
        shapes(runs, MAXRATE)
            .into_iter()
            .filter(|s| s.containers == containers)
            .max_by_key(|s| s.lines_per_container)
            .map(|s| shape_runs(runs, MAXRATE, s))
            .unwrap_or_default()
    };
    let one = maxrate_of(1);
    let ten = maxrate_of(10);
    let by_source = |f: &dyn Fn(&str) -> String| -> [String; 3] { [f(NONE), f(DOCKER), f(EBPF)] };

    let write_rate = by_source(&|s| {
        let Some(r) = of(&one, s) else {
            return NA.to_owned();
        };
        let rate = format::opt_rate(r.app_lps);
        match write_ratio(r, of(&one, NONE)).filter(|_| s != NONE) {
            Some(x) => format!("{rate} ({} of none)", format::ratio(x)),
            None => rate,
        }
    });
    let lost = by_source(&|s| match of(&one, s) {
        Some(r) if s != NONE => {
            let drops = if r.dropped.is_empty() {
                String::new()
            } else {
                format!(" ({})", drops(r))
            };
            format!("{} ({} %){drops}", r.lost, format::opt_pct(r.loss_pct))
        }
        _ => NA.to_owned(),
    });
    let lag = by_source(&|s| {
        of(&one, s)
            .and_then(|r| r.lag_ms)
            .map_or_else(|| NA.to_owned(), |ms| format::nanos(ms * 1e6))
    });
    let cpu = by_source(&|s| {
        let one = of(&one, s).and_then(collector_us_per_line);
        let ten = of(&ten, s).and_then(collector_us_per_line);
        match (one, ten) {
            (None, None) => NA.to_owned(),
            (one, None) => format::opt_sig3(one),
            (one, Some(ten)) => format!(
                "{} ({} with 10 containers)",
                format::opt_sig3(one),
                format::sig(ten, 3)
            ),
        }
    });
    let pipe = match overhead {
        None => [NA.to_owned(), NA.to_owned(), NA.to_owned()],
        Some(o) => {
            let without = analysis::median(o.without_ns.iter().copied());
            let ebpf = analysis::median(o.with_ns.iter().copied());
            [
                without.map_or_else(|| NA.to_owned(), |ns| format!("{ns:.0} ns")),
                o.docker_overhead_pct
                    .map_or_else(|| NA.to_owned(), |p| format!("{p:+.1} %")),
                match ebpf {
                    Some(ns) => format!("{ns:.0} ns ({:+.1} %)", o.overhead_pct),
                    None => NA.to_owned(),
                },
            ]
        }
    };
    let paced = paced_runs(runs);
    let held = analysis::held_table(&paced, analysis::MAX_LOSS_PCT);
    // The smallest lines from one container.
    let held_one = held.iter().find(|row| row.config.containers == 1);
    let held_cell = |s: &str| match held_one.and_then(|row| row.by_source.get(s)) {
        Some(h) => format!(
            "{h} ({})",
            Config {
                line_bytes: held_one.map_or(0, |r| r.config.line_bytes),
                containers: 1
            }
        ),
        None => NA.to_owned(),
    };
    let held = [NA.to_owned(), held_cell(DOCKER), held_cell(EBPF)];
    let p99 = by_source(&|s| {
        if s == NONE {
            return NA.to_owned();
        }
        paced
            .iter()
            .rfind(|r| {
                r.source == s
                    && r.containers == 10
                    && r.line_bytes == analysis::TARGET_LINE_BYTES
                    && analysis::same_rate(r.offered_lps, analysis::TARGET_LOW_LPS)
            })
            .and_then(|r| r.p99_ms)
            .map_or_else(|| NA.to_owned(), |p| format!("{} ms", format::ms(p)))
    });
    let shortlived = by_source(&|s| {
        if s == NONE {
            return NA.to_owned();
        }
        let shape = shapes(runs, SHORTLIVED).into_iter().last();
        shape
            .and_then(|shape| {
                shape_runs(runs, SHORTLIVED, shape)
                    .into_iter()
                    .find(|r| r.source == s)
            })
            .map_or_else(
                || NA.to_owned(),
                |r| {
                    let right = right_tags(r)
                        .map_or_else(String::new, |n| format!(", {n} with the right tags"));
                    format!(
                        "{} of {} ({} × {}){right}",
                        r.delivered,
                        r.sent,
                        r.containers,
                        r.sent / u64::from(r.containers.max(1))
                    )
                },
            )
    });
    let now = [write_rate, lost, lag, cpu, pipe, held, p99, shortlived];
    ISSUE_BEFORE
        .iter()
        .zip(now)
        .map(|(b, [n, d, e])| {
            [
                b.figure.to_owned(),
                b.none.to_owned(),
                b.docker.to_owned(),
                b.ebpf.to_owned(),
                n,
                d,
                e,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(30_000), "30,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn shapes_and_the_last_run_of_each_source() {
        let mut runs = fixtures::scenario_runs();
        let shapes_ = shapes(&runs, MAXRATE);
        assert_eq!(
            shapes_,
            vec![
                Shape {
                    containers: 1,
                    lines_per_container: 300_000,
                    line_bytes: 100
                },
                Shape {
                    containers: 10,
                    lines_per_container: 30_000,
                    line_bytes: 100
                }
            ]
        );
        assert_eq!(
            shapes_[1].describe(),
            "10 containers × 30,000 lines of 100 B"
        );
        let sources: Vec<&str> = shape_runs(&runs, MAXRATE, shapes_[0])
            .iter()
            .map(|r| r.source.as_str())
            .collect();
        assert_eq!(sources, [NONE, DOCKER, EBPF]);
        // A later run of the same source and shape replaces the earlier.
        let mut again = runs[0].clone();
        again.app_lps = Some(1.0);
        runs.push(again);
        assert_eq!(shape_runs(&runs, MAXRATE, shapes_[0])[0].app_lps, Some(1.0));
        assert!(paced_runs(&runs).iter().all(|r| !is_scenario(r)));
        assert_eq!(shapes(&runs, SHORTLIVED).len(), 1);
    }

    #[test]
    fn ratios_cpu_tags_and_drops() {
        let runs = fixtures::scenario_runs();
        let shape = shapes(&runs, MAXRATE)[0];
        let of = shape_runs(&runs, MAXRATE, shape);
        let (none, docker, ebpf) = (of[0], of[1], of[2]);
        assert_eq!(write_ratio(none, Some(none)), Some(1.0));
        let r = write_ratio(ebpf, Some(none)).unwrap();
        assert!((r - 0.5).abs() < 1e-9, "{r}");
        assert_eq!(write_ratio(ebpf, None), None);
        // 1.8 collector CPU s over 270,000 delivered lines.
        let us = collector_us_per_line(ebpf).unwrap();
        assert!((us - 6.6667).abs() < 1e-3, "{us}");
        assert_eq!(collector_us_per_line(none), None);
        assert_eq!(drops(ebpf), "capture/ring_full 30000");
        assert_eq!(drops(docker), "0");
        let short = shape_runs(&runs, SHORTLIVED, shapes(&runs, SHORTLIVED)[0]);
        assert_eq!(right_tags(short[2]), Some(10));
        assert_eq!(right_tags(short[0]), None);
        assert_eq!(
            cpu_groups(&of),
            ["collector", "router", "dockerd", "emitters"]
        );
    }

    #[test]
    fn before_and_after() {
        let runs = fixtures::scenario_runs();
        let rows = before_after_rows(&runs, Some(&fixtures::overhead_with_docker()));
        assert_eq!(rows.len(), ISSUE_BEFORE.len());
        assert_eq!(rows[0][1], "343k");
        assert_eq!(rows[0][4], "400k");
        assert_eq!(rows[0][6], "200k (0.5× of none)");
        assert_eq!(rows[1][6], "30000 (10.0 %) (capture/ring_full 30000)");
        assert_eq!(rows[2][5], "1.80 s");
        assert_eq!(rows[3][6], "6.67 (7.50 with 10 containers)");
        assert_eq!(rows[4][4], "505 ns");
        assert_eq!(rows[4][5], "+0.2 %");
        assert_eq!(rows[4][6], "511 ns (+1.2 %)");
        assert_eq!(
            rows[7][5],
            "2000 of 2000 (200 × 10), 2000 with the right tags"
        );
        assert_eq!(rows[7][6], "13 of 2000 (200 × 10), 10 with the right tags");
        // Nothing measured: every "now" cell is –.
        for row in before_after_rows(&[], None) {
            assert!(row[4..].iter().all(|c| c == NA), "{row:?}");
        }
    }
}
