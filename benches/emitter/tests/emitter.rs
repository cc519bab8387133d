//! The emitter through a real pipe (its stdout), as a container runs it.

use std::process::Command;
use std::time::Duration;

fn seqs_and_times(stdout: &[u8]) -> Vec<(u64, u64)> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = std::str::from_utf8(l).unwrap();
            let mut fields = l.split(' ');
            let seq = fields.next().unwrap().strip_prefix("seq=").unwrap();
            let ts = fields.next().unwrap().strip_prefix("ts=").unwrap();
            (seq.parse().unwrap(), ts.parse().unwrap())
        })
        .collect()
}

#[test]
fn writes_count_lines_of_size_in_order() {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-emitter"))
        .args(["--count", "1000", "--size", "80"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 80_000);
    let lines = seqs_and_times(&out.stdout);
    let seqs: Vec<u64> = lines.iter().map(|l| l.0).collect();
    assert_eq!(seqs, (0..1000).collect::<Vec<_>>());
    assert!(
        lines.windows(2).all(|w| w[0].1 <= w[1].1),
        "timestamps go forward"
    );
}

#[test]
fn paces_to_the_rate_and_waits_for_the_start_file() {
    let go = std::env::temp_dir().join(format!("spillway-emitter-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    // 50 lines at 500/s: the last is due 98 ms after the start.
    let child = Command::new(env!("CARGO_BIN_EXE_spillway-emitter"))
        .args(["--count", "50", "--rate", "500", "--stderr", "--start-file"])
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let released = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&go).unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let lines = seqs_and_times(&out.stderr);
    assert_eq!(lines.len(), 50);
    assert!(
        lines[0].1 >= released,
        "wrote before the start file existed"
    );
    let span = Duration::from_nanos(lines[49].1 - lines[0].1);
    assert!(span >= Duration::from_millis(98), "not paced: {span:?}");
}

#[test]
fn bad_flags_exit_2_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-emitter"))
        .args(["--rate", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--count is required") && err.contains("usage:"),
        "{err}"
    );
}

#[test]
fn names_its_lines_and_reports_its_writes() {
    let report =
        std::env::temp_dir().join(format!("spillway-emitter-report-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-emitter"))
        .args([
            "--count",
            "100",
            "--size",
            "64",
            "--src",
            "7",
            "--report-file",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 6400);
    let first_line = out.stdout.split(|&b| b == b'\n').next().unwrap();
    assert!(
        String::from_utf8_lossy(first_line).contains(" src=7 "),
        "{first_line:?}"
    );
    let lines = seqs_and_times(&out.stdout);
    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::remove_file(&report).unwrap();
    assert_eq!(
        text,
        format!("first={} last={} lines=100\n", lines[0].1, lines[99].1)
    );
}
