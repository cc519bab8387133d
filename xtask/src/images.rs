//! `cargo xtask images`: container images of the three services, `FROM
//! scratch`, built with the local Docker engine (no registry, nothing to
//! pull).
//!
//! Each binary is linked statically (glibc with `+crt-static`): the image
//! holds the binary alone. glibc 2.34 and later resolve names from
//! `/etc/hosts` and DNS without loading NSS modules, so a static binary
//! still finds `router:8082` on a Docker network or a Kubernetes Service.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::build_ebpf;
use crate::util::{run, workspace_root};

/// The images, by binary, with the Dockerfile of each in `deploy/images/`.
pub const IMAGES: &[(&str, &str)] = &[
    ("spillway-collector", "collector"),
    ("spillway-router", "router"),
    ("spillway-rlp", "rlp"),
];

/// The static builds' target: named explicitly so that `RUSTFLAGS` reach
/// only the binaries, not build scripts and proc-macros.
const TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Image tag (default: the workspace version).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// Image name prefix: images are `<repository>/<component>:<tag>`.
    #[arg(long, default_value = "spillway")]
    pub repository: String,
    /// Use the binaries already built (`target/x86_64-unknown-linux-gnu/image/`).
    #[arg(long)]
    pub no_build: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            tag: env!("CARGO_PKG_VERSION").into(),
            repository: "spillway".into(),
            no_build: false,
        }
    }
}

pub fn build_images(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root();
    if !args.no_build {
        // The collector embeds the eBPF program when it is compiled.
        build_ebpf::build(&build_ebpf::Args::default())?;
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .current_dir(&root)
            .args(["build", "--profile", "image", "--target", TARGET])
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
        for (bin, _) in IMAGES {
            cargo.args(["--bin", bin]);
        }
        run(&mut cargo)?;
    }
    let bins = root.join("target").join(TARGET).join("image");
    for (bin, component) in IMAGES {
        let binary = bins.join(bin);
        check_static(&binary)?;
        let context = context_with(&binary)?;
        let tag = format!("{}/{component}:{}", args.repository, args.tag);
        let built = run(Command::new("docker")
            .args(["build", "--quiet", "--tag", &tag, "--file"])
            .arg(
                root.join("deploy/images")
                    .join(format!("{component}.Dockerfile")),
            )
            .arg(&context)
            // The classic builder: BuildKit may be missing (Debian's
            // docker.io has no buildx), and it gains nothing here.
            .env("DOCKER_BUILDKIT", "0"));
        let _ = std::fs::remove_dir_all(&context);
        built?;
        eprintln!("built {tag}");
    }
    Ok(())
}

/// A build context holding `binary` and an empty `state/` directory.
fn context_with(binary: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("spillway-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state"))?;
    let name = binary.file_name().context("binary has a name")?;
    // A hard link when on the same file system, else a copy.
    if std::fs::hard_link(binary, dir.join(name)).is_err() {
        std::fs::copy(binary, dir.join(name))
            .with_context(|| format!("copying {}", binary.display()))?;
    }
    Ok(dir)
}

/// A `FROM scratch` image has no dynamic loader: the binary must need none.
fn check_static(binary: &Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(binary).with_context(|| format!("{} is missing", binary.display()))?;
    if has_interpreter(&bytes) {
        bail!(
            "{} is dynamically linked (it has a PT_INTERP header); a FROM scratch image cannot run it",
            binary.display()
        );
    }
    Ok(())
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return true; // not an ELF file: certainly not runnable
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum as usize).any(|i| u32_at(phoff as usize + i * phentsize as usize) == Some(PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_has_an_interpreter() {
        // This test's own binary is dynamically linked (the dev profile).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(has_interpreter(b"#!/bin/sh\n"));
        // Debian's busybox-static (installed by `cargo xtask test`).
        if let Ok(busybox) = std::fs::read("/bin/busybox") {
            assert!(!has_interpreter(&busybox));
        }
    }
}
