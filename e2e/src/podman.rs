//! A real podman (Debian's) serving its Docker-compatible API
//! (`podman system service`) on a socket of the test's own, with storage
//! of its own, and containers run with the `podman` CLI on the same
//! storage. The busybox test image is loaded from Docker (`docker save`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::{IMAGE, docker};

/// Why podman tests cannot run here, if they cannot (panics under
/// `CI=true`, where `cargo xtask test` installs podman and Docker).
pub fn unavailable() -> Option<String> {
    if let Some(why) = crate::docker::unavailable(true) {
        return Some(why);
    }
    crate::tool_missing(
        "podman",
        "--version",
        "podman tests",
        "cargo xtask test installs it",
    )
}

/// `podman system service` of the test's own.
pub struct Podman {
    pub dir: PathBuf,
    service: Child,
}

impl Podman {
    pub fn start(dir: PathBuf) -> Podman {
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("service.log")).unwrap();
        let sock = format!("unix://{}", dir.join("podman.sock").display());
        let service = Command::new("podman")
            .args(global(&dir))
            .args(["system", "service", "--time=0", &sock])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting podman system service");
        let p = Podman { dir, service };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.dir.join("podman.sock").exists() {
            assert!(Instant::now() < deadline, "podman's socket did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        let tar = p.dir.join("busybox.tar");
        let (ok, _, err) = docker(&["save", "-o", &tar.display().to_string(), IMAGE]);
        assert!(ok, "docker save: {err}");
        let (ok, _, err) = p.podman(&["load", "-i", &tar.display().to_string()]);
        assert!(ok, "podman load: {err}");
        p
    }

    /// `unix:///.../podman.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("podman.sock").display())
    }

    /// Runs the `podman` CLI on this instance's storage.
    pub fn podman(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("podman")
            .args(global(&self.dir))
            .args(args)
            .output()
            .expect("running podman");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a detached container `name` running `script` (the limits
    /// podman needs on this host).
    pub fn run(&self, name: &str, script: &str) -> String {
        let (ok, id, err) = self.podman(&[
            "run",
            "-d",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--network",
            "none",
            "--name",
            name,
            &format!("localhost/{IMAGE}"),
            "sh",
            "-c",
            script,
        ]);
        assert!(ok, "podman run: {err}");
        id.trim().to_owned()
    }
}

fn global(dir: &std::path::Path) -> Vec<String> {
    vec![
        "--root".into(),
        dir.join("root").display().to_string(),
        "--runroot".into(),
        dir.join("run").display().to_string(),
        "--cgroup-manager=cgroupfs".into(),
        "--events-backend=file".into(),
    ]
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-a", "-t", "0"]);
        let _ = self.service.kill();
        let _ = self.service.wait();
        let _ = self.podman(&["system", "reset", "-f"]);
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
