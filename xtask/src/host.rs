//! Getting this host ready to capture containers: Debian packages, a
//! running Docker daemon and the busybox test image.
//!
//! Used by `cargo xtask test` (CI runs on a fresh Debian machine as root,
//! with no Docker engine) and by `cargo xtask up`.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::util::{run, workspace_root};

/// Installs what building and testing need (Debian packages, the Rust
/// toolchains) with `vagrant/provision.sh --deps-only`: the script that
/// also provisions the Vagrant VM, run here so that it cannot rot. Without
/// root it only says what is missing.
pub fn install_packages() -> anyhow::Result<()> {
    run(Command::new("bash")
        .arg(workspace_root().join("vagrant/provision.sh"))
        .arg("--deps-only"))
}

/// Starts `dockerd` in the background unless a daemon already answers,
/// then waits for it. Its log goes to `.dev/logs/dockerd.log`.
pub fn ensure_dockerd() -> anyhow::Result<()> {
    if docker_answers() {
        return Ok(());
    }
    if !is_root() {
        bail!("no Docker daemon answers, and starting one needs root");
    }
    let logs = workspace_root().join(".dev/logs");
    std::fs::create_dir_all(&logs)?;
    let log = File::create(logs.join("dockerd.log"))?;
    eprintln!(
        "$ dockerd &   (log: {})",
        logs.join("dockerd.log").display()
    );
    Command::new(find_command("dockerd").context("dockerd is not installed")?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: it outlives this command and Ctrl-C here.
        .process_group(0)
        .spawn()
        .context("starting dockerd")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if docker_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("dockerd did not answer within 60 s; see .dev/logs/dockerd.log")
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The image test and demo containers run: busybox and its applet links.
pub const BUSYBOX_IMAGE: &str = "spillway-test/busybox:latest";

/// Imports [`BUSYBOX_IMAGE`] from the host's busybox unless it exists (no
/// image can be pulled here).
pub fn ensure_busybox_image() -> anyhow::Result<()> {
    let exists = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    let busybox = find_command("busybox").context("busybox is not installed")?;
    let dir = std::env::temp_dir().join(format!("spillway-busybox-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::copy(&busybox, bin.join("busybox"))?;
    let list = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    let imported = run(Command::new("sh").args([
        "-c",
        &format!(
            "tar -C {} -c . | docker import - {BUSYBOX_IMAGE}",
            dir.display()
        ),
    ]));
    let _ = std::fs::remove_dir_all(&dir);
    imported
}

/// `name` on the PATH, or in the sbin directories a non-login root shell
/// may lack.
pub fn find_command(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
