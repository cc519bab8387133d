//! `cargo xtask test`: installs what the tests need (Debian packages, a
//! running dockerd, the busybox image, the eBPF toolchain and program),
//! then runs the whole suite: formatting, clippy (also of the collector
//! built without its default features), the binaries' build, and every
//! test (unit tests, doctests and the end-to-end tests that start real
//! processes and containers), then each fuzz target for a bounded time
//! and the benchmark harness's quick smoke test.
//!
//! Every test process runs with the strict flag
//! ([`STRICT_ENV`]`=1`): a test that would skip for want
//! of root, Docker, eBPF or a tool fails instead, since this command has
//! installed and started all of them.

use std::process::Command;

use crate::util::{run, workspace_root};
use crate::{bench, build_ebpf, fuzz, host};
use spillway_testenv::STRICT_ENV;

/// The collector's feature sets linted besides the default one: none, and
/// the example of docs/routes.md.
const FEATURE_SETS: [&[&str]; 2] = [&[], &["syslog,tls"]];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// Only run tests whose name contains this (passed to `cargo test`).
    pub filter: Option<String>,
}

pub fn run_tests(args: &Args) -> anyhow::Result<()> {
    host::install_packages()?;
    host::ensure_dockerd()?;
    host::ensure_busybox_image()?;
    // The Kubernetes manifests' offline schema check.
    crate::validators::ensure_kubernetes_validate()?;
    // The collector embeds the eBPF program when it is built: build it
    // first, so the collector built below (and its tests) capture for real.
    build_ebpf::build(&build_ebpf::Args::default())?;
    let root = workspace_root();
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root);
        // A CI machine builds once from a clean clone: incremental caches
        // would only take disk (several GB across the test targets).
        if crate::util::in_ci() {
            c.env("CARGO_INCREMENTAL", "0");
        }
        // No test may skip: everything they need is here.
        c.env(STRICT_ENV, "1");
        c
    };
    if !args.no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The eBPF program is outside the workspace: linted on its own.
        build_ebpf::lint()?;
        // The collector without its optional routes modules, as
        // docs/routes.md documents it: none at all, and the example
        // there. Linted (not built), so the binaries the tests run keep
        // every feature.
        for features in FEATURE_SETS {
            run(cargo()
                .args([
                    "clippy",
                    "-p",
                    "spillway-collector",
                    "--no-default-features",
                ])
                .args(features.iter().flat_map(|f| ["--features", f]))
                .args(["--all-targets", "--", "-D", "warnings"]))?;
        }
    }
    // The end-to-end tests start the binaries from the target directory.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    // The image test runs the FROM scratch images of the three services.
    crate::images::build_images(&crate::images::Args::default())?;
    // All targets: the criterion micro-benchmarks run once each, as tests.
    // No fail-fast: a failing test binary does not hide the others' results.
    let mut test = cargo();
    test.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    if let Some(f) = &args.filter {
        test.arg(f);
    }
    run(&mut test)?;
    // `--all-targets` leaves doctests out: they run on their own.
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc", "--no-fail-fast"]);
    if let Some(f) = &args.filter {
        doc.arg(f);
    }
    run(&mut doc)?;
    if args.filter.is_none() {
        // Every parser of outside input, fuzzed for a bounded time from
        // the seeds in fuzz/corpus/: a crash fails the run.
        fuzz::run_fuzz(&fuzz::Args::default())?;
        // The benchmark harness itself: short runs whose counts must add
        // up, and a report made from them (no speed is asserted).
        bench::run_bench(&bench::Args {
            quick: true,
            profile: "dev".into(),
            ..bench::Args::default()
        })?;
    }
    Ok(())
}
