//! `spillway-bench`: Spillway measured end to end on this host, side by side
//! with the Docker logs API (the path logspout and most shippers take) and
//! with no collector at all. Run it through `cargo xtask bench`, which
//! builds the binaries (release) and the static emitter, and prepares the
//! host (dockerd, the busybox image, the eBPF program).
//!
//! - `run`: the plan, suite by suite (`--suites`): `maxrate` (lines
//!   written as fast as the app can, what each source costs the app and
//!   how far behind it delivers), `shortlived` (many containers that print
//!   a few lines and exit at once), `targets` (the target points),
//!   `sweep` (rates climbed until loss, over line sizes and container
//!   counts), `overhead` (the cost to host writes); written to
//!   `<out>/results.json`, `overhead.json`, `machine.json` after every
//!   run. `--quick` is the CI smoke test: a few short runs whose counts
//!   must add up (`--check`), never a speed.
//! - `report`: `docs/benchmarks.md` and its charts from those files.

mod consumer;
mod emitters;
mod machine;
mod noop_hook;
mod overhead;
mod run;
mod sampler;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};
use spillway_bench_report::report;
use spillway_bench_report::results::{self, RunResult};
use spillway_e2e::Certs;
use spillway_e2e::docker::is_root;

use crate::emitters::Start;
use crate::run::{Case, MAXRATE, Outcome, SHORTLIVED, Setup, Source};

/// The parts of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// Lines written as fast as the app can (`--maxrate-*`).
    Maxrate,
    /// Containers that print a few lines and exit, started together
    /// (`--shortlived-*`).
    Shortlived,
    /// The target points: 100 B lines from 10 containers at 10k
    /// and 100k lines/s.
    Targets,
    /// Rates climbed until loss (`--sizes`, `--containers`, `--rates`).
    Sweep,
    /// The cost to a host process's pipe writes.
    Overhead,
}

#[derive(Debug, Parser)]
#[command(name = "spillway-bench", about = "Spillway's end-to-end benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmarks (needs root for eBPF, a Docker daemon and the busybox test image).
    Run(RunArgs),
    /// Write the report (markdown and PNG charts) from the results of `run`.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The static emitter binary (`cargo xtask bench` builds it).
    #[arg(long)]
    emitter: PathBuf,
    /// Where results.json, overhead.json and machine.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The cargo profile the binaries were built with (for the report).
    #[arg(long, default_value = "release")]
    profile: String,
    /// A few short runs (under 3 minutes) instead of the whole plan.
    #[arg(long)]
    quick: bool,
    /// Fail unless every run's counts add up (delivered + missing = sent,
    /// no duplicates, no stray lines, something delivered).
    #[arg(long)]
    check: bool,
    /// Sources to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["none", "ebpf", "docker"])]
    sources: Vec<Source>,
    /// Line sizes of the sweep, bytes (newline included).
    #[arg(long, value_delimiter = ',', default_values = ["64", "512", "4096"])]
    sizes: Vec<u32>,
    /// Container counts of the sweep.
    #[arg(long, value_delimiter = ',', default_values = ["1", "10", "100"])]
    containers: Vec<u32>,
    /// Offered rates of the sweep, lines/s, climbed until a source loses
    /// more than 0.1%.
    #[arg(long, value_delimiter = ',', default_values = ["10000", "25000", "50000", "100000", "200000", "400000"])]
    rates: Vec<u64>,
    /// Seconds the emitters write in each run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Add to the runs already in `<out>/results.json` instead of starting
    /// a new file (to resume or extend a plan).
    #[arg(long)]
    append: bool,
    /// The suites to run, in this order: maxrate, shortlived, targets,
    /// sweep, overhead (`--quick` runs its own small set, and the overhead
    /// unless `--no-overhead`).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["maxrate", "shortlived", "targets", "sweep", "overhead"])]
    suites: Vec<Suite>,
    /// Skip the sweep.
    #[arg(long)]
    no_sweep: bool,
    /// Skip the target points (100 B lines at 10k and 100k lines/s).
    #[arg(long)]
    no_targets: bool,
    /// Skip the overhead measurement on host writes.
    #[arg(long)]
    no_overhead: bool,
    /// Skip the max-rate suite.
    #[arg(long)]
    no_maxrate: bool,
    /// Skip the short-lived containers.
    #[arg(long)]
    no_shortlived: bool,
    /// Max rate: lines of one container; with N containers each writes
    /// this / N.
    #[arg(long, default_value_t = 300_000)]
    maxrate_lines: u64,
    /// Max rate: the container counts (shapes) to run.
    #[arg(long, value_delimiter = ',', default_values = ["1", "10"])]
    maxrate_containers: Vec<u32>,
    /// Max rate: bytes per line, newline included.
    #[arg(long, default_value_t = 100)]
    maxrate_bytes: u32,
    /// Short-lived: how many containers start together.
    #[arg(long, default_value_t = 200)]
    shortlived_containers: u32,
    /// Short-lived: lines each prints before it exits.
    #[arg(long, default_value_t = 10)]
    shortlived_lines: u64,
    /// Max rate and short-lived: after the emitters end, wait for the last
    /// lines until none arrived for this many seconds…
    #[arg(long, default_value_t = 5)]
    lag_idle: u64,
    /// …or this many seconds passed.
    #[arg(long, default_value_t = 120)]
    lag_limit: u64,
    /// Overhead: 64 B pipe writes timed per repetition and side.
    #[arg(long, default_value_t = 2_000_000)]
    overhead_writes: u64,
    /// Overhead: repetitions (without, eBPF, Docker API, each time).
    #[arg(long, default_value_t = 5)]
    overhead_reps: u32,
    /// `--batch-pace` given to the collector, router and RLP (their
    /// default unless set), e.g. `0ms` to compare with unpaced batching.
    #[arg(long)]
    batch_pace: Option<String>,
}

impl RunArgs {
    /// The suites to run, the `--no-*` flags applied.
    fn suites(&self) -> Vec<Suite> {
        let skipped = [
            (self.no_maxrate, Suite::Maxrate),
            (self.no_shortlived, Suite::Shortlived),
            (self.no_targets, Suite::Targets),
            (self.no_sweep, Suite::Sweep),
            (self.no_overhead, Suite::Overhead),
        ];
        let mut out: Vec<Suite> = Vec::new();
        for suite in [
            Suite::Maxrate,
            Suite::Shortlived,
            Suite::Targets,
            Suite::Sweep,
            Suite::Overhead,
        ] {
            if self.suites.contains(&suite) && !skipped.contains(&(true, suite)) {
                out.push(suite);
            }
        }
        out
    }
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// Where `run` wrote its files.
    #[arg(long, default_value = "target/bench")]
    results: PathBuf,
    /// Criterion's output directory (the micro-benchmarks).
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    /// Hand-written findings to include.
    #[arg(long)]
    notes: Option<PathBuf>,
    /// Results measured before (results.json, overhead.json), shown next
    /// to the new figures; absent: no "before" column.
    #[arg(long, default_value = "docs/benchmarks/before")]
    before: PathBuf,
    /// The markdown file to write; charts go to a folder of the same name.
    #[arg(long, default_value = "docs/benchmarks.md")]
    md: PathBuf,
}

/// The runs so far, saved after each one.
struct Bench {
    setup: Setup,
    out: PathBuf,
    check: bool,
    runs: Vec<RunResult>,
    failures: Vec<String>,
}

impl Bench {
    async fn run(&mut self, case: Case) -> anyhow::Result<RunResult> {
        let n = self.runs.len() as u32;
        let Outcome {
            result,
            missing,
            garbled,
        } = run::run(&self.setup, &case, n).await?;
        println!("{}", summary(&result));
        if self.check
            && let Err(e) = run::check(&result, missing, garbled)
        {
            eprintln!("  CHECK FAILED: {e}");
            self.failures.push(format!("{case:?}: {e}"));
        }
        self.runs.push(result.clone());
        results::write_json(&self.out.join("results.json"), &self.runs)?;
        Ok(result)
    }

    /// Each line size and container count: rates climb until every
    /// collector source has lost more than 0.1% (or could not be offered
    /// the rate), or the emitters alone cannot write it.
    async fn sweep(&mut self, args: &RunArgs) -> anyhow::Result<()> {
        for &line_bytes in &args.sizes {
            for &containers in &args.containers {
                let mut holding: Vec<Source> = args
                    .sources
                    .iter()
                    .copied()
                    .filter(|s| *s != Source::None)
                    .collect();
                for &offered in &args.rates {
                    let case =
                        |source| Case::paced("sweep", source, containers, line_bytes, offered);
                    if args.sources.contains(&Source::None) {
                        let alone = self.run(case(Source::None)).await?;
                        if alone.emitted_lps < 0.9 * alone.offered_lps {
                            println!("  the emitters alone cannot write {offered} lines/s here");
                            break;
                        }
                    }
                    let mut still = Vec::new();
                    for source in holding {
                        if self.run(case(source)).await?.holds(0.1) {
                            still.push(source);
                        }
                    }
                    holding = still;
                    if holding.is_empty() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn cases(&mut self, cases: impl IntoIterator<Item = Case>) -> anyhow::Result<()> {
        for case in cases {
            self.run(case).await?;
        }
        Ok(())
    }
}

/// The target points: 100 B lines, 10 containers, at 10k lines/s
/// (latency) and 100k lines/s (throughput, CPU, memory).
fn targets(sources: &[Source]) -> Vec<Case> {
    let mut cases = Vec::new();
    for offered in [10_000, 100_000] {
        for &source in sources {
            cases.push(Case::paced("target", source, 10, 100, offered));
        }
    }
    cases
}

/// Lines written as fast as the app can: `lines` in all, from each
/// container count of `containers` (each writing its share), every source
/// side by side.
fn maxrate(sources: &[Source], containers: &[u32], lines: u64, line_bytes: u32) -> Vec<Case> {
    let mut cases = Vec::new();
    for &n in containers {
        let n = n.max(1);
        for &source in sources {
            cases.push(Case {
                suite: MAXRATE,
                source,
                containers: n,
                line_bytes,
                offered: 0,
                lines: Some((lines / u64::from(n)).max(1)),
                start: Start::OnFile,
            });
        }
    }
    cases
}

/// `containers` containers created, then started together, each printing
/// `lines` lines of 100 B at once and exiting.
fn shortlived(sources: &[Source], containers: u32, lines: u64) -> Vec<Case> {
    sources
        .iter()
        .map(|&source| Case {
            suite: SHORTLIVED,
            source,
            containers: containers.max(1),
            line_bytes: 100,
            offered: 0,
            lines: Some(lines.max(1)),
            start: Start::Together,
        })
        .collect()
}

/// The CI smoke test: small lines from 10 containers, big lines from one,
/// one container at full speed and 20 short-lived containers.
fn quick(sources: &[Source]) -> Vec<Case> {
    let mut cases = Vec::new();
    for (containers, line_bytes, offered) in [(10, 64, 5_000), (1, 4096, 2_000)] {
        for &source in sources {
            cases.push(Case::paced(
                "quick", source, containers, line_bytes, offered,
            ));
        }
    }
    cases.extend(maxrate(sources, &[1], 20_000, 100));
    cases.extend(shortlived(sources, 20, 10));
    cases
}

fn summary(r: &RunResult) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.1}{unit}"));
    if r.suite == MAXRATE || r.suite == SHORTLIVED {
        return format!(
            "{:<6} {:<10} {:>3} × {:>6} lines × {} B  app wrote {}/s  delivered {}/{}  dup {}  wrong tags {}  lag {}  p50/p99 {}/{}  collector cpu {:.2}s  rss {}  drops {:?}  drain {}",
            r.source,
            r.suite,
            r.containers,
            r.sent / u64::from(r.containers.max(1)),
            r.line_bytes,
            r.app_lps.map_or("-".into(), |v| format!("{v:.0}")),
            r.delivered,
            r.sent,
            r.dup,
            r.wrong_tags.map_or("-".into(), |w| w.to_string()),
            opt(r.lag_ms, " ms"),
            opt(r.p50_ms, ""),
            opt(r.p99_ms, " ms"),
            r.cpu_s.get("collector").copied().unwrap_or(0.0),
            r.rss_mb
                .get("collector")
                .map_or("-".into(), |m| format!("{m:.1} MiB")),
            r.dropped,
            r.drain_end.as_deref().unwrap_or("-"),
        );
    }
    format!(
        "{:<6} {:>3} × {:>4} B  offered {:>7.0}/s  emitted {:>7.0}/s  delivered {:>9}/s  loss {:>7}  dup {}  p50/p99/max {}/{}/{}  collector cpu {:.2}s  total cpu {:.2}s{}",
        r.source,
        r.containers,
        r.line_bytes,
        r.offered_lps,
        r.emitted_lps,
        r.delivered_lps.map_or("-".into(), |v| format!("{v:.0}")),
        opt(r.loss_pct, "%"),
        r.dup,
        opt(r.p50_ms, ""),
        opt(r.p99_ms, ""),
        opt(r.max_ms, " ms"),
        r.cpu_s.get("collector").copied().unwrap_or(0.0),
        r.cpu_total(),
        batch_sizes(r),
    )
}

/// `  batch collector/router/rlp 12/8/8`: mean envelopes per batch per hop.
fn batch_sizes(r: &RunResult) -> String {
    if r.batch_envelopes.is_empty() {
        return String::new();
    }
    let hop = |c: &str| {
        r.batch_envelopes
            .get(c)
            .map_or("-".into(), |m| format!("{m:.0}"))
    };
    format!(
        "  batch collector/router/rlp {}/{}/{}",
        hop("collector"),
        hop("router"),
        hop("rlp")
    )
}

async fn run_bench(mut args: RunArgs) -> anyhow::Result<()> {
    if !args.emitter.exists() {
        bail!(
            "no emitter at {} (cargo xtask bench builds it)",
            args.emitter.display()
        );
    }
    if args.sources.contains(&Source::Ebpf) && !is_root() {
        if spillway_e2e::strict() {
            bail!("the eBPF source needs root, and the strict flag allows no skipping");
        }
        eprintln!("skipping the eBPF source: it needs root");
        args.sources.retain(|s| *s != Source::Ebpf);
    }
    let suites = args.suites();
    if let Some(why) = spillway_e2e::docker::unavailable(false) {
        bail!("cannot benchmark: {why}");
    }
    let machine = machine::describe(&args.profile);
    results::write_json(&args.out.join("machine.json"), &machine)?;
    let quick_timing = (Duration::from_secs(2), Duration::from_secs(2));
    let (duration, idle) = if args.quick {
        quick_timing
    } else {
        (Duration::from_secs(args.duration), Duration::from_secs(3))
    };
    let mut bench = Bench {
        setup: Setup {
            emitter: std::path::absolute(&args.emitter)?,
            certs: Certs::new(),
            duration,
            idle,
            lag_idle: Duration::from_secs(if args.quick { 3 } else { args.lag_idle }),
            lag_limit: Duration::from_secs(if args.quick { 60 } else { args.lag_limit }),
            flags: args
                .batch_pace
                .iter()
                .flat_map(|pace| ["--batch-pace".to_owned(), pace.clone()])
                .collect(),
        },
        out: args.out.clone(),
        check: args.check,
        runs: if args.append && args.out.join("results.json").exists() {
            results::read_json(&args.out.join("results.json"))?
        } else {
            Vec::new()
        },
        failures: Vec::new(),
    };
    if args.quick {
        bench.cases(quick(&args.sources)).await?;
    } else {
        for suite in &suites {
            match suite {
                Suite::Maxrate => {
                    let cases = maxrate(
                        &args.sources,
                        &args.maxrate_containers,
                        args.maxrate_lines,
                        args.maxrate_bytes,
                    );
                    bench.cases(cases).await?;
                }
                Suite::Shortlived => {
                    let cases = shortlived(
                        &args.sources,
                        args.shortlived_containers,
                        args.shortlived_lines,
                    );
                    bench.cases(cases).await?;
                }
                Suite::Targets => bench.cases(targets(&args.sources)).await?,
                Suite::Sweep => bench.sweep(&args).await?,
                Suite::Overhead => {} // last, below
            }
        }
    }
    // The collectors whose cost to host writes is measured.
    let overhead_sources: Vec<Source> = args
        .sources
        .iter()
        .copied()
        .filter(|s| *s != Source::None)
        .collect();
    if suites.contains(&Suite::Overhead) && !overhead_sources.is_empty() {
        let how = if args.quick {
            overhead::Args {
                writes: 200_000,
                write_bytes: 64,
                reps: 1,
                sources: overhead_sources,
            }
        } else {
            overhead::Args {
                writes: args.overhead_writes.max(1),
                write_bytes: 64,
                reps: args.overhead_reps.max(1),
                sources: overhead_sources,
            }
        };
        let o = overhead::measure(&bench.setup.certs, &how).await?;
        if !o.with_ns.is_empty() {
            println!(
                "overhead on host pipe writes of {} B with eBPF: {:+.1}%",
                o.write_bytes, o.overhead_pct
            );
        }
        if let Some(pct) = o.docker_overhead_pct {
            println!(
                "overhead on host pipe writes of {} B with the Docker API: {pct:+.1}%",
                o.write_bytes
            );
        }
        results::write_json(&args.out.join("overhead.json"), &o)?;
    }
    println!(
        "{} runs written to {}",
        bench.runs.len(),
        args.out.join("results.json").display()
    );
    if !bench.failures.is_empty() {
        bail!(
            "{} runs failed the count check:\n{}",
            bench.failures.len(),
            bench.failures.join("\n")
        );
    }
    Ok(())
}

fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let runs: Vec<RunResult> = results::read_json(&args.results.join("results.json"))?;
    let machine = results::read_json(&args.results.join("machine.json"))?;
    let overhead_file = args.results.join("overhead.json");
    let overhead = overhead_file
        .exists()
        .then(|| results::read_json(&overhead_file))
        .transpose()?;
    let notes = match &args.notes {
        Some(path) if path.exists() => Some(std::fs::read_to_string(path)?),
        _ => None,
    };
    let before_runs: Option<Vec<RunResult>> = {
        let file = args.before.join("results.json");
        file.exists()
            .then(|| results::read_json(&file))
            .transpose()?
    };
    let before_overhead = {
        let file = args.before.join("overhead.json");
        file.exists()
            .then(|| results::read_json(&file))
            .transpose()?
    };
    let before = before_runs.as_ref().map(|runs| report::Before {
        runs,
        overhead: before_overhead.as_ref(),
    });
    let inputs = report::Inputs {
        runs: &runs,
        overhead: overhead.as_ref(),
        machine: &machine,
        criterion_dir: &args.criterion,
        notes: notes.as_deref(),
        before,
    };
    let charts = args.md.with_extension("");
    report::write_report(&inputs, &args.md, &charts)?;
    println!(
        "report written to {} (charts in {})",
        args.md.display(),
        charts.display()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Run(args) => run_bench(args).await,
        Command::Report(args) => report(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spillway-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
