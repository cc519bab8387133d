//! Validators the tests run offline, installed on demand under
//! `<workspace>/target/tools`.
//!
//! `kubernetes-validate` (PyPI) checks the manifests in `deploy/kubernetes`
//! against the Kubernetes OpenAPI schemas it bundles, so validating needs no
//! cluster and no network; only installing it needs PyPI. It goes into a
//! virtual environment of its own, `target/tools/venv`, made with the
//! host's `python3` (`python3 -m venv`). The end-to-end test
//! `e2e/tests/manifests.rs` runs it from there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::util::{run, workspace_root};

/// The pinned `kubernetes-validate` release. It bundles the schemas of
/// Kubernetes 1.28 to 1.37; the test validates against the versions it
/// names (`KUBERNETES_VERSIONS` in `e2e/tests/manifests.rs`).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The virtual environment holding the validators: `target/tools/venv`.
pub fn venv_dir() -> PathBuf {
    workspace_root().join("target").join("tools").join("venv")
}

/// Installs the pinned `kubernetes-validate` into [`venv_dir`] unless it is
/// there already, and returns the path of its `kubernetes-validate`
/// executable.
///
/// Makes the virtual environment first if needed. When the host's Python
/// cannot make one (Debian without `python3-venv`, or no `python3` at all),
/// installs Debian's `python3-venv` if running as root, else fails saying
/// what to install.
pub fn ensure_kubernetes_validate() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let exe = venv.join("bin").join("kubernetes-validate");
    if version_of(&exe).as_deref() == Some(KUBERNETES_VALIDATE_VERSION) {
        return Ok(exe);
    }
    ensure_venv(&venv)?;
    run(Command::new(venv.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg(format!(
            "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
        )))?;
    match version_of(&exe) {
        Some(v) if v == KUBERNETES_VALIDATE_VERSION => Ok(exe),
        Some(v) => bail!(
            "{} reports version {v} after installing {KUBERNETES_VALIDATE_VERSION}",
            exe.display()
        ),
        None => bail!(
            "{} does not run after installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION}",
            exe.display()
        ),
    }
}

/// What `EXE --version` prints, if it runs and succeeds.
fn version_of(exe: &Path) -> Option<String> {
    let out = Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether `python -m pip --version` works: the environment is usable.
fn has_pip(python: &Path) -> bool {
    Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A virtual environment with pip at `venv`. One that does not work (made
/// by an interrupted run, or by a Python that has since gone) is made again.
fn ensure_venv(venv: &Path) -> anyhow::Result<()> {
    let python = venv.join("bin").join("python");
    if has_pip(&python) {
        return Ok(());
    }
    let mut why = anyhow::anyhow!("no python3 on the PATH or in /usr/bin");
    for base in base_pythons() {
        match make_venv(&base, venv) {
            Ok(()) => return Ok(()),
            Err(e) => why = e,
        }
    }
    // Debian splits venv (and ensurepip) out of python3: python3-venv.
    if !is_root() || find_in_path("apt-get").is_none() {
        bail!(
            "cannot make a Python virtual environment at {} ({why:#}); install python3 and its \
             venv module (Debian: apt-get install python3-venv), or run as root to have it \
             installed",
            venv.display()
        );
    }
    eprintln!("python3 cannot make a virtual environment ({why:#}): installing python3-venv");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "python3-venv",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    make_venv(Path::new("/usr/bin/python3"), venv)
}

/// `python3 -m venv --clear VENV`, then checks that it has pip.
fn make_venv(base: &Path, venv: &Path) -> anyhow::Result<()> {
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    run(Command::new(base).args(["-m", "venv", "--clear"]).arg(venv))?;
    let python = venv.join("bin").join("python");
    if !has_pip(&python) {
        bail!("{} has no pip", venv.display());
    }
    Ok(())
}

/// The Pythons to try making the environment with, in order: `python3` on
/// the PATH (e.g. pyenv's), then Debian's `/usr/bin/python3`.
fn base_pythons() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = find_in_path("python3").into_iter().collect();
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.is_file() && !found.contains(&debian) {
        found.push(debian);
    }
    found
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_lives_in_the_target_directory() {
        let venv = venv_dir();
        assert!(venv.starts_with(workspace_root().join("target")));
        assert!(venv.ends_with("target/tools/venv"));
    }

    #[test]
    fn a_missing_executable_has_no_version() {
        assert_eq!(
            version_of(Path::new("/nonexistent/kubernetes-validate")),
            None
        );
    }
}
