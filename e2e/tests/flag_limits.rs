//! Every buffer and size flag has a range: 0 where nothing would work and
//! huge values that would panic or exhaust memory are refused at start with
//! exit status 2 and one line naming the flag. Each binary is started with
//! a complete, valid set of flags (real certificates, free loopback ports)
//! plus the one bad value, so a value that is not refused shows up as a
//! process that keeps running (or crashes) instead of exiting 2.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway_e2e::{Certs, bin, free_port};

/// Runs `binary args...` for at most 20 s; returns the exit code (None when
/// it was still running and had to be killed, or died of a signal) and its
/// stderr.
fn run(binary: &str, args: &[String]) -> (Option<i32>, String) {
    let err = std::env::temp_dir().join(format!(
        "spillway-flag-limits-{}-{}.err",
        std::process::id(),
        free_port()
    ));
    let mut child = Command::new(bin(binary))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    (code, text)
}

/// A valid command line for `binary`: every listener on a free loopback
/// port, real certificates, a router address that need not answer.
fn base(binary: &str, certs: &Certs) -> Vec<String> {
    let addr = || format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = match binary {
        "spillway-collector" => vec![
            "--ingress-addr".into(),
            addr(),
            "--http-addr".into(),
            addr(),
            "--router".into(),
            format!("localhost:{}", free_port()),
            "--source".into(),
            "none".into(),
            "--state-dir".into(),
            certs.dir.join("state").display().to_string(),
        ],
        "spillway-router" => vec!["--addr".into(), addr(), "--metrics-addr".into(), addr()],
        "spillway-rlp" => vec![
            "--addr".into(),
            addr(),
            "--gateway-addr".into(),
            addr(),
            "--metrics-addr".into(),
            addr(),
            "--router".into(),
            format!("localhost:{}", free_port()),
        ],
        other => panic!("no base flags for {other}"),
    };
    let component = binary.strip_prefix("spillway-").unwrap();
    args.extend(certs.flags(component));
    args
}

const CASES: &[(&str, &str, &[&str])] = &[
    (
        "spillway-collector",
        "--buffer-per-core",
        &["0", "18446744073709551615"],
    ),
    (
        "spillway-collector",
        "--links-per-router",
        &["0", "1000000"],
    ),
    ("spillway-collector", "--batch-size", &["0", "100000000"]),
    (
        "spillway-collector",
        "--max-message-bytes",
        &["0", "18446744073709551615"],
    ),
    ("spillway-collector", "--ring-bytes", &["0", "4294967295"]),
    (
        "spillway-router",
        "--subscription-buffer",
        &["0", "18446744073709551615"],
    ),
    ("spillway-router", "--max-message-bytes", &["0", "1"]),
    (
        "spillway-router",
        "--batch-size",
        &["0", "18446744073709551615"],
    ),
    (
        "spillway-rlp",
        "--consumer-buffer",
        &["0", "18446744073709551615"],
    ),
    (
        "spillway-rlp",
        "--max-streams",
        &["0", "18446744073709551615"],
    ),
    ("spillway-rlp", "--batch-size", &["0", "100000000"]),
    (
        "spillway-router",
        "--handshake-timeout",
        &["0", "500ms", "1h"],
    ),
    (
        "spillway-collector",
        "--max-batch-envelopes",
        &["0", "100000000"],
    ),
    (
        "spillway-collector",
        "--files-poll-interval",
        &["0", "5ms", "11s"],
    ),
];

#[test]
fn out_of_range_buffer_and_size_flags_exit_2_with_one_line() {
    let certs = Certs::new();
    for (binary, flag, values) in CASES {
        for value in *values {
            let mut args = base(binary, &certs);
            args.extend([flag.to_string(), value.to_string()]);
            let (code, stderr) = run(binary, &args);
            assert_eq!(
                code,
                Some(2),
                "{binary} {flag} {value}: expected exit 2, stderr:\n{stderr}"
            );
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{binary} {flag} {value}: {stderr}");
            assert!(
                lines[0].contains(flag) && lines[0].contains(value),
                "{binary} {flag} {value}: the line names neither: {stderr}"
            );
        }
    }
}

/// Positive control: the same command lines with in-range values get past
/// flag parsing. A missing `--tls-key` then stops them with a line about
/// TLS, not about the flag under test.
#[test]
fn in_range_values_are_accepted() {
    let certs = Certs::new();
    for (binary, flag, _) in CASES {
        let value = match *flag {
            "--max-message-bytes" => "10485760",
            "--ring-bytes" => "1048576",
            _ => "8",
        };
        let mut args = base(binary, &certs);
        let key = args.iter().position(|a| a == "--tls-key").unwrap();
        args.drain(key..key + 2);
        args.extend([flag.to_string(), value.to_string()]);
        let (code, stderr) = run(binary, &args);
        assert_eq!(code, Some(2), "{binary} {flag} {value}: {stderr}");
        assert!(
            stderr.contains("--tls-key") && !stderr.contains(flag),
            "{binary} {flag} {value}: {stderr}"
        );
    }
}
