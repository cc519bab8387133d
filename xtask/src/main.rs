//! Project automation for Spillway, run as `cargo xtask <command>`
//! (see the alias in `.cargo/config.toml`).
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a
//! `run(args)` function; add new ones (`up`, `test`, `build-ebpf`, `bench`)
//! the same way: a module, a [`Command`] variant and a `match` arm in [`main`].
//! Shared helpers (workspace root, running child processes) are in [`util`].

mod bench;
mod build_ebpf;
mod certs;
mod fuzz;
mod host;
mod images;
mod install;
mod test;
mod up;
mod util;
mod validators;

use clap::{Parser, Subcommand};

/// Spillway project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the development CA and mTLS certificates for all components.
    Certs(certs::Args),
    /// Build everything and run the whole pipeline on this host, tailing what it carries.
    Up(up::Args),
    /// Install what the tests need and run the whole suite (lint, build, tests).
    Test(test::Args),
    /// Build the collector's eBPF program (installs nightly and bpf-linker if missing).
    BuildEbpf(build_ebpf::Args),
    /// Run the fuzz targets of fuzz/ for a bounded time (installs nightly
    /// and cargo-fuzz if missing).
    Fuzz(fuzz::Args),
    /// Run the benchmarks (end to end and micro); `--report` writes docs/benchmarks.md.
    Bench(bench::Args),
    /// Build the container images (FROM scratch, static binaries) with the
    /// local Docker engine.
    Images(images::Args),
    /// Install the binaries, systemd units, configs and (development)
    /// certificates on this host, or under --root.
    Install(install::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Certs(args) => certs::run(&args),
        Command::Up(args) => up::run_up(&args),
        Command::Test(args) => test::run_tests(&args),
        Command::BuildEbpf(args) => build_ebpf::build(&args),
        Command::Fuzz(args) => fuzz::run_fuzz(&args),
        Command::Bench(args) => bench::run_bench(&args),
        Command::Images(args) => images::build_images(&args),
        Command::Install(args) => install::run_install(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
