//! `cargo xtask bench`: prepares the host like `cargo xtask test`, builds
//! the binaries (release unless told otherwise) and the static emitter,
//! runs the criterion micro-benchmarks and `spillway-bench run` (the
//! end-to-end plan: suites maxrate, shortlived, targets, sweep, overhead;
//! arguments after `--` go to it, e.g. `-- --suites maxrate,shortlived`),
//! and with `--report` writes `docs/benchmarks.md` and its charts, with the
//! baseline in `docs/benchmarks/before/` as "before" columns.
//!
//! `--quick` is the harness's smoke test, run by `cargo xtask test`: a few
//! short runs whose counts must add up (including one container at full
//! speed and 20 short-lived containers), results in `target/bench/quick/`,
//! and a report written next to them (never over `docs/`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run, workspace_root};
use crate::{build_ebpf, host};

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// A few short runs checked for consistent counts (the CI smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Write the report (docs/benchmarks.md and charts) after the runs.
    #[arg(long)]
    pub report: bool,
    /// Do not run anything: only write the report from the last results.
    #[arg(long, requires = "report")]
    pub no_run: bool,
    /// Skip the criterion micro-benchmarks.
    #[arg(long)]
    pub no_micro: bool,
    /// Cargo profile of the binaries measured.
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// More arguments for `spillway-bench run` (e.g. `--suites maxrate,shortlived`,
    /// `--sizes 64 --containers 10`, `--maxrate-lines 20000`).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

pub fn run_bench(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let out = if args.quick {
        root.join("target/bench/quick")
    } else {
        root.join("target/bench")
    };
    let bins = build(args)?;
    if !args.no_run {
        host::install_packages()?;
        host::ensure_dockerd()?;
        host::ensure_busybox_image()?;
        if !args.quick && !args.no_micro {
            // Before the end-to-end runs, with nothing else running.
            run(cargo(&root).args(["bench", "-p", "spillway-microbench"]))?;
        }
        let mut bench = Command::new(bins.join("spillway-bench"));
        bench
            .current_dir(&root)
            .args(["run", "--profile", &args.profile, "--emitter"])
            .arg(emitter_path(&root, &args.profile))
            .arg("--out")
            .arg(&out);
        if args.quick {
            // The smoke test of `cargo xtask test`: no source may be
            // skipped.
            bench
                .args(["--quick", "--check"])
                .env(spillway_testenv::STRICT_ENV, "1");
        }
        run(bench.args(&args.run_args))?;
    }
    if args.report || args.quick {
        let md = if args.quick {
            out.join("benchmarks.md")
        } else {
            root.join("docs/benchmarks.md")
        };
        run(Command::new(bins.join("spillway-bench"))
            .current_dir(&root)
            .arg("report")
            .arg("--results")
            .arg(&out)
            .arg("--criterion")
            .arg(root.join("target/criterion"))
            .arg("--notes")
            .arg(root.join("docs/benchmarks-findings.md"))
            .arg("--before")
            .arg(root.join("docs/benchmarks/before"))
            .arg("--md")
            .arg(md))?;
    }
    Ok(())
}

/// Builds the eBPF program, the binaries and the static emitter; returns
/// the directory of the binaries.
fn build(args: &Args) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    if !args.no_run && host::is_root() {
        build_ebpf::build(&build_ebpf::Args::default())?;
    }
    let profile = ["--profile", &args.profile];
    run(cargo(&root).args(["build"]).args(profile).args([
        "-p",
        "spillway-bench",
        "-p",
        "spillway-collector",
        "-p",
        "spillway-router",
        "-p",
        "spillway-rlp",
    ]))?;
    // Static: the busybox image has no libc to link against.
    let target = host_target();
    let rustflags = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        target.to_uppercase().replace('-', "_")
    );
    run(cargo(&root)
        .args(["build", "-p", "spillway-emitter", "--target", &target])
        .args(profile)
        .env(rustflags, "-C target-feature=+crt-static"))?;
    Ok(root.join("target").join(profile_dir(&args.profile)))
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root);
    c
}

fn host_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The directory cargo puts a profile's output in.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

fn emitter_path(root: &Path, profile: &str) -> PathBuf {
    root.join("target")
        .join(host_target())
        .join(profile_dir(profile))
        .join("spillway-emitter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_directories() {
        assert_eq!(profile_dir("dev"), "debug");
        assert_eq!(profile_dir("release"), "release");
        assert_eq!(profile_dir("bench"), "release");
        let emitter = emitter_path(Path::new("/w"), "dev");
        assert!(
            emitter
                .to_string_lossy()
                .ends_with("-unknown-linux-gnu/debug/spillway-emitter"),
            "{}",
            emitter.display()
        );
    }
}
