//! Real containers for the end-to-end tests, run with the `docker` CLI.
//!
//! The tests need a running dockerd and a busybox image made with
//! `docker import` (no image can be pulled here): `cargo xtask test` sees
//! to both. Container tests take a
//! global lock: every collector captures every container on the host, so
//! they run one at a time.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The test image: busybox and its applet links, nothing else.
pub const IMAGE: &str = "spillway-test/busybox:latest";

/// Why container tests cannot run here, if they cannot. Under the strict
/// flag there is no excuse: this panics instead.
pub fn unavailable(needs_root: bool) -> Option<String> {
    let why = if needs_root && !is_root() {
        Some("needs root (eBPF)".to_owned())
    } else if !docker(&["version", "--format", "{{.Server.Version}}"]).0 {
        Some("no Docker daemon answers (run `cargo xtask test`, which starts one)".to_owned())
    } else {
        ensure_image().err()
    };
    if let Some(why) = &why {
        crate::skip("container tests", why);
    }
    why
}

/// Takes the container-test lock (see the module docs).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The collector's `--source` for a test of container capture: `ebpf`.
/// Without root, run by hand, it says eBPF capture is skipped and falls
/// back to the Docker API source (`docker`); under the strict flag it fails
/// instead, so `cargo xtask test` runs what the tests claim.
pub fn capture_source() -> &'static str {
    if is_root() {
        "ebpf"
    } else {
        crate::skip(
            "eBPF capture (the Docker API source runs instead)",
            "needs root",
        );
        "docker"
    }
}

/// Running as root (eBPF needs it)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `docker args`; (success, stdout trimmed, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    match Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

/// Checks that [`IMAGE`] is there (`cargo xtask test` imports it).
fn ensure_image() -> Result<(), String> {
    if docker(&["image", "inspect", IMAGE]).0 {
        Ok(())
    } else {
        Err(format!(
            "the image {IMAGE} is missing (`cargo xtask test` imports it)"
        ))
    }
}

/// A container made by a test, removed when dropped.
pub struct TestContainer {
    pub name: String,
    pub id: String,
}

impl TestContainer {
    /// `docker run -d --name <unique> <options> IMAGE sh -c <script>`.
    pub fn run(prefix: &str, options: &[&str], script: &str) -> TestContainer {
        let name = unique_name(prefix);
        let mut args = vec!["run", "-d", "--network", "none", "--name", &name];
        args.extend_from_slice(options);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        let (ok, id, err) = docker(&args);
        assert!(ok, "docker run failed: {err}");
        TestContainer { name, id }
    }

    /// `docker create` only (start it with [`TestContainer::start`]).
    pub fn create(prefix: &str, options: &[&str], script: &str) -> TestContainer {
        let name = unique_name(prefix);
        let mut args = vec!["create", "--network", "none", "--name", &name];
        args.extend_from_slice(options);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        let (ok, id, err) = docker(&args);
        assert!(ok, "docker create failed: {err}");
        TestContainer { name, id }
    }

    pub fn start(&self) {
        let (ok, _, err) = docker(&["start", &self.id]);
        assert!(ok, "docker start failed: {err}");
    }

    pub fn restart(&self) {
        let (ok, _, err) = docker(&["restart", "-t", "0", &self.id]);
        assert!(ok, "docker restart failed: {err}");
    }

    /// Waits for the container to exit; its exit code.
    pub fn wait(&self) -> i32 {
        let (ok, code, err) = docker(&["wait", &self.id]);
        assert!(ok, "docker wait failed: {err}");
        code.parse().unwrap_or(-1)
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.id]);
    }
}

fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "spillway-e2e-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
