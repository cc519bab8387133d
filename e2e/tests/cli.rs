//! The `spillway` CLI against a real pipeline, `--insecure-plaintext`, and
//! server name verification.

use std::process::{Command, Stdio};
use std::time::Duration;

use spillway_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn emit_then_tail_prints_every_line_in_order() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);

    let json_tail = Command::new(bin("spillway"))
        .args([
            "tail",
            "--rlp",
            &format!("localhost:{}", rlp.port),
            "--source-id",
            "cli-test",
            "--log",
            "--json",
            "--count",
            "200",
        ])
        .args(certs.flags("client"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let text_tail = Command::new(bin("spillway"))
        .args([
            "tail",
            "--rlp",
            &format!("localhost:{}", rlp.port),
            "--source-id",
            "cli-test",
            "--count",
            "200",
        ])
        .args(certs.flags("client"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "both tails subscribed", || {
        router.subscriptions() >= 2
    })
    .await;

    let status = Command::new(bin("spillway"))
        .args([
            "emit",
            "--collector",
            &format!("localhost:{}", collector.port),
            "--source-id",
            "cli-test",
        ])
        .args(["--rate", "1000", "--count", "200", "--size", "64"])
        .args(certs.flags("client"))
        .status()
        .unwrap();
    assert!(status.success());

    let json = tokio::task::spawn_blocking(move || json_tail.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(json.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    for e in &lines {
        assert_eq!(e["source_id"], "cli-test");
        assert!(e["timestamp"].is_string(), "int64 as a JSON string");
        assert!(e["log"]["payload"].is_string());
        assert_eq!(e["tags"]["host"], "e2e-host");
    }

    let text = tokio::task::spawn_blocking(move || text_tail.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let mut seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            assert!(
                l.contains("cli-test/0") && l.contains(" OUT "),
                "readable line: {l}"
            );
            let seq = l.split("seq=").nth(1).unwrap().split(' ').next().unwrap();
            seq.parse().unwrap()
        })
        .collect();
    // Order across batches is not promised (several links per router).
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "every line, once");
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_plaintext_works_on_loopback_and_says_so() {
    let (port, metrics_port) = (free_port(), free_port());
    let router = Proc::spawn(
        "spillway-router",
        &[
            "--insecure-plaintext".into(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
        ],
    );
    wait_port(port);
    assert!(
        router.log().contains("WITHOUT TLS"),
        "a loud warning at start: {}",
        router.log()
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut egress = v2::egress_client::EgressClient::new(channel.clone());
    let mut stream = egress
        .batched_receiver(request("plain", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    let mut ingress = v2::ingress_client::IngressClient::new(channel);
    ingress
        .send(v2::EnvelopeBatch {
            batch: vec![numbered_log("plain", 7)],
        })
        .await
        .unwrap();
    let got = collect_until(&mut stream, Duration::from_secs(10), |g| !g.is_empty()).await;
    assert_eq!(
        got.iter().filter_map(number_of).collect::<Vec<_>>(),
        vec![7]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_for_another_name_is_refused() {
    let certs = Certs::new();
    // The router's certificate names "elsewhere.example" only.
    let ca = devcerts_reissue(&certs);
    let (port, metrics_port) = (free_port(), free_port());
    let router = Proc::spawn(
        "spillway-router",
        &[
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--tls-ca".into(),
            certs.path("ca.pem"),
            "--tls-cert".into(),
            ca.0,
            "--tls-key".into(),
            ca.1,
        ],
    );
    wait_port(port);
    // One Send with the test's client TLS, checking the server's name
    // against `name`: `Err` says what failed.
    let send = async |name: &str| {
        let ch = tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(certs.client().domain_name(name))
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        v2::ingress_client::IngressClient::new(ch)
            .send(v2::EnvelopeBatch {
                batch: vec![numbered_log("x", 1)],
            })
            .await
            .map(drop)
            .map_err(|s| format!("Send: {s:?}"))
    };
    // Positive control: the same client, the same CA and router, checking
    // the name the certificate has, gets through.
    if let Err(e) = send("elsewhere.example").await {
        panic!("a client checking for elsewhere.example was refused: {e}");
    }
    let err = send("localhost").await.expect_err(
        "a client dialling localhost must not accept a certificate for elsewhere.example",
    );
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "refused, but not for the name: {err}"
    );
    drop(router);
}

/// Issues a router certificate for `elsewhere.example` from the test CA.
fn devcerts_reissue(certs: &Certs) -> (String, String) {
    // The harness keeps its CA key in memory only, so make a fresh CA, trust
    // it in place of the test CA, and issue from it.
    let ca = devcerts::Ca::new("name test CA").unwrap();
    let issued = ca.issue("router", &["elsewhere.example"]).unwrap();
    let client = ca.issue("client", &["localhost"]).unwrap();
    std::fs::write(certs.dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(certs.dir.join("client.pem"), client.cert_pem).unwrap();
    std::fs::write(certs.dir.join("client-key.pem"), client.key_pem).unwrap();
    std::fs::write(certs.dir.join("elsewhere.pem"), issued.cert_pem).unwrap();
    std::fs::write(certs.dir.join("elsewhere-key.pem"), issued.key_pem).unwrap();
    (certs.path("elsewhere.pem"), certs.path("elsewhere-key.pem"))
}
