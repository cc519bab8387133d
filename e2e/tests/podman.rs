//! podman through its Docker-compatible API: a real `podman system
//! service`, a container run with the podman CLI, the collector with
//! `--runtime podman`, a router, an RLP and a gRPC consumer. The lines
//! arrive under the container's name, as Docker's do.

use std::time::Duration;

use spillway_e2e::docker;
use spillway_e2e::podman::{self, Podman};
use spillway_e2e::*;
use spillway_proto::v2::{Envelope, envelope::Message, log::Type};

fn line(e: &Envelope) -> (bool, String) {
    match &e.message {
        Some(Message::Log(l)) => (
            l.r#type == Type::Err as i32,
            String::from_utf8_lossy(&l.payload).into_owned(),
        ),
        other => panic!("not a log: {other:?}"),
    }
}

async fn a_podman_containers_lines_arrive_with_its_name(source: &str) {
    let _serial = docker::serial().await;
    if podman::unavailable().is_some() {
        return;
    }
    let certs = Certs::new();
    let podman = Podman::start(certs.dir.join("podman"));
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let host = podman.host();
    let collector = Collector::start(
        &certs,
        &[&router],
        &[
            "--source",
            source,
            "--runtime",
            "podman",
            "--podman-host",
            &host,
        ],
    );
    let name = format!("podman-web-{}", free_port());
    let mut consumer = rlp.logs_of(&certs, &name).await;
    let id = podman.run(
        &name,
        "i=0; while [ $i -lt 5 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2; exec sleep 100000",
    );
    let got = collect_until(&mut consumer, Duration::from_secs(30), |got| got.len() >= 6).await;
    let mut lines: Vec<(bool, String)> = got.iter().map(line).collect();
    lines.sort();
    let mut want: Vec<(bool, String)> = (0..5).map(|i| (false, format!("line-{i}"))).collect();
    want.push((true, "oops".into()));
    assert_eq!(lines, want, "{}", collector.proc.log());
    for e in &got {
        assert_eq!(e.source_id, name);
        assert_eq!(e.tags["container_name"], name);
        assert_eq!(e.tags["container_id"], id);
        assert_eq!(e.instance_id, id[..12]);
        assert_eq!(e.tags["source_type"], "container");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ebpf() {
    a_podman_containers_lines_arrive_with_its_name("ebpf").await
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_api() {
    a_podman_containers_lines_arrive_with_its_name("docker").await
}
