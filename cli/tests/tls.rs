//! `spillway tail` and `emit` over mutual TLS against fake servers, and the
//! ways a TLS setup can be wrong, with certificates made by `devcerts`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};

use spillway_plumbing::tls::TlsArgs;
use spillway_proto::v2::{
    self,
    egress_server::{Egress, EgressServer},
    ingress_server::{Ingress, IngressServer},
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type BatchStream = Pin<Box<dyn Stream<Item = Result<v2::EnvelopeBatch, Status>> + Send>>;
type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<v2::Envelope, Status>> + Send>>;

/// An RLP that answers every subscription with one log and then waits, and
/// a collector that takes everything.
struct Fake;

#[tonic::async_trait]
impl Egress for Fake {
    type ReceiverStream = EnvelopeStream;
    type BatchedReceiverStream = BatchStream;

    async fn receiver(
        &self,
        _: Request<v2::EgressRequest>,
    ) -> Result<Response<EnvelopeStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn batched_receiver(
        &self,
        _: Request<v2::EgressBatchRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let batch = v2::EnvelopeBatch {
            batch: vec![v2::Envelope::log(1, "app", "0", "hi", v2::log::Type::Out)],
        };
        let stream = tokio_stream::iter([Ok(batch)]).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl Ingress for Fake {
    async fn sender(
        &self,
        _: Request<Streaming<v2::Envelope>>,
    ) -> Result<Response<v2::IngressResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn batch_sender(
        &self,
        request: Request<Streaming<v2::EnvelopeBatch>>,
    ) -> Result<Response<v2::BatchSenderResponse>, Status> {
        let mut stream = request.into_inner();
        while stream.message().await?.is_some() {}
        Ok(Response::new(v2::BatchSenderResponse {}))
    }

    async fn send(
        &self,
        _: Request<v2::EnvelopeBatch>,
    ) -> Result<Response<v2::SendResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

/// Makes a CA `ca`, a second CA `other`, certificates `server` and `client`
/// signed by `ca` and `rogue` signed by `other` (all for localhost).
fn make_certs(dir: &Path) {
    let sans = ["localhost", "127.0.0.1"];
    let ca = devcerts::Ca::new("ca").unwrap();
    let other = devcerts::Ca::new("other").unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("other.pem"), other.cert_pem()).unwrap();
    for (name, signer) in [("server", &ca), ("client", &ca), ("rogue", &other)] {
        let issued = signer.issue(name, &sans).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), &issued.key_pem).unwrap();
    }
}

fn tls_args(dir: &Path, ca: &str, cert: &str) -> TlsArgs {
    TlsArgs {
        tls_ca: Some(dir.join(format!("{ca}.pem"))),
        tls_cert: Some(dir.join(format!("{cert}.pem"))),
        tls_key: Some(dir.join(format!("{cert}-key.pem"))),
        insecure_plaintext: false,
    }
}

fn flags(tls: &TlsArgs) -> Vec<String> {
    if tls.insecure_plaintext {
        return vec!["--insecure-plaintext".into()];
    }
    let path = |p: &Option<PathBuf>| p.as_ref().unwrap().display().to_string();
    vec![
        format!("--tls-ca={}", path(&tls.tls_ca)),
        format!("--tls-cert={}", path(&tls.tls_cert)),
        format!("--tls-key={}", path(&tls.tls_key)),
    ]
}

/// Serves the fakes with `tls`; returns `localhost:PORT`.
async fn serve(tls: &TlsArgs) -> String {
    let tls = tls.load().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = spillway_plumbing::grpc::server(&tls)
        .unwrap()
        .add_service(EgressServer::new(Fake))
        .add_service(IngressServer::new(Fake));
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("localhost:{port}")
}

/// Runs `spillway ARGS`; `timeout` ends it after 10 s (status 124).
async fn spillway(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("timeout");
        cmd.arg("10")
            .arg(env!("CARGO_BIN_EXE_spillway"))
            .args(&args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPILLWAY_") {
                cmd.env_remove(key);
            }
        }
        cmd.output().expect("run spillway under timeout")
    })
    .await
    .unwrap()
}

async fn tail(addr: &str, tls: &TlsArgs) -> Output {
    let mut args: Vec<String> = ["tail", "--rlp", addr, "--count", "1"]
        .map(String::from)
        .into();
    args.extend(flags(tls));
    spillway(args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_good_and_bad() {
    let dir = std::env::temp_dir().join(format!("spillway-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let tls_addr = serve(&tls_args(&dir, "ca", "server")).await;
    let plaintext = TlsArgs {
        insecure_plaintext: true,
        ..Default::default()
    };
    let plain_addr = serve(&plaintext).await;
    let client = tls_args(&dir, "ca", "client");

    let out = tail(&tls_addr, &client).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"1970-01-01T00:00:00.000000001Z app/0 OUT hi\n");

    let mut args: Vec<String> = [
        "emit",
        "--collector",
        &tls_addr,
        "--source-id",
        "a",
        "--rate",
        "0",
        "--count",
        "10",
    ]
    .map(String::from)
    .into();
    args.extend(flags(&client));
    let out = spillway(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each of these fails the same way every time: status 1, not retries
    // until `timeout` (124).
    for (what, addr, tls) in [
        (
            "server cert from an unknown CA",
            &tls_addr,
            tls_args(&dir, "other", "client"),
        ),
        (
            "client cert the server does not trust",
            &tls_addr,
            tls_args(&dir, "ca", "rogue"),
        ),
        ("plaintext client, TLS server", &tls_addr, plaintext.clone()),
        ("TLS client, plaintext server", &plain_addr, client.clone()),
    ] {
        let out = tail(addr, &tls).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A key that does not match the certificate is bad input.
    let mut mismatched = client.clone();
    mismatched.tls_key = Some(dir.join("rogue-key.pem"));
    let out = tail(&tls_addr, &mismatched).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::remove_dir_all(&dir).unwrap();
}
