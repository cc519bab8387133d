//! `spillway-rlp`: the Reverse Log Proxy. Fans in from every router and
//! serves consumers over v2 Egress gRPC and the HTTP/SSE gateway.
//!
//! Data flow: [`discovery`] keeps the set of routers (every address of
//! every `--router` name) → a consumer's request: [`fanin`] subscribes it
//! on every router of the set → the consumer's diode → [`egress`] (gRPC)
//! or [`gateway`] (SSE).

pub mod discovery;
pub mod egress;
pub mod fanin;
pub mod gateway;

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

use crate::egress::RlpEgress;
use crate::fanin::Fanin;

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
    /// HTTP address of the RLP gateway (`GET /v2/read`, server-sent events).
    #[arg(long, default_value = "0.0.0.0:8088")]
    pub gateway_addr: SocketAddr,
    /// HTTP address for `/metrics` (Prometheus text) and `/health`.
    #[arg(long, default_value = "0.0.0.0:14826")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Most consumer streams (gRPC and gateway together); more are refused
    /// with ResourceExhausted (gRPC) or 503 (gateway).
    #[arg(long, default_value_t = 500)]
    pub max_streams: usize,
    /// Envelopes buffered per consumer; a slow consumer loses its oldest.
    #[arg(long, default_value_t = 10_000)]
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
        metrics.clone(),
    );
    let policy = flags.batch.policy();
    let timing = gateway::Timing {
        heartbeat: flags.heartbeat_interval,
        stream_timeout: flags.stream_timeout,
    };

    let grpc_listener = grpc::bind("--addr", flags.addr).await?;
    let gateway_listener = grpc::bind("--gateway-addr", flags.gateway_addr).await?;
    let metrics_listener = grpc::bind("--metrics-addr", flags.metrics_addr).await?;
    // A consumer that stops for a while (SIGSTOP, a long GC pause) does not
    // answer HTTP/2 pings; with the default 5 s it would lose its stream and
    // everything buffered for it. It keeps its stream instead and loses only
    // its oldest envelopes, counted (`consumer_slow`), as a slow one does.
    // A consumer that answers no ping for this long is taken for dead.
    let server = grpc::server(&tls)?
        .http2_keepalive_timeout(Some(CONSUMER_PING_TIMEOUT))
        .add_service(RlpEgress::server(fanin.clone(), policy, metrics.clone()));

    metrics::spawn_http(
        gateway_listener,
        gateway::routes(fanin.clone(), policy, timing, metrics.clone()),
    );
    metrics::spawn_http(metrics_listener, metrics::http_routes(metrics.clone()));
    spawn_self_metrics(&fanin, &metrics, &flags);

    tracing::info!(
        "spillway-rlp serving v2 Egress on {} ({}), gateway on http://{}, metrics on http://{}, reading from {} router(s) found under {}",
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
        if let Err(e) = server
            .serve_with_incoming(grpc::incoming(grpc_listener))
            .await
        {
            tracing::error!("gRPC server stopped: {e}");
        }
    }))
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
