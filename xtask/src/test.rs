//! `cargo xtask test`: installs what the tests need, then runs the whole
//! suite: formatting, clippy, the binaries' build, and every test
//! (unit tests and the end-to-end tests that start real processes).

use std::process::Command;

use crate::util::{run, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// Only run tests whose name contains this (passed to `cargo test`).
    pub filter: Option<String>,
}

/// Debian packages the tests use, by the command that shows they are there.
const PACKAGES: &[(&str, &str)] = &[("curl", "curl")];

pub fn run_tests(args: &Args) -> anyhow::Result<()> {
    install_packages()?;
    let root = workspace_root();
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root);
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
    }
    // The end-to-end tests start the binaries from the target directory.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    if let Some(f) = &args.filter {
        test.arg(f);
    }
    run(&mut test)
}

/// Installs missing Debian packages when running as root (as CI and the
/// quick start do); otherwise says what is missing.
fn install_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, _)| !has_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        anyhow::bail!(
            "the tests need these packages: {} (run as root to install them)",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub fn has_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
