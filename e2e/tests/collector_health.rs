//! The collector's `/health` says not ready (503, naming what is pending)
//! until container capture is ready, then 200: its ports open early, but
//! orchestrators wait.
//!
//! The collector reads Docker through a socket the test serves: a proxy to
//! the real dockerd that holds every connection until the test releases
//! it. While held, capture cannot be ready (Docker has not listed the
//! running containers), so every `/health` must be 503; once released,
//! `/health` turns 200.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spillway_e2e::{Certs, Collector, eventually, http_status, skip};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

const DOCKER: &str = "/var/run/docker.sock";

/// Serves `path`, forwarding each connection to dockerd once `release`
/// turns true; counts connections in `accepted`.
fn held_docker(path: &Path, release: watch::Receiver<bool>, accepted: Arc<AtomicUsize>) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let mut release = release.clone();
            tokio::spawn(async move {
                if release.wait_for(|r| *r).await.is_err() {
                    return;
                }
                let Ok(mut docker) = UnixStream::connect(DOCKER).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut docker).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_503_until_capture_is_ready_then_200() {
    if !Path::new(DOCKER).exists() {
        return skip(
            "the collector health test",
            &format!("no Docker socket at {DOCKER}"),
        );
    }
    let certs = Certs::new();
    let socket = certs.dir.join("docker.sock");
    let (release, held) = watch::channel(false);
    let accepted = Arc::new(AtomicUsize::new(0));
    held_docker(&socket, held, accepted.clone());

    let docker_host = format!("unix://{}", socket.display());
    let collector = Collector::spawn(
        &certs,
        &[],
        &["--source", "docker", "--docker-host", &docker_host],
    );
    // The collector has asked Docker and waits for the answer.
    eventually(
        Duration::from_secs(20),
        "the collector connects to Docker",
        || accepted.load(Ordering::SeqCst) > 0,
    )
    .await;
    for _ in 0..20 {
        let (code, body) = http_status(collector.http_port, "/health").expect("/health answers");
        assert_eq!(
            code, 503,
            "/health before Docker listed the containers: {body}"
        );
        assert!(
            body.contains("not ready: capture") && body.contains("Docker"),
            "{body}"
        );
    }

    release.send(true).unwrap();
    eventually(
        Duration::from_secs(20),
        "/health is 200 once Docker answered",
        || http_status(collector.http_port, "/health") == Some((200, "ok\n".into())),
    )
    .await;
}

/// Positive control: without container capture, the collector is ready at
/// once (`Collector::start` waits for /health 200).
#[tokio::test(flavor = "multi_thread")]
async fn without_capture_the_collector_is_ready() {
    let certs = Certs::new();
    let collector = Collector::start(&certs, &[], &["--source", "none"]);
    assert_eq!(
        http_status(collector.http_port, "/health"),
        Some((200, "ok\n".into()))
    );
}
