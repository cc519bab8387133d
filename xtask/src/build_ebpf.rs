//! `cargo xtask build-ebpf`: builds the collector's eBPF program
//! (`collector-ebpf/`) and puts the object where `collector/build.rs`
//! embeds it: `target/ebpf/spillway-collector.bpf.o`. Rebuild the collector
//! afterwards (a plain `cargo build` notices the new object).
//!
//! Installs what is missing first:
//! - the nightly toolchain with `rust-src` (the BPF target needs build-std);
//! - `bpf-linker`, linked against the nightly's own libLLVM, so no system
//!   LLVM is needed: a directory with `lib/libLLVM.so` symlinks to the real
//!   `libLLVM.so.<ver>-rust-<nightly>` of the nightly sysroot serves as
//!   `LLVM_PREFIX`. It lives in `~/.cache/spillway/` because `bpf-linker`
//!   keeps loading the library through it (its RUNPATH).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::util::{run, workspace_root};

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Reinstall bpf-linker even if one works.
    #[arg(long)]
    pub reinstall_linker: bool,
}

/// The toolchain that builds the program (matches collector-ebpf/rust-toolchain.toml).
const TOOLCHAIN: &str = "nightly";
/// Where the object goes; collector/build.rs reads it from there.
pub const OBJECT: &str = "target/ebpf/spillway-collector.bpf.o";
/// The binary that `cargo build` of collector-ebpf produces.
const BUILT: &str = "bpfel-unknown-none/release/spillway-collector-bpf";

pub fn build(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root();
    ensure_toolchain()?;
    if args.reinstall_linker || !works(Command::new("bpf-linker").arg("--version")) {
        install_bpf_linker()?;
    } else {
        eprintln!("bpf-linker is installed");
    }

    let target_dir = root.join("target/ebpf-build");
    run(&mut ebpf_cargo(&["build", "--release"]))?;

    let built = target_dir.join(BUILT);
    let object = root.join(OBJECT);
    if install_file(&built, &object)? {
        eprintln!("installed {}", object.display());
    } else {
        eprintln!("{} is up to date", object.display());
    }
    eprintln!("now build the collector (cargo build -p spillway-collector): it embeds the program");
    Ok(())
}

/// `cargo <args>` for the eBPF crate: nightly, its own target directory,
/// none of the settings meant for the host build.
fn ebpf_cargo(args: &[&str]) -> Command {
    let root = workspace_root();
    let mut cargo = nightly("cargo");
    cargo
        .args(args)
        .arg("--target-dir")
        .arg(root.join("target/ebpf-build"))
        .current_dir(root.join("collector-ebpf"));
    without_host_build_settings(&mut cargo);
    cargo
}

/// `cargo fmt --check` and `cargo clippy -D warnings` on the eBPF crate,
/// which is outside the workspace (installing nightly's clippy and rustfmt
/// when missing).
pub fn lint() -> anyhow::Result<()> {
    ensure_toolchain()?;
    run(Command::new("rustup").args([
        "component",
        "add",
        "clippy",
        "rustfmt",
        "--toolchain",
        TOOLCHAIN,
    ]))?;
    let root = workspace_root();
    run(nightly("cargo")
        .args(["fmt", "--check"])
        .current_dir(root.join("collector-ebpf")))?;
    run(ebpf_cargo(&["clippy", "--release"]).args(["--", "-D", "warnings"]))
}

/// A command run with the nightly toolchain, whatever PATH and
/// RUSTUP_TOOLCHAIN say (`cargo xtask` runs under the stable one).
pub(crate) fn nightly(program: &str) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN, program]);
    c
}

/// Whether `cmd` runs and succeeds (output discarded).
pub(crate) fn works(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the nightly toolchain with `rust-src` if it is missing.
pub(crate) fn ensure_toolchain() -> anyhow::Result<()> {
    if works(nightly("rustc").arg("--version")) {
        // No-op when already there.
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]))
    } else {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
    }
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let sysroot = output(nightly("rustc").args(["--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let (libllvm, major) = find_libllvm(&lib_dir)?;
    let name = libllvm.file_name().expect("a file").to_owned();
    let prefix = cache_dir()?.join(format!("llvm-{}", name.to_string_lossy()));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
        eprintln!("linked {} -> {}", link.display(), libllvm.display());
    }
    let feature = format!("llvm-{major}");
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--no-default-features",
        ])
        .args(["--features", &feature])
        .env("LLVM_PREFIX", &prefix)
        .env_remove("CARGO_TARGET_DIR"))?;
    if !works(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker was installed but does not run: is cargo's bin directory in PATH?");
    }
    Ok(())
}

/// The real `libLLVM.so.<major>.<minor>-rust-…` in `lib_dir` (not the
/// small `libLLVM-<major>-rust-….so` linker script), and its major version.
fn find_libllvm(lib_dir: &Path) -> anyhow::Result<(PathBuf, u32)> {
    let entries =
        std::fs::read_dir(lib_dir).with_context(|| format!("reading {}", lib_dir.display()))?;
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(major) = libllvm_major(&name) {
            return Ok((lib_dir.join(&*name), major));
        }
    }
    bail!(
        "no libLLVM.so.* in {}: the nightly toolchain is incomplete",
        lib_dir.display()
    )
}

/// `Some(22)` for `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn libllvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    version.split(['.', '-']).next()?.parse().ok()
}

fn cache_dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("spillway"))
}

/// Runs `cmd` and returns its stdout.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Copies `from` to `to` unless `to` already has the same bytes (a rewrite
/// would make cargo rebuild the collector); atomically, through a rename.
fn install_file(from: &Path, to: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let dir = to.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(true)
}

/// Removes the settings meant for the host workspace's build (its target
/// directory and target, flags, wrappers) from `cargo`, for a build of
/// another workspace with another toolchain (the eBPF program, the fuzz
/// targets).
pub(crate) fn without_host_build_settings(cargo: &mut Command) {
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cargo.env_remove(var);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_real_libllvm() {
        assert_eq!(
            libllvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some(22)
        );
        assert_eq!(libllvm_major("libLLVM.so.23-rust-1.99.0-nightly"), Some(23));
        assert_eq!(libllvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(libllvm_major("librustc_driver-b5a965480ee51f9a.so"), None);
    }

    #[test]
    fn install_file_skips_identical_content() {
        let dir = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let (from, to) = (dir.join("a"), dir.join("sub/b.o"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&from, b"obj").unwrap();
        assert!(install_file(&from, &to).unwrap());
        assert!(!install_file(&from, &to).unwrap());
        assert_eq!(std::fs::read(&to).unwrap(), b"obj");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
