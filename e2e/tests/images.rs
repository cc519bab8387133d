//! The container images (`cargo xtask images`, FROM scratch, static
//! binaries) run the whole pipeline: a router and an RLP on a private
//! Docker network, found by their names there, and the collector with the
//! host's PID namespace and the capabilities it needs (not `--privileged`).
//! A line a container writes reaches a consumer of the RLP.

use std::time::Duration;

use spillway_e2e::docker::{TestContainer, docker, unavailable};
use spillway_e2e::{Certs, Kind, collect_until, request, v2};
use spillway_proto::v2::egress_client::EgressClient;

const TAG: &str = env!("CARGO_PKG_VERSION");

/// Something the test made with `docker`, removed when dropped.
struct Made(&'static str, String);

impl Drop for Made {
    fn drop(&mut self) {
        docker(&[self.0, "rm", "-f", &self.1]);
    }
}

/// `docker run -d <args>`; the container, removed when dropped.
fn run(name: &str, args: &[&str]) -> Made {
    docker(&["rm", "-f", name]);
    let mut all = vec!["run", "-d", "--name", name];
    all.extend_from_slice(args);
    let (ok, _, err) = docker(&all);
    assert!(ok, "docker run {name} failed: {err}");
    Made("container", name.to_owned())
}

fn logs(name: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn images_missing() -> Option<String> {
    let missing: Vec<String> = ["collector", "router", "rlp"]
        .iter()
        .map(|c| format!("spillway/{c}:{TAG}"))
        .filter(|image| !docker(&["image", "inspect", image]).0)
        .collect();
    if missing.is_empty() {
        return None;
    }
    let why = format!(
        "images {} are missing (`cargo xtask images`; `cargo xtask test` builds them)",
        missing.join(", ")
    );
    spillway_e2e::skip("the image test", &why);
    Some(why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_carry_a_container_line_from_collector_through_router_and_rlp() {
    if unavailable(true).is_some() || images_missing().is_some() {
        return;
    }
    let certs = Certs::new();
    let pid = std::process::id();
    let net = format!("spillway-e2e-img-net-{pid}");
    docker(&["network", "rm", &net]);
    let (ok, _, err) = docker(&["network", "create", &net]);
    assert!(ok, "docker network create failed: {err}");
    let _net = Made("network", net.clone());
    let certs_mount = format!("{}:/certs:ro", certs.dir.display());
    let tls = |c: &str| {
        [
            "--tls-ca".to_string(),
            "/certs/ca.pem".into(),
            "--tls-cert".into(),
            format!("/certs/{c}.pem"),
            "--tls-key".into(),
            format!("/certs/{c}-key.pem"),
        ]
    };
    let router_image = format!("spillway/router:{TAG}");
    let rlp_image = format!("spillway/rlp:{TAG}");
    let collector_image = format!("spillway/collector:{TAG}");

    // The router, known on the network as `router` (its certificate's name).
    let router_name = format!("spillway-e2e-img-router-{pid}");
    let mut args = vec![
        "--network",
        &net,
        "--network-alias",
        "router",
        "-v",
        &certs_mount,
        &router_image,
    ];
    let router_tls = tls("router");
    args.extend(router_tls.iter().map(String::as_str));
    let _router = run(&router_name, &args);

    // The RLP, reading from `router:8082`, its egress published on loopback.
    let rlp_name = format!("spillway-e2e-img-rlp-{pid}");
    let mut args = vec![
        "--network",
        &net,
        "-p",
        "127.0.0.1::8083",
        "-v",
        &certs_mount,
        &rlp_image,
        "--router",
        "router:8082",
    ];
    let rlp_tls = tls("rlp");
    args.extend(rlp_tls.iter().map(String::as_str));
    let _rlp = run(&rlp_name, &args);

    // The collector: host PID namespace (to read /proc/<pid> of container
    // processes), the capabilities of its systemd unit and the Docker
    // socket; no host directory but the socket (the kernel's BTF is in
    // the container's own read-only /sys). Not CAP_SYS_RESOURCE: only
    // kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (and this
    // machine cannot grant it). Seccomp unconfined: Docker's default
    // profile refuses io_uring, which the capture loops use.
    let collector_name = format!("spillway-e2e-img-collector-{pid}");
    let mut args = vec![
        "--network",
        &net,
        "--pid",
        "host",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "SYS_PTRACE",
        "--cap-add",
        "DAC_READ_SEARCH",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &certs_mount,
        &collector_image,
        "--router",
        "router:8082",
        "--source",
        "ebpf",
        "--hostname",
        "spillway-e2e-img-host",
    ];
    let collector_tls = tls("collector");
    args.extend(collector_tls.iter().map(String::as_str));
    // CAP_BPF and CAP_PERFMON are known to Docker 23 and later; older
    // engines (Debian 12's 20.10) refuse them, and only CAP_SYS_ADMIN
    // (which the kernel accepts in their place) grants the same.
    let modern = ["--cap-add", "BPF", "--cap-add", "PERFMON"];
    let mut with_caps = modern.to_vec();
    with_caps.extend_from_slice(&args);
    docker(&["rm", "-f", &collector_name]);
    let mut all = vec!["run", "-d", "--name", &collector_name];
    all.extend_from_slice(&with_caps);
    let (ok, _, err) = docker(&all);
    let _collector = if ok {
        Made("container", collector_name.clone())
    } else {
        assert!(
            err.contains("unknown capability"),
            "docker run {collector_name} failed: {err}"
        );
        eprintln!("this Docker engine does not know CAP_BPF: CAP_SYS_ADMIN instead ({err})");
        let mut with_caps = vec!["--cap-add", "SYS_ADMIN"];
        with_caps.extend_from_slice(&args);
        run(&collector_name, &with_caps)
    };

    let (ok, port, err) = docker(&["port", &rlp_name, "8083/tcp"]);
    assert!(ok, "docker port failed: {err}");
    let port: u16 = port
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no published port in {port:?}"));
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = spillway_e2e::try_channel(port, certs.client()).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.unwrap_or_else(|| {
        panic!(
            "cannot reach the RLP container on 127.0.0.1:{port}\nrlp: {}",
            logs(&rlp_name)
        )
    });
    let mut stream = EgressClient::new(client)
        .batched_receiver(request("", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();

    // A container that writes its line until the test has it (the
    // collector needs a moment to load its program and find containers).
    let line = format!("hello from a container, test {pid}");
    let writer = TestContainer::run(
        "img-writer",
        &[],
        &format!("while true; do echo '{line}'; sleep 0.2; done"),
    );
    let got = collect_until(&mut stream, Duration::from_secs(60), |got| {
        got.iter().any(|e| payload(e) == line)
    })
    .await;
    let e = got.iter().find(|e| payload(e) == line).unwrap_or_else(|| {
        panic!(
            "the line did not arrive\ncollector: {}\nrouter: {}\nrlp: {}",
            logs(&collector_name),
            logs(&router_name),
            logs(&rlp_name)
        )
    });
    assert_eq!(e.tags["container_name"], writer.name);
    assert_eq!(e.tags["host"], "spillway-e2e-img-host");
}

fn payload(e: &v2::Envelope) -> String {
    match &e.message {
        Some(v2::envelope::Message::Log(l)) => {
            String::from_utf8_lossy(&l.payload).trim_end().to_owned()
        }
        _ => String::new(),
    }
}
