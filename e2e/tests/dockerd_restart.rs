//! The collector survives dockerd restarting: it keeps running, and it
//! captures containers started after the restart. Both sources.
//!
//! This test restarts the host's dockerd, so it has its own test binary
//! (cargo runs test binaries one at a time).

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway_e2e::docker::{self, TestContainer};
use spillway_e2e::*;
use spillway_proto::v2::envelope::Message;

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_survives_a_dockerd_restart() {
    let _serial = docker::serial().await;
    if docker::unavailable(true).is_some() {
        return;
    }
    for source in ["ebpf", "docker"] {
        survive(source).await;
    }
}

async fn survive(source: &str) {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let mut collector = Collector::start(&certs, &[&router], &["--source", source]);

    let said = |script_word: &str| format!("sleep 0.3; echo {script_word}; sleep 0.5");
    let before = TestContainer::create("before", &[], &said("before-restart"));
    let mut consumer = rlp.logs_of(&certs, &before.name).await;
    before.start();
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| !g.is_empty()).await;
    assert_eq!(texts(&got), vec!["before-restart"], "{source}");

    restart_dockerd();

    let after = TestContainer::create("after", &[], &said("after-restart"));
    let mut consumer = rlp.logs_of(&certs, &after.name).await;
    after.start();
    let got = collect_until(&mut consumer, Duration::from_secs(30), |g| !g.is_empty()).await;
    assert_eq!(
        texts(&got),
        vec!["after-restart"],
        "a container started after the restart is captured ({source})"
    );
    assert!(collector.proc.alive(), "the collector is still running");
}

fn texts(got: &[v2::Envelope]) -> Vec<String> {
    got.iter()
        .map(|e| match &e.message {
            Some(Message::Log(l)) => String::from_utf8_lossy(&l.payload).into_owned(),
            _ => panic!("not a log"),
        })
        .collect()
}

/// Stops dockerd (SIGTERM, as a service manager would) and starts it again
/// with the same command line, then waits until it answers.
#[expect(
    clippy::zombie_processes,
    reason = "the new dockerd outlives this test, as the first one did"
)]
fn restart_dockerd() {
    // The running one: a dockerd stopped by an earlier restart may still
    // be listed, as a zombie its parent has not reaped.
    let dockerd = procfs::process::all_processes()
        .unwrap()
        .filter_map(Result::ok)
        .find(|p| {
            p.stat()
                .is_ok_and(|s| s.comm == "dockerd" && s.state != 'Z')
        })
        .expect("dockerd runs");
    let pid = dockerd.pid;
    let exe = dockerd.exe().unwrap();
    let args: Vec<String> = dockerd.cmdline().unwrap().into_iter().skip(1).collect();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        assert!(Instant::now() < deadline, "dockerd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("spillway-e2e-dockerd.log"))
        .unwrap();
    Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("restarting dockerd");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker::docker(&["version", "--format", "{{.Server.Version}}"]).0 {
        assert!(Instant::now() < deadline, "dockerd did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `pid` still runs: not gone, and not a zombie waiting for a
/// parent (whoever started dockerd) to reap it.
fn alive(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z')
}
