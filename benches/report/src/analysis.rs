//! The numbers the report is made of, computed from the runs: the highest
//! rate each source holds, CPU per line, and the project's targets. Pure
//! functions, no I/O; absent runs give `None` or [`Verdict::NotMeasured`],
//! never a panic.

use std::collections::BTreeMap;
use std::fmt;

use crate::format;
use crate::results::{Overhead, RunResult};

/// The loss a run may have and still "hold" its rate, %.
pub const MAX_LOSS_PCT: f64 = 0.1;
/// The eBPF collector source.
pub const EBPF: &str = "ebpf";
/// The Docker logs API source (the logspout way).
pub const DOCKER: &str = "docker";
/// No collector: what the emitters, dockerd and containerd cost alone.
pub const NONE: &str = "none";
/// The `cpu_s` / `rss_mb` key of the collector process.
pub const COLLECTOR: &str = "collector";

/// Target 1: how many times the Docker source's held rate eBPF must hold.
pub const TARGET_RATIO: f64 = 5.0;
/// Targets 2, 3 and 5: the line size of the target points, bytes.
pub const TARGET_LINE_BYTES: u32 = 100;
/// Targets 2 and 5: the high target rate, lines/s.
pub const TARGET_HIGH_LPS: f64 = 100_000.0;
/// Target 3: the low target rate, lines/s.
pub const TARGET_LOW_LPS: f64 = 10_000.0;
/// Target 2: the collector's CPU budget at the high rate, cores.
pub const TARGET_MAX_CORES: f64 = 0.5;
/// Target 3: the p99 latency budget at the low rate, ms.
pub const TARGET_MAX_P99_MS: f64 = 20.0;
/// Target 4: the slowdown budget of non-container writes, %.
pub const TARGET_MAX_OVERHEAD_PCT: f64 = 5.0;
/// Target 5: the collector's memory budget at the high rate, MiB.
pub const TARGET_MAX_RSS_MIB: f64 = 64.0;

/// A point of the sweep's grid: the line size and the number of
/// containers. Runs of the same configuration are compared with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Config {
    /// Bytes per line, newline included.
    pub line_bytes: u32,
    /// Emitter containers.
    pub containers: u32,
}

impl Config {
    /// The configuration a run belongs to.
    pub fn of(run: &RunResult) -> Config {
        Config {
            line_bytes: run.line_bytes,
            containers: run.containers,
        }
    }

    /// Does `run` belong to this configuration?
    pub fn contains(&self, run: &RunResult) -> bool {
        Config::of(run) == *self
    }

    /// Long form, for headings: `512 B lines, 10 containers`.
    pub fn describe(&self) -> String {
        let s = if self.containers == 1 { "" } else { "s" };
        format!(
            "{} B lines, {} container{s}",
            self.line_bytes, self.containers
        )
    }
}

impl fmt::Display for Config {
    /// Short form, for table cells: `512 B × 10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} B × {}", self.line_bytes, self.containers)
    }
}

/// Are two rates the same point of the plan (within 1%)?
pub fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.01 * a.abs().max(b.abs())
}

/// The order sources appear in: eBPF, Docker, any other collector, none.
fn source_rank(source: &str) -> u8 {
    match source {
        EBPF => 0,
        DOCKER => 1,
        NONE => 3,
        _ => 2,
    }
}

/// Sorts source names in report order (eBPF, Docker, others, none).
pub fn sort_sources(sources: &mut [String]) {
    sources.sort_by(|a, b| source_rank(a).cmp(&source_rank(b)).then_with(|| a.cmp(b)));
}

/// The distinct sources of `runs`, in report order.
pub fn sources(runs: &[RunResult]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for run in runs {
        if !out.contains(&run.source) {
            out.push(run.source.clone());
        }
    }
    sort_sources(&mut out);
    out
}

/// The sources that have a collector (every source but `none`).
pub fn collector_sources(runs: &[RunResult]) -> Vec<String> {
    sources(runs).into_iter().filter(|s| s != NONE).collect()
}

/// The distinct configurations of `runs`, by line size then containers.
pub fn configs(runs: &[RunResult]) -> Vec<Config> {
    let mut out: Vec<Config> = runs.iter().map(Config::of).collect();
    out.sort();
    out.dedup();
    out
}

/// The distinct line sizes of `runs`, ascending.
pub fn line_sizes(runs: &[RunResult]) -> Vec<u32> {
    let mut out: Vec<u32> = runs.iter().map(|r| r.line_bytes).collect();
    out.sort();
    out.dedup();
    out
}

/// The distinct suites of `runs`, in order of first appearance.
pub fn suites<'a>(runs: impl IntoIterator<Item = &'a RunResult>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for run in runs {
        if !out.contains(&run.suite.as_str()) {
            out.push(&run.suite);
        }
    }
    out
}

/// The runs of `source` in `config`, by offered rate.
pub fn runs_of<'a>(runs: &'a [RunResult], source: &str, config: Config) -> Vec<&'a RunResult> {
    let mut out: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.source == source && config.contains(r))
        .collect();
    out.sort_by(|a, b| {
        a.offered_lps
            .total_cmp(&b.offered_lps)
            .then_with(|| a.suite.cmp(&b.suite))
    });
    out
}

/// The run of `source` at the same configuration and rate as `run`,
/// preferably of the same suite.
pub fn counterpart<'a>(
    runs: &'a [RunResult],
    run: &RunResult,
    source: &str,
) -> Option<&'a RunResult> {
    let mut matching = runs.iter().filter(|r| {
        r.source == source
            && Config::of(r) == Config::of(run)
            && same_rate(r.offered_lps, run.offered_lps)
    });
    let first = matching.clone().next();
    matching.find(|r| r.suite == run.suite).or(first)
}

/// The collector's CPU seconds over the run, when measured.
pub fn collector_cpu_s(run: &RunResult) -> Option<f64> {
    run.cpu_s.get(COLLECTOR).copied()
}

/// The collector's peak resident memory, MiB, when measured.
pub fn collector_rss_mib(run: &RunResult) -> Option<f64> {
    run.rss_mb.get(COLLECTOR).copied()
}

/// The collector's average CPU use over the run, in cores.
pub fn collector_cores(run: &RunResult) -> Option<f64> {
    let cpu = collector_cpu_s(run)?;
    (run.duration_s > 0.0).then(|| cpu / run.duration_s)
}

/// CPU seconds per million lines (numerically the same as CPU ms per
/// 1,000 lines); `None` when nothing was delivered.
pub fn per_mline(cpu_s: f64, lines: u64) -> Option<f64> {
    (lines > 0).then(|| cpu_s / lines as f64 * 1e6)
}

/// The collector's CPU seconds per million delivered lines.
pub fn collector_cpu_per_mline(run: &RunResult) -> Option<f64> {
    per_mline(collector_cpu_s(run)?, run.delivered)
}

/// The `none` run (no collector) at the same line size, containers and
/// offered rate as `run`, preferably of the same suite.
pub fn baseline<'a>(runs: &'a [RunResult], run: &RunResult) -> Option<&'a RunResult> {
    if run.source == NONE {
        return None;
    }
    counterpart(runs, run, NONE).filter(|b| !b.cpu_s.is_empty())
}

/// What collecting added to the host's CPU over the run: the run's total
/// CPU minus that of its [`baseline`], seconds.
pub fn added_cpu_s(runs: &[RunResult], run: &RunResult) -> Option<f64> {
    let base = baseline(runs, run)?;
    (!run.cpu_s.is_empty()).then(|| run.cpu_total() - base.cpu_total())
}

/// [`added_cpu_s`] per million delivered lines.
pub fn added_cpu_per_mline(runs: &[RunResult], run: &RunResult) -> Option<f64> {
    per_mline(added_cpu_s(runs, run)?, run.delivered)
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The highest rate a source held in one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxHeld {
    /// The highest offered rate of a run that held, lines/s; `None` when
    /// no run held.
    pub rate: Option<f64>,
    /// Every run held: the source's limit lies above `rate` (the sweep
    /// stopped for another reason).
    pub all_held: bool,
    /// How many runs there were.
    pub runs: usize,
    /// The lowest offered rate tried, lines/s.
    pub lowest_offered: f64,
}

impl fmt::Display for MaxHeld {
    /// `200k`, `≥ 400k` (every run held), `none (from 10k)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate {
            Some(rate) if self.all_held => write!(f, "≥ {}", format::rate(rate)),
            Some(rate) => f.write_str(&format::rate(rate)),
            None => write!(f, "none (from {})", format::rate(self.lowest_offered)),
        }
    }
}

/// The highest offered rate `source` held in `config` with at most
/// `max_loss_pct` loss ([`RunResult::holds`]); `None` without runs.
pub fn max_held(
    runs: &[RunResult],
    source: &str,
    config: Config,
    max_loss_pct: f64,
) -> Option<MaxHeld> {
    let runs = runs_of(runs, source, config);
    let lowest_offered = runs.first()?.offered_lps;
    let held: Vec<f64> = runs
        .iter()
        .filter(|r| r.holds(max_loss_pct))
        .map(|r| r.offered_lps)
        .collect();
    Some(MaxHeld {
        rate: held.iter().copied().reduce(f64::max),
        all_held: held.len() == runs.len(),
        runs: runs.len(),
        lowest_offered,
    })
}

/// Whether a ratio is exact or only a bound (a side's limit was not found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Exact,
    AtLeast,
    AtMost,
}

/// A ratio of two held rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    pub value: f64,
    pub bound: Bound,
}

impl Ratio {
    /// Is the ratio certainly at least `x`?
    pub fn surely_at_least(&self, x: f64) -> bool {
        self.value >= x && self.bound != Bound::AtMost
    }

    /// Is the ratio certainly below `x`?
    pub fn surely_below(&self, x: f64) -> bool {
        self.value < x && self.bound != Bound::AtLeast
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.bound {
            Bound::Exact => "",
            Bound::AtLeast => "≥ ",
            Bound::AtMost => "≤ ",
        };
        write!(f, "{prefix}{}", format::ratio(self.value))
    }
}

/// `num`'s held rate over `den`'s. When `den` held nothing, its limit is
/// below its lowest rate, so the ratio is at least `num / lowest`. `None`
/// when `num` held nothing, or when neither limit was found.
pub fn held_ratio(num: &MaxHeld, den: &MaxHeld) -> Option<Ratio> {
    let a = num.rate?;
    match den.rate {
        Some(b) if b > 0.0 => {
            let bound = match (num.all_held, den.all_held) {
                (false, false) => Bound::Exact,
                (true, false) => Bound::AtLeast,
                (false, true) => Bound::AtMost,
                (true, true) => return None,
            };
            Some(Ratio {
                value: a / b,
                bound,
            })
        }
        None if den.lowest_offered > 0.0 => Some(Ratio {
            value: a / den.lowest_offered,
            bound: Bound::AtLeast,
        }),
        _ => None,
    }
}

/// One line of the "highest rate held" table.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldRow {
    pub config: Config,
    /// By collector source; a source without runs in `config` is absent.
    pub by_source: BTreeMap<String, MaxHeld>,
    /// eBPF's held rate over Docker's.
    pub ebpf_over_docker: Option<Ratio>,
}

/// The highest rate each collector source held, per configuration with
/// collector runs.
pub fn held_table(runs: &[RunResult], max_loss_pct: f64) -> Vec<HeldRow> {
    let sources = collector_sources(runs);
    configs(runs)
        .into_iter()
        .filter_map(|config| {
            let by_source: BTreeMap<String, MaxHeld> = sources
                .iter()
                .filter_map(|s| Some((s.clone(), max_held(runs, s, config, max_loss_pct)?)))
                .collect();
            if by_source.is_empty() {
                return None;
            }
            let ebpf_over_docker = match (by_source.get(EBPF), by_source.get(DOCKER)) {
                (Some(e), Some(d)) => held_ratio(e, d),
                _ => None,
            };
            Some(HeldRow {
                config,
                by_source,
                ebpf_over_docker,
            })
        })
        .collect()
}

/// One line of the CPU-per-line table: a collector run.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuRow<'a> {
    pub run: &'a RunResult,
    /// [`collector_cpu_per_mline`].
    pub collector_per_mline: Option<f64>,
    /// [`added_cpu_per_mline`].
    pub added_per_mline: Option<f64>,
    /// This run's collector CPU per line over the eBPF run's at the same
    /// configuration and rate (`None` for eBPF runs themselves).
    pub vs_ebpf_collector: Option<f64>,
    /// The same ratio for the added CPU.
    pub vs_ebpf_added: Option<f64>,
}

fn ratio_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

/// CPU per line of every collector run, by configuration, rate and source.
pub fn cpu_table(runs: &[RunResult]) -> Vec<CpuRow<'_>> {
    let mut rows: Vec<CpuRow> = runs
        .iter()
        .filter(|r| r.source != NONE)
        .map(|run| {
            let collector_per_mline = collector_cpu_per_mline(run);
            let added_per_mline = added_cpu_per_mline(runs, run);
            let ebpf = (run.source != EBPF)
                .then(|| counterpart(runs, run, EBPF))
                .flatten();
            let (vs_ebpf_collector, vs_ebpf_added) = match ebpf {
                Some(e) => (
                    ratio_of(collector_per_mline, collector_cpu_per_mline(e)),
                    ratio_of(added_per_mline, added_cpu_per_mline(runs, e)),
                ),
                None => (None, None),
            };
            CpuRow {
                run,
                collector_per_mline,
                added_per_mline,
                vs_ebpf_collector,
                vs_ebpf_added,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        Config::of(a.run)
            .cmp(&Config::of(b.run))
            .then_with(|| a.run.offered_lps.total_cmp(&b.run.offered_lps))
            .then_with(|| source_rank(&a.run.source).cmp(&source_rank(&b.run.source)))
            .then_with(|| a.run.source.cmp(&b.run.source))
            .then_with(|| a.run.suite.cmp(&b.run.suite))
    });
    rows
}

/// Whether a target was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    NotMet,
    /// Measured, but the runs cannot tell (e.g. the emitters could not
    /// offer the rate, or a limit was not reached).
    Inconclusive,
    NotMeasured,
}

impl Verdict {
    /// How bad a verdict is, to keep the worst of several runs.
    fn severity(self) -> u8 {
        match self {
            Verdict::Met => 0,
            Verdict::NotMeasured => 1,
            Verdict::Inconclusive => 2,
            Verdict::NotMet => 3,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Met => "✅ met",
            Verdict::NotMet => "❌ not met",
            Verdict::Inconclusive => "⚠️ inconclusive",
            Verdict::NotMeasured => "not measured",
        })
    }
}

/// One of the project's targets, checked against the runs.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetCheck {
    /// The target, as the report states it.
    pub target: &'static str,
    /// What was measured, in words and numbers.
    pub measured: String,
    pub verdict: Verdict,
}

/// CPU per line of eBPF and Docker at one rate of one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuComparison {
    /// The offered rate compared, lines/s.
    pub rate: f64,
    /// `added` ([`added_cpu_per_mline`]) when both runs have a baseline,
    /// else `collector` ([`collector_cpu_per_mline`]).
    pub metric: &'static str,
    /// CPU seconds per million lines.
    pub ebpf: f64,
    pub docker: f64,
}

/// Target 1 in one configuration: the held-rate ratio and the CPU per line.
#[derive(Clone, Debug, PartialEq)]
pub struct RatioCheck {
    pub config: Config,
    pub ratio: Option<Ratio>,
    pub cpu: Option<CpuComparison>,
}

/// Compares CPU per line of two runs: added CPU when both have it, else
/// the collector's.
fn compare_cpu(runs: &[RunResult], ebpf: &RunResult, docker: &RunResult) -> Option<CpuComparison> {
    let pair = |f: &dyn Fn(&RunResult) -> Option<f64>| Some((f(ebpf)?, f(docker)?));
    let (metric, (e, d)) = match pair(&|r| added_cpu_per_mline(runs, r)) {
        Some(p) => ("added", p),
        None => ("collector", pair(&collector_cpu_per_mline)?),
    };
    Some(CpuComparison {
        rate: ebpf.offered_lps,
        metric,
        ebpf: e,
        docker: d,
    })
}

/// Target 1, per configuration with both eBPF and Docker runs. CPU per
/// line is compared at the highest rate both held, or else at the lowest
/// rate both ran.
pub fn ratio_checks(runs: &[RunResult]) -> Vec<RatioCheck> {
    configs(runs)
        .into_iter()
        .filter_map(|config| {
            let e = max_held(runs, EBPF, config, MAX_LOSS_PCT)?;
            let d = max_held(runs, DOCKER, config, MAX_LOSS_PCT)?;
            let pairs: Vec<(&RunResult, &RunResult)> = runs_of(runs, EBPF, config)
                .into_iter()
                .filter_map(|e| Some((e, counterpart(runs, e, DOCKER)?)))
                .collect();
            let held = pairs
                .iter()
                .rev()
                .find(|(e, d)| e.holds(MAX_LOSS_PCT) && d.holds(MAX_LOSS_PCT));
            let cpu = held
                .or(pairs.first())
                .and_then(|(e, d)| compare_cpu(runs, e, d));
            Some(RatioCheck {
                config,
                ratio: held_ratio(&e, &d),
                cpu,
            })
        })
        .collect()
}

/// The wording of target 1.
pub const TARGET_1: &str = "eBPF holds ≥ 5× the lines/s the Docker-API source holds at ≤ 0.1 % loss, at no more CPU per line";
/// The wording of target 2.
pub const TARGET_2: &str =
    "100,000 lines/s of 100 B lines end to end with 0 loss, collector CPU under half a core";
/// The wording of target 3.
pub const TARGET_3: &str = "p99 latency < 20 ms at 10,000 lines/s (eBPF)";
/// The wording of target 4.
pub const TARGET_4: &str = "Overhead on non-container writes < 5 %";
/// The wording of target 5.
pub const TARGET_5: &str = "Collector RSS < 64 MiB at 100,000 lines/s";

/// Target 1: eBPF ≥ 5× Docker's held rate, at no more CPU per line, in
/// every configuration where both ran.
pub fn target_ratio(runs: &[RunResult]) -> TargetCheck {
    let checks = ratio_checks(runs);
    if checks.is_empty() {
        return TargetCheck {
            target: TARGET_1,
            measured: "no configuration has both eBPF and Docker runs".into(),
            verdict: Verdict::NotMeasured,
        };
    }
    let mut parts = Vec::new();
    let lowest = checks
        .iter()
        .filter_map(|c| Some((c.ratio?, c.config)))
        .min_by(|a, b| a.0.value.total_cmp(&b.0.value));
    match lowest {
        Some((ratio, config)) => parts.push(format!(
            "lowest ratio {ratio} ({config}) over {} configuration{}",
            checks.len(),
            if checks.len() == 1 { "" } else { "s" }
        )),
        None => parts.push("no ratio: eBPF held no rate".into()),
    }
    let compared: Vec<&CpuComparison> = checks.iter().filter_map(|c| c.cpu.as_ref()).collect();
    if !compared.is_empty() {
        let cheaper = compared.iter().filter(|c| c.ebpf <= c.docker).count();
        let metric = if compared.iter().all(|c| c.metric == "added") {
            "added"
        } else {
            "collector/added"
        };
        parts.push(format!(
            "CPU per line ({metric}) eBPF ≤ Docker in {cheaper} of {}",
            compared.len()
        ));
    }
    let not_met = checks.iter().any(|c| {
        c.ratio.is_some_and(|r| r.surely_below(TARGET_RATIO))
            || c.cpu.as_ref().is_some_and(|c| c.ebpf > c.docker)
    });
    let met = checks.iter().all(|c| {
        c.ratio.is_some_and(|r| r.surely_at_least(TARGET_RATIO))
            && c.cpu.as_ref().is_some_and(|c| c.ebpf <= c.docker)
    });
    TargetCheck {
        target: TARGET_1,
        measured: parts.join("; "),
        verdict: if not_met {
            Verdict::NotMet
        } else if met {
            Verdict::Met
        } else {
            Verdict::Inconclusive
        },
    }
}

/// eBPF runs at `rate`, of 100 B lines when there are such, else of any
/// line size.
fn target_runs(runs: &[RunResult], rate: f64) -> Vec<&RunResult> {
    let at_rate: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.source == EBPF && same_rate(r.offered_lps, rate))
        .collect();
    let sized: Vec<&RunResult> = at_rate
        .iter()
        .copied()
        .filter(|r| r.line_bytes == TARGET_LINE_BYTES)
        .collect();
    if sized.is_empty() { at_rate } else { sized }
}

/// Keeps the worst of several (verdict, measured) pairs; the first on ties.
fn worst(checks: Vec<(Verdict, String)>) -> Option<(Verdict, String)> {
    let n = checks.len();
    let mut worst: Option<(Verdict, String)> = None;
    for check in checks {
        if worst
            .as_ref()
            .is_none_or(|w| check.0.severity() > w.0.severity())
        {
            worst = Some(check);
        }
    }
    worst.map(|(v, m)| {
        if n > 1 {
            (v, format!("{m}, the worst of {n} runs"))
        } else {
            (v, m)
        }
    })
}

/// Target 2: 100 B lines at 100k lines/s, no loss, the collector under
/// half a core.
pub fn target_100k(runs: &[RunResult]) -> TargetCheck {
    let checks: Vec<(Verdict, String)> = runs
        .iter()
        .filter(|r| {
            r.source == EBPF
                && r.line_bytes == TARGET_LINE_BYTES
                && same_rate(r.offered_lps, TARGET_HIGH_LPS)
        })
        .map(|r| {
            let cores = collector_cores(r);
            let measured = format!(
                "loss {} % ({} lines), delivered {} lines/s, collector {} cores ({} containers)",
                format::opt_pct(r.loss_pct),
                r.lost,
                format::opt_rate(r.delivered_lps),
                cores.map_or_else(|| format::NA.to_owned(), |c| format!("{c:.2}")),
                r.containers,
            );
            let lossless = r.lost == 0 && r.loss_pct == Some(0.0);
            let verdict = if !lossless || cores.is_some_and(|c| c >= TARGET_MAX_CORES) {
                Verdict::NotMet
            } else if r.emitted_lps < 0.9 * r.offered_lps {
                return (
                    Verdict::Inconclusive,
                    format!(
                        "{measured}; the emitters wrote only {} lines/s",
                        format::rate(r.emitted_lps)
                    ),
                );
            } else if cores.is_none() {
                Verdict::Inconclusive
            } else {
                Verdict::Met
            };
            (verdict, measured)
        })
        .collect();
    let (verdict, measured) = worst(checks).unwrap_or((
        Verdict::NotMeasured,
        "no eBPF run of 100 B lines at 100k lines/s".into(),
    ));
    TargetCheck {
        target: TARGET_2,
        measured,
        verdict,
    }
}

/// Target 3: eBPF p99 latency under 20 ms at 10k lines/s.
pub fn target_latency(runs: &[RunResult]) -> TargetCheck {
    let mut measured: Vec<(f64, &RunResult)> = target_runs(runs, TARGET_LOW_LPS)
        .into_iter()
        .filter_map(|r| Some((r.p99_ms?, r)))
        .collect();
    // The highest p99 first, so that it is the one shown on a tie.
    measured.sort_by(|a, b| b.0.total_cmp(&a.0));
    let checks: Vec<(Verdict, String)> = measured
        .into_iter()
        .map(|(p99, r)| {
            let verdict = if p99 < TARGET_MAX_P99_MS {
                Verdict::Met
            } else {
                Verdict::NotMet
            };
            (
                verdict,
                format!("p99 {} ms ({})", format::ms(p99), Config::of(r)),
            )
        })
        .collect();
    let (verdict, measured) = worst(checks).unwrap_or((
        Verdict::NotMeasured,
        "no eBPF run with latencies at 10k lines/s".into(),
    ));
    TargetCheck {
        target: TARGET_3,
        measured,
        verdict,
    }
}

/// Target 4: non-container writes slowed by less than 5%.
pub fn target_overhead(overhead: Option<&Overhead>) -> TargetCheck {
    let (verdict, measured) = match overhead {
        None => (Verdict::NotMeasured, "no overhead measurement".to_owned()),
        Some(o) if o.with_ns.is_empty() => (
            Verdict::NotMeasured,
            "the eBPF source was not measured".to_owned(),
        ),
        Some(o) if !o.overhead_pct.is_finite() => {
            (Verdict::NotMeasured, "no valid overhead figure".to_owned())
        }
        Some(o) => (
            if o.overhead_pct < TARGET_MAX_OVERHEAD_PCT {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
            format!(
                "{:+.1} % per {} B pipe write (median of {})",
                o.overhead_pct,
                o.write_bytes,
                o.with_ns.len().min(o.without_ns.len()).max(1)
            ),
        ),
    };
    TargetCheck {
        target: TARGET_4,
        measured,
        verdict,
    }
}

/// Target 5: the collector's peak RSS under 64 MiB at 100k lines/s.
pub fn target_rss(runs: &[RunResult]) -> TargetCheck {
    let mut measured: Vec<(f64, &RunResult)> = target_runs(runs, TARGET_HIGH_LPS)
        .into_iter()
        .filter_map(|r| Some((collector_rss_mib(r)?, r)))
        .collect();
    measured.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (verdict, text) = match measured.first() {
        None => (
            Verdict::NotMeasured,
            "no eBPF run with memory figures at 100k lines/s".to_owned(),
        ),
        Some(&(rss, run)) => (
            if rss < TARGET_MAX_RSS_MIB {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
            format!(
                "peak {rss:.1} MiB ({}){}",
                Config::of(run),
                if measured.len() > 1 {
                    format!(", the worst of {} runs", measured.len())
                } else {
                    String::new()
                }
            ),
        ),
    };
    TargetCheck {
        target: TARGET_5,
        measured: text,
        verdict,
    }
}

/// All five targets, in order.
pub fn targets(runs: &[RunResult], overhead: Option<&Overhead>) -> Vec<TargetCheck> {
    vec![
        target_ratio(runs),
        target_100k(runs),
        target_latency(runs),
        target_overhead(overhead),
        target_rss(runs),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const A: Config = Config {
        line_bytes: 64,
        containers: 1,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn find<'a>(runs: &'a [RunResult], source: &str, config: Config, rate: f64) -> &'a RunResult {
        runs.iter()
            .find(|r| r.source == source && config.contains(r) && same_rate(r.offered_lps, rate))
            .expect("fixture run")
    }

    #[test]
    fn lists_sources_and_configs_in_order() {
        let runs = fixtures::runs();
        assert_eq!(sources(&runs), ["ebpf", "docker", "none"]);
        assert_eq!(collector_sources(&runs), ["ebpf", "docker"]);
        assert_eq!(line_sizes(&runs), [64, 100, 512]);
        assert_eq!(configs(&runs).first(), Some(&A));
        assert_eq!(A.to_string(), "64 B × 1");
        assert_eq!(A.describe(), "64 B lines, 1 container");
    }

    #[test]
    fn max_held_rate() {
        let runs = fixtures::runs();
        let ebpf = max_held(&runs, EBPF, A, MAX_LOSS_PCT).unwrap();
        // 100k lost exactly 0.1 %: held. 200k lost 5 %.
        assert_eq!(ebpf.rate, Some(100e3));
        assert!(!ebpf.all_held);
        assert_eq!(ebpf.runs, 5);
        let docker = max_held(&runs, DOCKER, A, MAX_LOSS_PCT).unwrap();
        assert_eq!(docker.rate, Some(10e3));
        assert_eq!(docker.to_string(), "10k");
        let ratio = held_ratio(&ebpf, &docker).unwrap();
        assert!(close(ratio.value, 10.0));
        assert_eq!(ratio.bound, Bound::Exact);
        assert_eq!(ratio.to_string(), "10×");

        // Every run held: a lower bound.
        let big = Config {
            line_bytes: 512,
            containers: 10,
        };
        let ebpf = max_held(&runs, EBPF, big, MAX_LOSS_PCT).unwrap();
        assert_eq!((ebpf.rate, ebpf.all_held), (Some(25e3), true));
        assert_eq!(ebpf.to_string(), "≥ 25k");
        // No Docker run there.
        assert_eq!(max_held(&runs, DOCKER, big, MAX_LOSS_PCT), None);
        // A stricter threshold drops the 100k run.
        assert_eq!(max_held(&runs, EBPF, A, 0.01).unwrap().rate, Some(25e3));
    }

    #[test]
    fn held_table_has_ratio_only_where_both_ran() {
        let runs = fixtures::runs();
        let table = held_table(&runs, MAX_LOSS_PCT);
        assert_eq!(table.len(), 3);
        assert_eq!(table[0].config, A);
        assert!(
            table[0]
                .ebpf_over_docker
                .is_some_and(|r| close(r.value, 10.0))
        );
        assert!(
            table
                .iter()
                .skip(1)
                .all(|row| row.ebpf_over_docker.is_none())
        );
        assert!(
            table
                .iter()
                .skip(1)
                .all(|row| !row.by_source.contains_key(DOCKER))
        );
    }

    #[test]
    fn ratios_with_bounds() {
        let held = |rate: Option<f64>, all_held| MaxHeld {
            rate,
            all_held,
            runs: 3,
            lowest_offered: 10e3,
        };
        // Docker held nothing: its limit is below 10k.
        let r = held_ratio(&held(Some(100e3), false), &held(None, false)).unwrap();
        assert_eq!((r.value, r.bound), (10.0, Bound::AtLeast));
        assert!(r.surely_at_least(5.0) && !r.surely_below(5.0));
        // Docker held everything: its limit is above its rate.
        let r = held_ratio(&held(Some(40e3), false), &held(Some(10e3), true)).unwrap();
        assert_eq!((r.value, r.bound), (4.0, Bound::AtMost));
        assert!(r.surely_below(5.0));
        assert_eq!(r.to_string(), "≤ 4.0×");
        // Neither limit found, or eBPF held nothing: no ratio.
        assert_eq!(
            held_ratio(&held(Some(40e3), true), &held(Some(10e3), true)),
            None
        );
        assert_eq!(
            held_ratio(&held(None, false), &held(Some(10e3), false)),
            None
        );
    }

    #[test]
    fn cpu_per_line_and_added_cpu() {
        let runs = fixtures::runs();
        let ebpf = find(&runs, EBPF, A, 10e3);
        let docker = find(&runs, DOCKER, A, 10e3);
        // 0.2 s for 100,000 lines; 0.5 s for Docker.
        assert!(close(collector_cpu_per_mline(ebpf).unwrap(), 2.0));
        assert!(close(collector_cpu_per_mline(docker).unwrap(), 5.0));
        // Total 1.8 s against 1.5 s without collector; Docker 3.5 s.
        assert!(close(added_cpu_s(&runs, ebpf).unwrap(), 0.3));
        assert!(close(added_cpu_per_mline(&runs, ebpf).unwrap(), 3.0));
        assert!(close(added_cpu_per_mline(&runs, docker).unwrap(), 20.0));
        // Per delivered line: 245,000 of 250,000 at 25k.
        let docker25 = find(&runs, DOCKER, A, 25e3);
        assert!(close(
            added_cpu_per_mline(&runs, docker25).unwrap(),
            5.0 / 245_000.0 * 1e6
        ));
        // No `none` run at 200k, none at all for 512 B.
        assert_eq!(
            added_cpu_per_mline(&runs, find(&runs, EBPF, A, 200e3)),
            None
        );
        let big = Config {
            line_bytes: 512,
            containers: 10,
        };
        assert_eq!(
            added_cpu_per_mline(&runs, find(&runs, EBPF, big, 10e3)),
            None
        );
        assert!(close(collector_cores(ebpf).unwrap(), 0.02));

        let table = cpu_table(&runs);
        assert_eq!(
            table.len(),
            runs.iter().filter(|r| r.source != NONE).count()
        );
        let row = table.iter().find(|r| std::ptr::eq(r.run, docker)).unwrap();
        assert!(close(row.vs_ebpf_collector.unwrap(), 2.5));
        assert!(close(row.vs_ebpf_added.unwrap(), 20.0 / 3.0));
        let row = table.iter().find(|r| std::ptr::eq(r.run, ebpf)).unwrap();
        assert_eq!((row.vs_ebpf_collector, row.vs_ebpf_added), (None, None));
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([]), None);
    }

    #[test]
    fn targets_met() {
        let runs = fixtures::runs();
        let overhead = fixtures::overhead();
        let checks = targets(&runs, Some(&overhead));
        for check in &checks {
            assert_eq!(check.verdict, Verdict::Met, "{check:?}");
        }
        assert!(checks[0].measured.contains("10×"), "{}", checks[0].measured);
        assert!(
            checks[1].measured.contains("0.20 cores"),
            "{}",
            checks[1].measured
        );
        assert!(
            checks[2].measured.contains("p99 2.50 ms (100 B × 10)"),
            "{}",
            checks[2].measured
        );
        assert!(
            checks[3].measured.contains("+1.2 %"),
            "{}",
            checks[3].measured
        );
        assert!(
            checks[4].measured.contains("30.0 MiB"),
            "{}",
            checks[4].measured
        );
        let ratio = &ratio_checks(&runs)[0];
        let cpu = ratio.cpu.as_ref().unwrap();
        assert_eq!((cpu.rate, cpu.metric), (10e3, "added"));
        assert!(close(cpu.ebpf, 3.0) && close(cpu.docker, 20.0));
    }

    #[test]
    fn targets_not_met() {
        let mut runs = fixtures::runs();
        for r in runs.iter_mut() {
            // Docker now holds 25k: eBPF's 100k is only 4×.
            if r.source == DOCKER {
                r.loss_pct = Some(0.0);
                r.lost = 0;
                r.delivered = r.sent;
            }
            if r.source == EBPF && r.line_bytes == 100 {
                r.cpu_s.insert(COLLECTOR.into(), 6.0);
                r.p99_ms = Some(25.0);
                r.rss_mb.insert(COLLECTOR.into(), 80.0);
            }
        }
        let bad = Overhead {
            overhead_pct: 7.5,
            ..fixtures::overhead()
        };
        let checks = targets(&runs, Some(&bad));
        for check in &checks {
            assert_eq!(check.verdict, Verdict::NotMet, "{check:?}");
        }
        assert!(
            checks[0].measured.contains("4.0×"),
            "{}",
            checks[0].measured
        );
    }

    #[test]
    fn targets_without_runs() {
        let checks = targets(&[], None);
        assert_eq!(checks.len(), 5);
        assert!(checks.iter().all(|c| c.verdict == Verdict::NotMeasured));
        // Only Docker runs: target 1 is not measured, nothing panics.
        let runs: Vec<RunResult> = fixtures::runs()
            .into_iter()
            .filter(|r| r.source == DOCKER)
            .collect();
        assert_eq!(target_ratio(&runs).verdict, Verdict::NotMeasured);
        assert!(
            held_table(&runs, MAX_LOSS_PCT)
                .iter()
                .all(|r| r.ebpf_over_docker.is_none())
        );
    }

    #[test]
    fn target_points_fall_back_to_any_line_size() {
        let runs: Vec<RunResult> = fixtures::runs()
            .into_iter()
            .filter(|r| r.line_bytes != 100)
            .collect();
        // 64 B × 1 at 10k: p99 2.5 ms.
        let latency = target_latency(&runs);
        assert_eq!(latency.verdict, Verdict::Met);
        assert!(
            latency.measured.contains("64 B × 1"),
            "{}",
            latency.measured
        );
        // Target 2 is about 100 B lines only.
        assert_eq!(target_100k(&runs).verdict, Verdict::NotMeasured);
        // 64 B × 1 at 100k: 30 MiB.
        assert_eq!(target_rss(&runs).verdict, Verdict::Met);
    }

    #[test]
    fn target_100k_needs_the_rate_offered() {
        let mut runs = fixtures::runs();
        for r in runs
            .iter_mut()
            .filter(|r| r.source == EBPF && r.line_bytes == 100)
        {
            r.emitted_lps = 0.5 * r.offered_lps;
        }
        let check = target_100k(&runs);
        assert_eq!(check.verdict, Verdict::Inconclusive);
        assert!(
            check.measured.contains("emitters wrote only 50k"),
            "{}",
            check.measured
        );
    }
}
