//! Ctrl-C on `cargo xtask up` stops everything it started: the terminal
//! sends SIGINT to the whole foreground process group, and afterwards the
//! `spillway-demo` container is gone and no process `up` started is left.
//!
//! Runs the real `up` (with the debug binaries of this target directory,
//! which `cargo build --bins` made) in a process group of its own, as a
//! shell does, and sends SIGINT to that group.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEMO: &str = "spillway-demo";

/// The ids of the containers named exactly `spillway-demo`, running or not.
fn demo_containers() -> String {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("name=^/{DEMO}$")])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Alive and not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn ctrl_c_stops_every_process_and_removes_the_demo_container() {
    if !docker_answers() {
        spillway_testenv::skip("the `up` Ctrl-C test", "no Docker daemon answers");
        return;
    }
    // target/debug/deps/<this test> -> target/debug
    let exe = std::env::current_exe().unwrap();
    let bin_dir: PathBuf = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in [
        "spillway-router",
        "spillway-rlp",
        "spillway-collector",
        "spillway",
    ] {
        assert!(
            bin_dir.join(b).exists(),
            "{} is missing: `cargo build --bins` first",
            bin_dir.join(b).display()
        );
    }
    let mut up = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["up", "--no-install", "--bin-dir"])
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = up.id() as i32;

    // Wait for the banner `up` prints once everything runs.
    let (tx, rx) = mpsc::channel();
    let stderr = up.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let up_now = line.contains("Spillway is running on this host");
                said.push(line);
                if up_now {
                    break;
                }
            }
            Err(_) => {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                panic!("`up` did not come up in 120 s:\n{}", said.join("\n"));
            }
        }
    }
    assert!(!demo_containers().is_empty(), "`up` runs {DEMO}");
    let started = children(up.id());
    assert!(
        started.len() >= 4,
        "router, RLP, collector and tail run under `up`: {started:?}"
    );

    // Ctrl-C: SIGINT to the foreground process group.
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`up` still runs 60 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("`up` ended: {status}");
    let left: Vec<u32> = started.into_iter().filter(|p| running(*p)).collect();
    let container = demo_containers();
    if !left.is_empty() || !container.is_empty() {
        // Clean up for the next run, then fail.
        for p in &left {
            // SAFETY: as above.
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        let _ = Command::new("docker").args(["rm", "-f", DEMO]).output();
    }
    assert_eq!(container, "", "{DEMO} is left after Ctrl-C");
    assert!(left.is_empty(), "processes left after Ctrl-C: {left:?}");
}
