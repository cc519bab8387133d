//! `spillway-bench`: Spillway measured end to end on this host, side by side
//! with the Docker logs API (the path logspout and most shippers take) and
//! with no collector at all. Run it through `cargo xtask bench`, which
//! builds the binaries (release) and the static emitter, and prepares the
//! host (dockerd, the busybox image, tracefs, the eBPF program).
//!
//! - `run`: the plan (a sweep of rates until loss, over line sizes and
//!   container counts; the target points; the overhead on host
//!   writes), written to `<out>/results.json`, `overhead.json`,
//!   `machine.json` after every run. `--quick` is the CI smoke test: a few
//!   short runs whose counts must add up (`--check`), never a speed.
//! - `report`: `docs/benchmarks.md` and its charts from those files.

mod consumer;
mod emitters;
mod machine;
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

use crate::run::{Case, Outcome, Setup, Source};

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
    /// Skip the sweep.
    #[arg(long)]
    no_sweep: bool,
    /// Skip the target points (100 B lines at 10k and 100k lines/s).
    #[arg(long)]
    no_targets: bool,
    /// Skip the overhead measurement on host writes.
    #[arg(long)]
    no_overhead: bool,
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
                    let case = |source| Case {
                        suite: "sweep",
                        source,
                        containers,
                        line_bytes,
                        offered,
                    };
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
            cases.push(Case {
                suite: "target",
                source,
                containers: 10,
                line_bytes: 100,
                offered,
            });
        }
    }
    cases
}

/// The CI smoke test: small lines from 10 containers, big lines from one.
fn quick(sources: &[Source]) -> Vec<Case> {
    let mut cases = Vec::new();
    for (containers, line_bytes, offered) in [(10, 64, 5_000), (1, 4096, 2_000)] {
        for &source in sources {
            cases.push(Case {
                suite: "quick",
                source,
                containers,
                line_bytes,
                offered,
            });
        }
    }
    cases
}

fn summary(r: &RunResult) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.1}{unit}"));
    format!(
        "{:<6} {:>3} × {:>4} B  offered {:>7.0}/s  emitted {:>7.0}/s  delivered {:>9}/s  loss {:>7}  dup {}  p50/p99/max {}/{}/{}  collector cpu {:.2}s  total cpu {:.2}s",
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
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("the eBPF source needs root, and CI=true allows no skipping");
        }
        eprintln!("skipping the eBPF source: it needs root");
        args.sources.retain(|s| *s != Source::Ebpf);
        args.no_overhead = true;
    }
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
        if !args.no_targets {
            bench.cases(targets(&args.sources)).await?;
        }
        if !args.no_sweep {
            bench.sweep(&args).await?;
        }
    }
    if !args.no_overhead {
        let how = if args.quick {
            overhead::Args {
                writes: 200_000,
                write_bytes: 64,
                reps: 1,
            }
        } else {
            overhead::Args {
                writes: 2_000_000,
                write_bytes: 64,
                reps: 5,
            }
        };
        let o = overhead::measure(&bench.setup.certs, &how).await?;
        println!(
            "overhead on host pipe writes of {} B: {:+.1}%",
            o.write_bytes, o.overhead_pct
        );
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
    let inputs = report::Inputs {
        runs: &runs,
        overhead: overhead.as_ref(),
        machine: &machine,
        criterion_dir: &args.criterion,
        notes: notes.as_deref(),
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
