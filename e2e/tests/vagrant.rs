//! The Vagrant VM's files are checked where no VM can run: the Vagrantfile
//! parses (`ruby -c`), and the provisioning script, which `cargo xtask
//! test` runs with `--deps-only` before every test run, passes shellcheck.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Runs `program args`; (success, stdout and stderr), or None when the
/// program is missing (a skip, unless under CI, where `cargo xtask test`
/// installs it).
fn check(program: &str, args: &[&Path]) -> Option<(bool, String)> {
    match Command::new(program).args(args).output() {
        Ok(o) => Some((
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )),
        Err(e) => {
            spillway_e2e::skip(
                &format!("the {program} check"),
                &format!("{program} is not installed: {e} (vagrant/provision.sh installs it)"),
            );
            None
        }
    }
}

#[test]
fn vagrantfile_is_valid_ruby_and_a_broken_one_is_not() {
    let vagrantfile = workspace().join("vagrant/Vagrantfile");
    let Some((ok, out)) = check("ruby", &[Path::new("-c"), &vagrantfile]) else {
        return;
    };
    assert!(ok && out.contains("Syntax OK"), "{out}");

    // The check can fail: the same file with its last `end` cut off.
    let text = std::fs::read_to_string(&vagrantfile).unwrap();
    let broken = std::env::temp_dir().join(format!("Vagrantfile-broken-{}", std::process::id()));
    std::fs::write(&broken, &text[..text.rfind("end").unwrap()]).unwrap();
    let (ok, out) = check("ruby", &[Path::new("-c"), &broken]).unwrap();
    let _ = std::fs::remove_file(&broken);
    assert!(!ok, "ruby -c accepted a truncated Vagrantfile: {out}");
}

#[test]
fn vagrantfile_provisions_with_the_script_ci_runs() {
    let text = std::fs::read_to_string(workspace().join("vagrant/Vagrantfile")).unwrap();
    assert!(text.contains(r#"path: "provision.sh""#));
    let xtask = std::fs::read_to_string(workspace().join("xtask/src/host.rs")).unwrap();
    assert!(xtask.contains(r#"join("vagrant/provision.sh")"#));
}

#[test]
fn provisioning_script_passes_shellcheck() {
    let script = workspace().join("vagrant/provision.sh");
    if let Some((ok, out)) = check("shellcheck", &[&script]) {
        assert!(ok, "shellcheck vagrant/provision.sh:\n{out}");
    }
}
