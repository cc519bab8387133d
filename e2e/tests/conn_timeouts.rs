//! Connections that never finish their TLS handshake or never send a
//! request are closed after `--handshake-timeout` (10 s by default) on
//! every port of every binary, gRPC and HTTP alike, and the process gives
//! their file descriptors back; so is an HTTP/1 request whose headers never
//! end. Well-behaved clients get through before and after.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use procfs::net::TcpState;
use procfs::process::FDTarget;
use spillway_e2e::*;
use spillway_proto::v2::EnvelopeBatch;
use spillway_proto::v2::ingress_client::IngressClient;

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    process(pid).fd_count().unwrap()
}

fn process(pid: u32) -> procfs::process::Process {
    procfs::process::Process::new(pid as i32).unwrap()
}

/// TCP connections that process `pid` holds, accepted on one of `ports`:
/// exact, unlike a count of all its descriptors (a process opens and
/// closes others of its own accord, connecting to its routers).
fn accepted(pid: u32, ports: &[u16]) -> usize {
    let sockets: HashSet<u64> = process(pid)
        .fd()
        .unwrap()
        .filter_map(|fd| match fd.ok()?.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let mut entries = procfs::net::tcp().unwrap();
    entries.extend(procfs::net::tcp6().unwrap());
    entries
        .iter()
        .filter(|e| {
            e.state == TcpState::Established
                && ports.contains(&e.local_address.port())
                && sockets.contains(&e.inode)
        })
        .count()
}

/// Connections per port that never say anything.
const IDLE: usize = 20;

/// Reads from `conn` until the server closes it; panics if it is still
/// open after `within`. Returns what the server sent.
fn until_closed(conn: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: still open after {within:?}");
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("{what}: still open after {within:?} ({e})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_unfinished_connections_are_closed_on_every_port() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);
    let processes = [
        (
            "router",
            router.proc.pid().unwrap(),
            vec![router.port, router.metrics_port],
        ),
        (
            "rlp",
            rlp.proc.pid().unwrap(),
            vec![rlp.port, rlp.gateway_port, rlp.metrics_port],
        ),
        (
            "collector",
            collector.proc.pid().unwrap(),
            vec![collector.port, collector.http_port],
        ),
    ];
    let baseline: Vec<usize> = processes.iter().map(|(_, pid, _)| fds(*pid)).collect();

    let opened = Instant::now();
    let mut idle = Vec::new();
    for (name, _, ports) in &processes {
        for port in ports {
            for _ in 0..IDLE {
                idle.push((
                    format!("an idle connection to the {name} on port {port}"),
                    TcpStream::connect(("127.0.0.1", *port)).unwrap(),
                ));
            }
        }
    }
    // HTTP/1 headers that never end, on each HTTP port.
    for port in [
        router.metrics_port,
        rlp.gateway_port,
        rlp.metrics_port,
        collector.http_port,
    ] {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        idle.push((format!("unfinished headers on port {port}"), conn));
    }
    // The processes hold them.
    for (name, pid, ports) in &processes {
        let want = ports.len() * IDLE;
        eventually(
            Duration::from_secs(5),
            &format!("the {name} accepts the {want} idle connections"),
            || accepted(*pid, ports) >= want,
        )
        .await;
    }

    for (what, conn) in &mut idle {
        until_closed(conn, Duration::from_secs(20), what);
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "closed after {took:?}, before the 10 s timeout"
    );
    drop(idle);
    for ((name, pid, _), base) in processes.iter().zip(&baseline) {
        eventually(
            Duration::from_secs(5),
            &format!("the {name} gives the descriptors back"),
            || fds(*pid) <= base + 2,
        )
        .await;
    }

    // Well-behaved clients still get through every kind of port.
    for port in [collector.port, router.port] {
        IngressClient::new(channel(port, certs.client()).await)
            .send(EnvelopeBatch {
                batch: vec![numbered_log("conn-timeouts", 0)],
            })
            .await
            .unwrap_or_else(|s| panic!("a good Send to port {port}: {s:?}"));
    }
    rlp.client(&certs)
        .await
        .batched_receiver(request("conn-timeouts", &[Kind::Log], ""))
        .await
        .expect("a good subscription on the RLP");
    for port in [router.metrics_port, rlp.metrics_port, collector.http_port] {
        assert_eq!(
            http_status(port, "/health").map(|(code, _)| code),
            Some(200),
            "/health on port {port}"
        );
    }
}

/// At its file-descriptor limit a process cannot accept: the listener backs
/// off and says so once, instead of retrying and logging every 50 ms; once
/// descriptors are free again it accepts again (and says so), and
/// `/health` answers.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_fd_limit_accept_backs_off_and_recovers() {
    let certs = Certs::new();
    let (port, metrics_port) = (free_port(), free_port());
    let mut args: Vec<String> = [
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(certs.flags("router"));
    let wrapper: Vec<String> = ["prlimit", "--nofile=64", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let router = Proc::spawn_wrapped(&wrapper, "spillway-router", &args);
    wait_port(port);
    wait_port(metrics_port);
    let pid = router.pid().unwrap();
    // prlimit execs the router: same pid.
    let accept_failures = || router.log().matches("accept failed").count();

    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    eventually(
        Duration::from_secs(5),
        "the router reaches its limit of 64 descriptors",
        || fds(pid) >= 64,
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the router logs that accept fails",
        || accept_failures() > 0,
    )
    .await;
    // A window of 2 s at the limit (well within the 10 s handshake timeout
    // that would free descriptors): the old loop logged 40 times in it.
    // A descriptor that frees up meanwhile ends one back-off and starts
    // another: each starts with one "accept failed" line, each end says
    // "again".
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = router.log();
    let (failed, recovered) = (
        log.matches("accept failed").count(),
        log.matches("again, after").count(),
    );
    assert!(
        failed == recovered + 1 && failed <= 5,
        "one line per back-off:\n{log}"
    );

    drop(held);
    eventually(
        Duration::from_secs(10),
        "/health answers once descriptors are free",
        || http_status(metrics_port, "/health").map(|(code, _)| code) == Some(200),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the router says it accepts again",
        || router.log().contains("again, after"),
    )
    .await;
    IngressClient::new(channel(port, certs.client()).await)
        .send(EnvelopeBatch::default())
        .await
        .expect("a good Send after the descriptors came back");
}
