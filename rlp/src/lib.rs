//! `spillway-rlp`: the Reverse Log Proxy. Fans in from every router and
//! serves consumers over v2 Egress gRPC and the HTTP/SSE gateway.
//!
//! Data flow: [`discovery`] keeps the set of routers (every address of
//! every `--router` name) → a consumer's request: [`fanin`] subscribes it
//! on every router of the set → the consumer's diode → [`egress`] (gRPC)
//! or [`gateway`] (SSE).

pub mod access;
pub mod discovery;
pub mod egress;
pub mod fanin;
pub mod gateway;
pub mod tls_listener;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use prometheus_client::metrics::gauge::Gauge;
use spillway_plumbing::batch::BatchArgs;
use spillway_plumbing::grpc::{self, HostPort};
use spillway_plumbing::metrics::{self, Direction, SelfMetrics, SelfMetricsArgs, reason};
use spillway_plumbing::parse_duration;
use spillway_plumbing::tls::TlsArgs;
use spillway_proto::v2::{EnvelopeBatch, ingress_client::IngressClient};

use crate::access::{AnyOf, Authenticate, ClientCertificate, Peer, StaticTokens};
use crate::egress::RlpEgress;
use crate::fanin::Fanin;
use crate::tls_listener::{TlsFiles, TlsListener};

/// How long a gRPC consumer may leave a keepalive ping unanswered before
/// its connection is closed.
pub const CONSUMER_PING_TIMEOUT: Duration = Duration::from_secs(120);

/// Fans in from every router and serves consumers.
#[derive(Parser, Debug, Clone)]
#[command(name = "spillway-rlp", version)]
pub struct Flags {
    /// TOML file with any of these flags as keys (`router = ["r1:8082"]`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Routers to read from (repeatable, or comma-separated). A name may
    /// stand for several routers: every address it resolves to is one (a
    /// Kubernetes headless Service, say). Every consumer is subscribed on
    /// every router.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',', required = true)]
    pub router: Vec<HostPort>,
    /// How often the `--router` names are resolved again; routers that
    /// appear are subscribed on, routers that are gone are left.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub router_resolve_interval: Duration,
    /// gRPC address of the v2 Egress API for consumers.
    #[arg(long, default_value = "0.0.0.0:8083")]
    pub addr: SocketAddr,
    /// HTTPS address of the RLP gateway (`GET /v2/read`, server-sent
    /// events). Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub gateway_addr: SocketAddr,
    /// Gateway: its own certificate (PEM) instead of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "gateway_tls_key")]
    pub gateway_tls_cert: Option<PathBuf>,
    /// Gateway: the private key (PEM) of --gateway-tls-cert.
    #[arg(long, value_name = "FILE", requires = "gateway_tls_cert")]
    pub gateway_tls_key: Option<PathBuf>,
    /// Gateway: CA (PEM) whose client certificates may read (default:
    /// --tls-ca). A client presents one of these or a token.
    #[arg(long, value_name = "FILE")]
    pub gateway_client_ca: Option<PathBuf>,
    /// Gateway: a file of tokens, one per line (`#` starts a comment). A
    /// request with `Authorization: TOKEN` or `Authorization: Bearer TOKEN`
    /// for one of them may read.
    #[arg(long, value_name = "FILE")]
    pub gateway_token_file: Option<PathBuf>,
    /// Gateway: serve plain HTTP, on a loopback --gateway-addr only, for
    /// local experiments. Tokens are still checked if
    /// --gateway-token-file is given; without one anyone on this host can
    /// read every log.
    #[arg(long, conflicts_with_all = ["gateway_tls_cert", "gateway_tls_key", "gateway_client_ca"])]
    pub gateway_insecure_plaintext: bool,
    /// HTTP address for `/metrics` (Prometheus text) and `/health`.
    #[arg(long, default_value = "127.0.0.1:14826")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub conn: spillway_plumbing::conn::ConnArgs,
    /// Most consumer streams (gRPC and gateway together); more are refused
    /// with ResourceExhausted (gRPC) or 503 (gateway). 1 to 100000.
    #[arg(long, default_value_t = 500, value_parser = spillway_plumbing::usize_in(1, 100_000))]
    pub max_streams: usize,
    /// How long a consumer's answer waits for every router to take its
    /// subscription, so that it misses nothing sent after the answer. A
    /// router that is down, or that (like Loggregator's) answers only with
    /// its first batch, delays new consumers by no more; 0 answers at once.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub subscribe_wait: Duration,
    /// Envelopes buffered per consumer; a slow consumer loses its oldest
    /// (1 to 1000000).
    #[arg(long, default_value_t = 10_000, value_parser = spillway_plumbing::usize_in(1, grpc::MAX_BUFFER_ENVELOPES))]
    pub consumer_buffer: usize,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Gateway: a heartbeat frame after this long without data.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Gateway: streams are closed (with a closing frame) after this long.
    #[arg(long, default_value = "14m", value_parser = parse_duration)]
    pub stream_timeout: Duration,
    #[command(flatten)]
    pub self_metrics: SelfMetricsArgs,
}

/// Starts the RLP. Errors here are bad input (files, addresses) and should
/// end the process with status 2.
pub async fn start(flags: Flags) -> Result<tokio::task::JoinHandle<()>, String> {
    let tls = flags.tls.load()?;
    let mut metrics = SelfMetrics::new("rlp");
    let known = Gauge::default();
    metrics.registry_mut().register(
        "routers",
        "Routers known (every address of every --router name)",
        known.clone(),
    );
    let metrics = Arc::new(metrics);
    let routers = discovery::start(
        flags.router.clone(),
        tls.clone(),
        flags.router_resolve_interval,
        known,
    )
    .await;
    let fanin = Fanin::new(
        routers,
        flags.max_streams,
        flags.consumer_buffer,
        flags.subscribe_wait,
        metrics.clone(),
    );
    let policy = flags.batch.policy();
    let timing = gateway::Timing {
        heartbeat: flags.heartbeat_interval,
        stream_timeout: flags.stream_timeout,
    };

    let gateway = {
        let flags = flags.clone();
        tokio::task::spawn_blocking(move || gateway_setup(&flags))
            .await
            .map_err(|e| format!("gateway setup failed: {e}"))??
    };

    let grpc_listener = grpc::bind("--addr", flags.addr).await?;
    let gateway_listener = grpc::bind("--gateway-addr", flags.gateway_addr).await?;
    let metrics_listener = grpc::bind("--metrics-addr", flags.metrics_addr).await?;
    // A consumer that stops for a while (SIGSTOP, a long GC pause) does not
    // answer HTTP/2 pings; with the default 5 s it would lose its stream and
    // everything buffered for it. It keeps its stream instead and loses only
    // its oldest envelopes, counted (`consumer_slow`), as a slow one does.
    // A consumer that answers no ping for this long is taken for dead.
    let server = grpc::builder()
        .http2_keepalive_timeout(Some(CONSUMER_PING_TIMEOUT))
        .add_service(RlpEgress::server(fanin.clone(), policy, metrics.clone()));

    let timeout = flags.conn.handshake_timeout;
    let app = gateway::routes(fanin.clone(), policy, timing, metrics.clone(), gateway.auth)
        .into_make_service_with_connect_info::<Peer>();
    let gateway_scheme = if gateway.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tokio::spawn(async move {
        let served = match gateway.tls {
            Some(config) => axum::serve(TlsListener::new(gateway_listener, config), app).await,
            None => axum::serve(gateway_listener, app).await,
        };
        if let Err(e) = served {
            tracing::error!("gateway stopped: {e}");
        }
    });
    spillway_plumbing::conn::spawn_http(
        metrics_listener,
        metrics::http_routes(metrics.clone()),
        timeout,
    );
    spawn_self_metrics(&fanin, &metrics, &flags);

    tracing::info!(
        "spillway-rlp serving v2 Egress on {} ({}), gateway on {gateway_scheme}://{}, metrics on http://{}, reading from {} router(s) found under {}",
        flags.addr,
        if tls.is_plaintext() {
            "PLAINTEXT"
        } else {
            "mutual TLS"
        },
        flags.gateway_addr,
        flags.metrics_addr,
        fanin.routers().len(),
        flags
            .router
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = grpc::serve(server, grpc_listener, &tls, timeout).await {
            tracing::error!("gRPC server stopped: {e}");
        }
    }))
}

/// How the gateway is served.
struct GatewaySetup {
    /// `None`: plain HTTP (`--gateway-insecure-plaintext`).
    tls: Option<rustls::ServerConfig>,
    /// `None`: no check (plain HTTP without tokens).
    auth: Option<Arc<dyn Authenticate>>,
}

/// Reads the gateway's certificate, client CA and tokens (files: run off
/// the async runtime) and checks that readers must authenticate.
fn gateway_setup(flags: &Flags) -> Result<GatewaySetup, String> {
    let tokens = flags
        .gateway_token_file
        .as_deref()
        .map(|f| StaticTokens::from_file("--gateway-token-file", f))
        .transpose()?;
    if flags.gateway_insecure_plaintext {
        if !flags.gateway_addr.ip().is_loopback() {
            return Err(format!(
                "--gateway-insecure-plaintext serves only a loopback --gateway-addr, not {}",
                flags.gateway_addr
            ));
        }
        tracing::warn!(
            "--gateway-insecure-plaintext: the gateway serves plain HTTP on {}{}",
            flags.gateway_addr,
            if tokens.is_some() {
                ""
            } else {
                " WITHOUT authentication: anyone on this host can read every log"
            }
        );
        return Ok(GatewaySetup {
            tls: None,
            auth: tokens.map(|t| Arc::new(t) as Arc<dyn Authenticate>),
        });
    }
    let (cert, key) = match (
        &flags.gateway_tls_cert,
        &flags.gateway_tls_key,
        &flags.tls.tls_cert,
        &flags.tls.tls_key,
    ) {
        (Some(c), Some(k), _, _) => (("--gateway-tls-cert", c), ("--gateway-tls-key", k)),
        (None, None, Some(c), Some(k)) => (("--tls-cert", c), ("--tls-key", k)),
        _ => {
            return Err("the gateway serves HTTPS: give --gateway-tls-cert and \
                        --gateway-tls-key (gRPC runs without TLS), or \
                        --gateway-insecure-plaintext on loopback"
                .into());
        }
    };
    let client_ca = match (&flags.gateway_client_ca, &flags.tls.tls_ca) {
        (Some(ca), _) => Some(("--gateway-client-ca", ca.as_path())),
        (None, Some(ca)) => Some(("--tls-ca", ca.as_path())),
        (None, None) => None,
    };
    let mut checks: Vec<Box<dyn Authenticate>> = Vec::new();
    if client_ca.is_some() {
        checks.push(Box::new(ClientCertificate));
    }
    if let Some(t) = tokens {
        checks.push(Box::new(t));
    }
    if checks.is_empty() {
        return Err(
            "the gateway needs a way to check readers: --gateway-token-file or \
                    --gateway-client-ca"
                .into(),
        );
    }
    let tls = tls_listener::server_config(&TlsFiles {
        cert: (cert.0, cert.1.as_path()),
        key: (key.0, key.1.as_path()),
        client_ca,
    })?;
    Ok(GatewaySetup {
        tls: Some(tls),
        auth: Some(Arc::new(AnyOf(checks))),
    })
}

/// The RLP has no ingress of its own: its metric envelopes go to the
/// routers (v2 Ingress `Send`, one router after another), and from there to
/// every consumer that selects them.
fn spawn_self_metrics(fanin: &Arc<Fanin>, metrics: &Arc<SelfMetrics>, flags: &Flags) {
    let instance = flags.self_metrics.instance_id();
    let fanin = fanin.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let m = metrics.clone();
    metrics.spawn_emitter(
        instance,
        flags.self_metrics.metrics_interval,
        move |envelopes| {
            let routers = fanin.routers();
            let n = next.fetch_add(1, Ordering::Relaxed);
            let Some(router) = routers.values().nth(n % routers.len().max(1)) else {
                m.dropped_because(
                    Direction::Egress,
                    reason::ROUTER_UNAVAILABLE,
                    envelopes.len() as u64,
                );
                return;
            };
            let channel = router.channel.clone();
            let m = m.clone();
            tokio::spawn(async move {
                let n = envelopes.len() as u64;
                let mut client = IngressClient::new(channel);
                let send = client.send(EnvelopeBatch { batch: envelopes });
                match tokio::time::timeout(Duration::from_secs(5), send).await {
                    Ok(Ok(_)) => {}
                    _ => m.dropped_because(Direction::Egress, reason::ROUTER_UNAVAILABLE, n),
                }
            });
        },
    );
}
