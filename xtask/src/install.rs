//! `cargo xtask install`: puts Spillway on a systemd host (or into a staging
//! root, for packaging and tests):
//!
//! | what | from | to (under `--root`) |
//! |---|---|---|
//! | binaries | `target/<profile>/` | `usr/local/bin/` |
//! | units | `deploy/systemd/*.service` | `etc/systemd/system/` |
//! | configs | `deploy/config/*.toml` | `etc/spillway/` (an existing one is kept) |
//! | certificates | development CA, made here | `etc/spillway/certs/` (only if there are none) |
//! | state | | `var/lib/spillway/` |
//!
//! Builds first (the eBPF program, then the binaries) unless `--no-build`.
//! On a host booted with systemd, installing into `/` ends with
//! `systemctl daemon-reload`; the services are not enabled or started.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{run, workspace_root};
use crate::{build_ebpf, certs};

/// Arguments of `cargo xtask install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install under this directory instead of `/` (a staging root for
    /// packages and tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Which build of the binaries to install: `release` (target/release)
    /// or `dev` (target/debug).
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    pub profile: Profile,
    /// Install the binaries already built, without building them (or the
    /// eBPF program) first.
    #[arg(long)]
    pub no_build: bool,
}

/// A cargo profile, and where it puts its binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Release,
    Dev,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "dev",
        }
    }

    /// The directory under the target directory.
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "debug",
        }
    }
}

/// The binaries installed, with the package that builds each.
pub const BINARIES: &[(&str, &str)] = &[
    ("spillway-collector", "spillway-collector"),
    ("spillway-router", "spillway-router"),
    ("spillway-rlp", "spillway-rlp"),
    ("spillway", "spillway-cli"),
];

/// The systemd units, in `deploy/systemd/`.
pub const UNITS: &[&str] = &[
    "spillway-collector.service",
    "spillway-router.service",
    "spillway-rlp.service",
];

/// The default configurations, in `deploy/config/`.
pub const CONFIGS: &[&str] = &["collector.toml", "router.toml", "rlp.toml"];

/// What happened to one installed path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Installed,
    Replaced,
    Unchanged,
    /// Left as it was, though ours differs (configurations, certificates).
    Kept,
    Created,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Installed => "installed",
            Action::Replaced => "replaced",
            Action::Unchanged => "unchanged",
            Action::Kept => "kept (not overwritten)",
            Action::Created => "created",
        }
    }
}

pub fn run_install(args: &Args) -> anyhow::Result<()> {
    let src = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { src.join(t) })
        .unwrap_or_else(|| src.join("target"));
    if !args.no_build {
        // The collector embeds the eBPF object when it is built.
        build_ebpf::build(&build_ebpf::Args::default())?;
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .current_dir(&src)
            .args(["build", "--profile", args.profile.name()]);
        for (_, package) in BINARIES {
            build.args(["-p", package]);
        }
        run(build.arg("--bins"))?;
    } else if !src.join(build_ebpf::OBJECT).is_file() {
        eprintln!(
            "warning: {} is missing, so the collector was built without eBPF capture \
             (run `cargo xtask build-ebpf`, then build again)",
            build_ebpf::OBJECT
        );
    }

    let root = &args.root;
    let mut summary: Vec<(Action, PathBuf)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let bin_dir = target.join(args.profile.dir());
    for (bin, _) in BINARIES {
        let from = bin_dir.join(bin);
        if !from.is_file() {
            bail!(
                "{} is missing: build it (cargo build --profile {} --bins), or run without --no-build",
                from.display(),
                args.profile.name()
            );
        }
        let to = under(root, "usr/local/bin").join(bin);
        summary.push((install_file(&from, &to, 0o755)?, to));
    }

    for unit in UNITS {
        let to = under(root, "etc/systemd/system").join(unit);
        let from = src.join("deploy/systemd").join(unit);
        summary.push((install_file(&from, &to, 0o644)?, to));
    }

    let etc = under(root, "etc/spillway");
    for config in CONFIGS {
        let (from, to) = (src.join("deploy/config").join(config), etc.join(config));
        if to.exists() {
            let same = fs::read(&to).ok() == Some(fs::read(&from)?);
            if !same {
                notes.push(format!(
                    "{} exists and was left alone; the shipped default is {}",
                    to.display(),
                    from.display()
                ));
            }
            summary.push((
                if same {
                    Action::Unchanged
                } else {
                    Action::Kept
                },
                to,
            ));
        } else {
            summary.push((install_file(&from, &to, 0o644)?, to));
        }
    }

    let certs_dir = etc.join("certs");
    let has_files = fs::read_dir(&certs_dir).is_ok_and(|mut d| d.next().is_some());
    if has_files {
        let missing = missing_certs(&certs_dir);
        if !missing.is_empty() {
            notes.push(format!(
                "{} lacks {} (the units and configs expect them); nothing was written there",
                certs_dir.display(),
                missing.join(", ")
            ));
        }
        summary.push((Action::Kept, certs_dir.clone()));
    } else {
        devcerts::write_dir(&certs_dir, certs::COMPONENTS, certs::SANS)?;
        notes.push(format!(
            "{} holds DEVELOPMENT certificates (a fresh CA whose key was thrown away, \
             names {}): replace them with certificates from your own CA before other \
             hosts connect",
            certs_dir.display(),
            certs::SANS.join(", ")
        ));
        summary.push((Action::Created, certs_dir.clone()));
    }

    let state = under(root, "var/lib/spillway");
    if state.is_dir() {
        summary.push((Action::Unchanged, state));
    } else {
        fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700))?;
        summary.push((Action::Created, state));
    }

    println!("Installed Spillway into {}:", root.display());
    for (action, path) in &summary {
        println!("  {:<24} {}", action.word(), path.display());
    }
    for note in &notes {
        println!("note: {note}");
    }

    let services = "spillway-router spillway-rlp spillway-collector";
    if root == Path::new("/") && systemd_is_running() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        println!(
            "\nsystemd has the units. Start Spillway now and at every boot with:\n  \
             systemctl enable --now {services}\n\
             then follow it with: journalctl -f -u 'spillway-*'\n\
             and read what it carries: spillway tail --rlp localhost:8083 \
             --tls-ca /etc/spillway/certs/ca.pem --tls-cert /etc/spillway/certs/cli.pem \
             --tls-key /etc/spillway/certs/cli-key.pem"
        );
    } else if root == Path::new("/") {
        println!(
            "\nsystemd is not running here (PID 1 is not systemd), so nothing was reloaded.\n\
             On a systemd host run: systemctl daemon-reload && systemctl enable --now {services}\n\
             Without systemd, start the binaries yourself, e.g.\n  \
             /usr/local/bin/spillway-collector --config /etc/spillway/collector.toml\n\
             (the router's and RLP's configs read their certificates from /run/credentials/, \
             where systemd puts them: give --tls-ca, --tls-cert and --tls-key instead)."
        );
    } else {
        println!(
            "\nThis is a staging root: copy its contents to a host's /, then run there:\n  \
             systemctl daemon-reload && systemctl enable --now {services}"
        );
    }
    Ok(())
}

/// `rel` under `root` (`root` is `/` for a real install).
fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

/// The files the units and configs expect in `/etc/spillway/certs` that
/// `dir` does not have.
fn missing_certs(dir: &Path) -> Vec<String> {
    let mut files = vec![devcerts::CA_CERT_FILE.to_owned()];
    for name in ["collector", "router", "rlp"] {
        files.push(format!("{name}.pem"));
        files.push(format!("{name}-key.pem"));
    }
    files.retain(|f| !dir.join(f).is_file());
    files
}

/// Copies `from` to `to` with `mode`, through a temporary file and a rename
/// (a running binary cannot be overwritten in place).
fn install_file(from: &Path, to: &Path, mode: u32) -> anyhow::Result<Action> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let old = fs::read(to).ok();
    if old.as_deref() == Some(&bytes[..])
        && fs::metadata(to).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode)
    {
        return Ok(Action::Unchanged);
    }
    let dir = to.parent().expect("a file in a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = to.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.install-tmp"));
    fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(if old.is_some() {
        Action::Replaced
    } else {
        Action::Installed
    })
}

/// Whether this host was booted with systemd (`sd_booted()`'s test).
fn systemd_is_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-install-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn install_file_reports_what_it_did() {
        let dir = temp("file");
        let (from, to) = (dir.join("a"), dir.join("sub/b"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(&from, b"one").unwrap();
        assert_eq!(install_file(&from, &to, 0o755).unwrap(), Action::Installed);
        assert_eq!(install_file(&from, &to, 0o755).unwrap(), Action::Unchanged);
        assert_eq!(install_file(&from, &to, 0o644).unwrap(), Action::Replaced);
        assert_eq!(
            fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::write(&from, b"two").unwrap();
        assert_eq!(install_file(&from, &to, 0o644).unwrap(), Action::Replaced);
        assert_eq!(fs::read(&to).unwrap(), b"two");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_files_exist() {
        let src = workspace_root();
        for unit in UNITS {
            assert!(src.join("deploy/systemd").join(unit).is_file(), "{unit}");
        }
        for config in CONFIGS {
            assert!(src.join("deploy/config").join(config).is_file(), "{config}");
        }
    }

    #[test]
    fn missing_certs_names_what_the_units_need() {
        let dir = temp("certs");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ca.pem"), "x").unwrap();
        let missing = missing_certs(&dir);
        assert!(!missing.contains(&"ca.pem".to_owned()));
        assert!(missing.contains(&"router-key.pem".to_owned()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
