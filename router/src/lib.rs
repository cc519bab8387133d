//! `spillway-router`: receives envelopes from collectors (v2 Ingress) and
//! from Loggregator agents (v1, [`v1`]) and routes them to subscribers (v2
//! Egress), all on one gRPC port.
//!
//! Data flow: [`ingress`](spillway_plumbing::ingress) checks and peeks
//! batches (envelopes stay bytes, [`spillway_proto::encoded`]; [`v1`]
//! converts v1 envelopes and encodes them) →
//! [`pubsub::PubSub::publish`] matches [`selectors`] and shard groups on the
//! peeked keys → each subscription's diode (the shared bytes) →
//! [`egress`] writes them out to its consumer unchanged.

pub mod egress;
pub mod pubsub;
pub mod selectors;
pub mod v1;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use spillway_plumbing::batch::BatchArgs;
use spillway_plumbing::grpc::{self, DEFAULT_MAX_MESSAGE_BYTES};
use spillway_plumbing::ingress::IngressService;
use spillway_plumbing::metrics::{self, SelfMetrics, SelfMetricsArgs};
use spillway_plumbing::tls::TlsArgs;
use spillway_proto::encoded::WireEnvelope;

use crate::egress::RouterEgress;
use crate::pubsub::PubSub;
use crate::v1::V1Ingest;

/// Receives envelopes from collectors and routes them to subscribers.
#[derive(Parser, Debug, Clone)]
#[command(name = "spillway-router", version)]
pub struct Flags {
    /// TOML file with any of these flags as keys (`addr = "0.0.0.0:8082"`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC address for v2 Ingress (from collectors), v1 ingest (from
    /// Loggregator agents) and v2 Egress (to RLPs).
    #[arg(long, default_value = "0.0.0.0:8082")]
    pub addr: SocketAddr,
    /// HTTP address for `/metrics` (Prometheus text) and `/health`.
    /// Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:14825")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub conn: spillway_plumbing::conn::ConnArgs,
    /// Largest gRPC message accepted; larger ones are refused with an error
    /// (64 KiB to 64 MiB).
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES, value_parser = grpc::message_bytes_parser())]
    pub max_message_bytes: usize,
    /// Most envelopes one ingress message (`EnvelopeBatch`) may hold; larger
    /// batches are refused whole with ResourceExhausted before they are
    /// decoded, and counted (1 to 100000).
    #[arg(long, default_value_t = spillway_proto::codec::DEFAULT_MAX_BATCH_ENVELOPES,
          value_parser = spillway_plumbing::usize_in(1, 100_000))]
    pub max_batch_envelopes: usize,
    /// Envelopes buffered per subscription; a slow consumer loses its oldest
    /// (1 to 1000000).
    #[arg(long, default_value_t = 10_000, value_parser = spillway_plumbing::usize_in(1, grpc::MAX_BUFFER_ENVELOPES))]
    pub subscription_buffer: usize,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub self_metrics: SelfMetricsArgs,
}

/// Starts the router. Errors here are bad input (files, addresses) and
/// should end the process with status 2.
pub async fn start(flags: Flags) -> Result<tokio::task::JoinHandle<()>, String> {
    let tls = flags.tls.load()?;
    spillway_proto::codec::set_max_batch_envelopes(flags.max_batch_envelopes);
    let metrics = Arc::new(SelfMetrics::new("router"));
    let pubsub = PubSub::new(flags.subscription_buffer, metrics.clone());
    let policy = flags.batch.policy();

    let ingress = {
        let pubsub = pubsub.clone();
        Arc::new(move |batch: Vec<WireEnvelope>| {
            pubsub.publish(
                batch
                    .into_iter()
                    .map(WireEnvelope::normalize_at_ingress)
                    .collect(),
            )
        })
    };
    let grpc_listener = grpc::bind("--addr", flags.addr).await?;
    let http_listener = grpc::bind("--metrics-addr", flags.metrics_addr).await?;
    let server = grpc::builder()
        .add_service(IngressService::server(
            ingress.clone(),
            metrics.clone(),
            flags.max_message_bytes,
        ))
        .add_service(V1Ingest::server(
            ingress,
            metrics.clone(),
            flags.max_message_bytes,
        ))
        .add_service(RouterEgress::server(
            pubsub.clone(),
            policy,
            metrics.clone(),
        ));

    spillway_plumbing::conn::spawn_http(
        http_listener,
        metrics::http_routes(metrics.clone()),
        flags.conn.handshake_timeout,
    );
    let instance = flags.self_metrics.instance_id();
    {
        let pubsub = pubsub.clone();
        metrics.spawn_emitter(
            instance,
            flags.self_metrics.metrics_interval,
            move |envelopes| {
                pubsub.publish(envelopes.iter().map(WireEnvelope::from_envelope).collect())
            },
        );
    }
    tracing::info!(
        "spillway-router serving gRPC on {} ({}), metrics on http://{}",
        flags.addr,
        if tls.is_plaintext() {
            "PLAINTEXT"
        } else {
            "mutual TLS"
        },
        flags.metrics_addr
    );
    Ok(tokio::spawn(async move {
        let timeout = flags.conn.handshake_timeout;
        if let Err(e) = grpc::serve(server, grpc_listener, &tls, timeout).await {
            tracing::error!("gRPC server stopped: {e}");
        }
    }))
}
