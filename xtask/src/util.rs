//! Helpers shared by the xtask subcommands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The workspace root: the parent of the xtask crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a subdirectory of the workspace")
        .to_path_buf()
}

/// Runs `cmd` to completion with inherited stdio, echoing it first.
///
/// Fails if the command cannot be started or does not exit successfully;
/// the error names the command and its exit status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Renders `cmd` roughly as a shell command line (program and arguments,
/// quoting arguments that contain whitespace or are empty), prefixed with
/// `cd DIR &&` if it runs in another directory.
fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            parts.push(format!("'{arg}'"));
        } else {
            parts.push(arg.into_owned());
        }
    }
    let line = parts.join(" ");
    match cmd.get_current_dir() {
        Some(dir) => format!("cd {} && {line}", dir.display()),
        None => line,
    }
}

/// True under CI (`CI=true` or `1`), where every build starts from a clean
/// clone. (Whether a test may skip is the strict flag's business:
/// `spillway_testenv`.)
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn display_quotes_arguments() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "-p", "a b", ""]).current_dir("/tmp");
        assert_eq!(display(&cmd), "cd /tmp && cargo test -p 'a b' ''");
    }

    #[cfg(unix)]
    #[test]
    fn run_reports_failure() {
        run(Command::new("true").arg("ok")).unwrap();
        let err = run(&mut Command::new("false")).unwrap_err().to_string();
        assert!(err.contains("`false` failed"), "{err}");
        assert!(run(&mut Command::new("/nonexistent/program")).is_err());
    }
}
