//! The RLP finds its routers in DNS: every address a `--router` name
//! resolves to is a router, and the name is resolved again as time goes by
//! (a Kubernetes headless Service in front of a router StatefulSet).
//!
//! Four routers listen on one port of 127.0.0.2..5. The RLP runs in a mount
//! namespace of its own whose `/etc/hosts` is a file this test rewrites:
//! the real resolver (glibc's getaddrinfo) answers with the addresses the
//! test chooses.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spillway_e2e::docker::is_root;
use spillway_e2e::{
    Certs, Kind, Proc, ROUTERS_NAME, Rlp, collect_until, eventually, free_port, metric, request, v2,
};
use spillway_proto::v2::{EnvelopeBatch, ingress_client::IngressClient};
use tonic::transport::Endpoint;

/// One of the routers behind [`ROUTERS_NAME`].
struct Router {
    _proc: Proc,
    addr: SocketAddr,
    metrics_port: u16,
}

impl Router {
    fn start(certs: &Certs, ip: &str, port: u16) -> Router {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let metrics_port = free_port();
        let mut args = vec![
            "--addr".to_string(),
            addr.to_string(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        args.extend(certs.flags("router"));
        let proc = Proc::spawn("spillway-router", &args);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "router on {addr} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Router {
            _proc: proc,
            addr,
            metrics_port,
        }
    }

    fn subscriptions(&self) -> u64 {
        metric(self.metrics_port, "spillway_subscriptions").unwrap_or(0)
    }

    /// Sends one log from `source_id` straight into this router.
    async fn send(&self, certs: &Certs, source_id: &str) {
        let channel = Endpoint::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(certs.client().domain_name(ROUTERS_NAME))
            .unwrap()
            .connect()
            .await
            .unwrap();
        IngressClient::new(channel)
            .send(EnvelopeBatch {
                batch: vec![spillway_e2e::numbered_log(source_id, 1)],
            })
            .await
            .unwrap();
    }
}

/// `/etc/hosts` as the RLP sees it.
struct Hosts(PathBuf);

impl Hosts {
    fn set(&self, routers: &[&Router]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for r in routers {
            text.push_str(&format!("{} {ROUTERS_NAME}\n", r.addr.ip()));
        }
        // Written in place: the bind mount follows the inode.
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unshare_available() -> bool {
    if is_root() {
        return true;
    }
    spillway_e2e::skip(
        "the discovery test",
        "needs root (a mount namespace for the RLP's /etc/hosts)",
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rlp_subscribes_on_every_router_behind_a_name_and_follows_changes() {
    if !unshare_available() {
        return;
    }
    let certs = Certs::new();
    let port = free_port();
    let [a, b, c, d] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
        .map(|ip| Router::start(&certs, ip, port));
    let hosts = Hosts(certs.dir.join("hosts"));
    hosts.set(&[&a, &b, &c]);

    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
    ]
    .map(String::from)
    .into_iter()
    .chain([hosts.0.display().to_string()])
    .collect::<Vec<_>>();
    let rlp = Rlp::start_wrapped(
        &wrapper,
        &certs,
        &[&format!("{ROUTERS_NAME}:{port}")],
        // Fast, for the test; the default is 10 s.
        &["--router-resolve-interval", "300ms"],
    );
    let routers_known = || metric(rlp.metrics_port, "spillway_routers");
    assert_eq!(routers_known(), Some(3), "one name, three addresses");

    // A consumer is subscribed on all three.
    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(request("", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "a subscription on a, b and c",
        || [&a, &b, &c].iter().all(|r| r.subscriptions() == 1),
    )
    .await;
    assert_eq!(d.subscriptions(), 0, "d is not behind the name yet");
    for (r, id) in [(&a, "from-a"), (&b, "from-b"), (&c, "from-c")] {
        r.send(&certs, id).await;
    }
    let got = collect_until(&mut stream, Duration::from_secs(10), |got| {
        sources(got).len() == 3
    })
    .await;
    assert_eq!(sources(&got), ["from-a", "from-b", "from-c"]);

    // c leaves the name and d joins it.
    hosts.set(&[&a, &b, &d]);
    eventually(
        Duration::from_secs(10),
        "the consumer follows: on d, off c",
        || d.subscriptions() == 1 && c.subscriptions() == 0,
    )
    .await;
    assert_eq!(routers_known(), Some(3));
    assert_eq!(a.subscriptions(), 1, "a kept its subscription");
    d.send(&certs, "from-d").await;
    let got = collect_until(&mut stream, Duration::from_secs(10), |got| {
        sources(got).contains(&"from-d".to_string())
    })
    .await;
    assert_eq!(sources(&got), ["from-d"]);

    // The name stops resolving (a DNS outage): the RLP keeps the routers it
    // had rather than dropping every subscription.
    std::fs::write(&hosts.0, "127.0.0.1 localhost\n").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(routers_known(), Some(3));
    for r in [&a, &b, &d] {
        assert_eq!(r.subscriptions(), 1, "{} lost its subscription", r.addr);
    }
    b.send(&certs, "from-b-again").await;
    let got = collect_until(&mut stream, Duration::from_secs(10), |got| !got.is_empty()).await;
    assert_eq!(sources(&got), ["from-b-again"]);
}

/// The distinct source ids of `got`, sorted.
fn sources(got: &[v2::Envelope]) -> Vec<String> {
    let mut ids: Vec<_> = got.iter().map(|e| e.source_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}
