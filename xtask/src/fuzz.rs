//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` (one per
//! parser of outside input: route URIs and JSON, templates, the syslog
//! and multiline adapters, the line assembler, envelope decoding), each
//! for a bounded time (by default all, for [`TEST_SECONDS`] each), and
//! fails on a crash; `cargo xtask test` runs them all so.
//!
//! Installs what is missing first: the nightly toolchain (as for the eBPF
//! build) and cargo-fuzz [`CARGO_FUZZ_VERSION`].
//!
//! The seeds in `fuzz/corpus/<target>/` are kept in the repository and only
//! read; what a run adds goes to `fuzz/target/corpus/<target>/`. A crash
//! leaves its input in `fuzz/artifacts/<target>/` and the run fails, naming
//! the command that replays it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::build_ebpf::{ensure_toolchain, nightly, works};
use crate::util::{run, workspace_root};

/// The cargo-fuzz release installed (`cargo install --locked`); it builds
/// with the stable toolchain of the workspace.
pub const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Seconds each target runs by default and in `cargo xtask test`.
pub const TEST_SECONDS: u32 = 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The targets to run (all if none): names of `fuzz/fuzz_targets/*.rs`.
    pub targets: Vec<String>,
    /// Seconds each target runs.
    #[arg(long, default_value_t = TEST_SECONDS, value_parser = clap::value_parser!(u32).range(1..))]
    pub seconds: u32,
    /// Parallel fuzzing jobs per target (libFuzzer's `-fork`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            targets: Vec::new(),
            seconds: TEST_SECONDS,
            jobs: 1,
        }
    }
}

/// Runs the targets; every one runs even if another crashes, then the
/// crashed ones are named.
pub fn run_fuzz(args: &Args) -> anyhow::Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (targets: {})", all.join(", "));
            }
        }
        args.targets.clone()
    };
    ensure_toolchain()?;
    ensure_cargo_fuzz()?;
    run(&mut cargo_fuzz(&fuzz_dir, &["build"]))?;
    let mut failed = Vec::new();
    for target in &chosen {
        let scratch = fuzz_dir.join("target/corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let mut cmd = cargo_fuzz(&fuzz_dir, &["run", target]);
        cmd.arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .args(libfuzzer_flags(target, args));
        if let Err(e) = run(&mut cmd) {
            eprintln!("fuzz target {target} failed: {e}");
            failed.push(target.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/; replay one with `cd fuzz && cargo +nightly fuzz run TARGET ARTIFACT`)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// libFuzzer's flags for one bounded run of `target`.
fn libfuzzer_flags(target: &str, args: &Args) -> Vec<String> {
    let mut flags = vec![
        format!("-max_total_time={}", args.seconds),
        // One input taking this long is a hang (templates have fuel).
        "-timeout=10".into(),
        // One allocation or the whole process past this is a crash.
        "-rss_limit_mb=2048".into(),
        "-malloc_limit_mb=1024".into(),
        "-print_final_stats=1".into(),
    ];
    if target == "lines" {
        // Lines are cut at 16 KiB: inputs must reach past that.
        flags.push("-max_len=70000".into());
    }
    if args.jobs > 1 {
        flags.push(format!("-fork={}", args.jobs));
    }
    flags
}

/// The targets: the files of `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path: PathBuf = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `cargo fuzz <args>` with nightly in `fuzz/`, none of the settings meant
/// for the host build.
fn cargo_fuzz(fuzz_dir: &Path, args: &[&str]) -> Command {
    let mut c = nightly("cargo");
    c.arg("fuzz").args(args).current_dir(fuzz_dir);
    crate::build_ebpf::without_host_build_settings(&mut c);
    c
}

/// Installs cargo-fuzz [`CARGO_FUZZ_VERSION`] unless that one is there.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = Command::new("cargo-fuzz")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if installed
        .as_deref()
        .is_some_and(|v| is_version(v, CARGO_FUZZ_VERSION))
    {
        eprintln!("cargo-fuzz {CARGO_FUZZ_VERSION} is installed");
        return Ok(());
    }
    run(Command::new("cargo")
        .args(["install", "--locked", "--force", "cargo-fuzz", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .env_remove("CARGO_TARGET_DIR"))?;
    if !works(Command::new("cargo-fuzz").arg("--version")) {
        bail!("cargo-fuzz was installed but does not run: is cargo's bin directory in PATH?");
    }
    Ok(())
}

/// Whether `cargo-fuzz --version` output names `version`.
fn is_version(output: &str, version: &str) -> bool {
    output.split_whitespace().any(|w| w == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_seed_corpus() {
        let fuzz_dir = workspace_root().join("fuzz");
        let names = targets(&fuzz_dir).unwrap();
        assert!(names.len() >= 7, "{names:?}");
        let manifest = std::fs::read_to_string(fuzz_dir.join("Cargo.toml")).unwrap();
        for name in &names {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{name} is not a [[bin]] of fuzz/Cargo.toml"
            );
            let seeds = std::fs::read_dir(fuzz_dir.join("corpus").join(name))
                .unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"))
                .count();
            assert!(seeds > 0, "fuzz/corpus/{name} is empty");
        }
    }

    #[test]
    fn recognises_the_pinned_version() {
        assert!(is_version("cargo-fuzz 0.13.1\n", "0.13.1"));
        assert!(!is_version("cargo-fuzz 0.13.10\n", "0.13.1"));
    }

    #[test]
    fn runs_are_bounded() {
        let args = Args::default();
        let flags = libfuzzer_flags("template", &args);
        assert!(flags.contains(&format!("-max_total_time={TEST_SECONDS}")));
        assert!(flags.iter().any(|f| f.starts_with("-timeout=")));
        assert!(libfuzzer_flags("lines", &args).contains(&"-max_len=70000".to_string()));
    }
}
