//! `spillway-collector`: the node agent.
//!
//! Data flow:
//!
//! - Containers: [`runtime`] follows the running containers; a source in
//!   [`capture`] (eBPF capture in the kernel, or the Docker API) turns what
//!   they write into lines ([`lines`]) and envelopes ([`container`]), parked
//!   in one diode per shard ([`output`]) so each stream keeps its order.
//! - Apps send envelopes to the v2 Ingress API
//!   ([`spillway_plumbing::ingress`]) → [`apps`]: [`enrich`] (source id
//!   fallback, counter totals, `host` tag) → the per-core diodes, encoded
//!   as received plus what enrichment appends.
//! - [`shipper`] batches both to the routers over gRPC BatchSender streams.
//! - Container lines (and, for routes that ask, metrics from ingress) also
//!   go to the routes of [`spillway_routes`] (syslog and raw receivers) and
//!   to `/logs` clients, served on the HTTP port with the routes API
//!   ([`http`]).

pub mod apps;
pub mod capture;
pub mod container;
pub mod enrich;
pub mod http;
pub mod lines;
pub mod output;
pub mod runtime;
pub mod shipper;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use spillway_plumbing::batch::BatchArgs;
use spillway_plumbing::diode::PerCore;
use spillway_plumbing::grpc::{self, DEFAULT_MAX_MESSAGE_BYTES, HostPort};
use spillway_plumbing::health::Health;
use spillway_plumbing::ingress::IngressService;
use spillway_plumbing::metrics::SelfMetrics;
use spillway_plumbing::tls::TlsArgs;
use spillway_plumbing::{parse_duration, usize_in};

use spillway_routes::{Hub, RouteMetrics, Routes};

use crate::apps::AppEnvelopes;
use crate::capture::SourceKind;
use crate::output::Output;
use crate::runtime::{Endpoints, RuntimeKind};

/// Node agent: takes envelopes from apps and ships them to routers.
#[derive(Parser, Debug, Clone)]
#[command(name = "spillway-collector", version)]
pub struct Flags {
    /// TOML file with any of these flags as keys (`router = ["r1:8082"]`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A router to ship to (repeatable, or comma-separated). Several routers
    /// are load-balanced and failed over.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub router: Vec<HostPort>,
    /// gRPC address of the v2 Ingress API for apps.
    #[arg(long, default_value = "127.0.0.1:3458")]
    pub ingress_addr: SocketAddr,
    /// HTTP address for `/health`, `/metrics`, the routes API and `/logs`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Bearer token every HTTP endpoint but `/health` then requires.
    /// Required when --http-addr is not a loopback address.
    #[arg(long, value_name = "TOKEN")]
    pub http_token: Option<String>,
    /// A logspout-style route (repeatable), e.g.
    /// `syslog+tls://logs.example:6514?filter.name=web-*`. Routes given
    /// here are not saved; those added by the routes API are.
    #[arg(long = "route", value_name = "URI")]
    pub route: Vec<String>,
    /// Routes the collector holds at most (`--route`, the routes API and
    /// the saved ones together); the API refuses more with 400.
    #[arg(long, value_name = "N", default_value_t = spillway_routes::table::DEFAULT_MAX_ROUTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=spillway_routes::table::MAX_MAX_ROUTES as u64))]
    pub max_routes: u64,
    /// Where the routes added by the routes API are kept across restarts.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/spillway")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub conn: spillway_plumbing::conn::ConnArgs,
    /// Where container output comes from: `auto` (eBPF where the kernel and
    /// privileges allow, else the CRI log files when --pod-logs-dir exists,
    /// else the Docker API), `ebpf`, `docker`, `files`, or `none`.
    #[arg(long, value_enum, default_value_t = SourceKind::Auto)]
    pub source: SourceKind,
    /// Where the kubelet keeps the pods' CRI log files
    /// (`<namespace>_<pod>_<uid>/<container>/<restart>.log`), for
    /// `--source files`; that it exists makes `auto` take the files when
    /// eBPF cannot run.
    #[arg(long, value_name = "DIR", default_value = capture::files::DEFAULT_POD_LOGS_DIR)]
    pub pod_logs_dir: PathBuf,
    /// How often `--source files` lists the pod logs directory and reads
    /// what the files gained (10ms to 10s).
    #[arg(long, value_name = "DURATION", default_value = "250ms",
          value_parser = capture::files::parse_poll_interval)]
    pub files_poll_interval: Duration,
    /// Which container runtime to follow: `auto` (the first whose socket
    /// answers: Docker, then CRI, then podman), `docker`, `cri`
    /// (containerd, CRI-O) or `podman`.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Auto)]
    pub runtime: RuntimeKind,
    /// The Docker API (`unix:///path` or `tcp://host:port`).
    #[arg(long, value_name = "URI", default_value_t = runtime::docker::default_host())]
    pub docker_host: String,
    /// The CRI runtime's socket (`unix:///path`). Default: containerd's
    /// (unix:///run/containerd/containerd.sock), else CRI-O's
    /// (unix:///var/run/crio/crio.sock), whichever answers.
    #[arg(long, value_name = "URI")]
    pub cri_endpoint: Option<String>,
    /// podman's Docker-compatible API (`podman system service`).
    #[arg(long, value_name = "URI", default_value = runtime::docker::PODMAN_DEFAULT_HOST)]
    pub podman_host: String,
    /// Bytes of each eBPF ring buffer (one per CPU): a power of two. The
    /// default holds about 100 ms of the highest rate measured here.
    /// At most 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = capture::ebpf::kernel::Options::DEFAULT_RING_BYTES,
          value_parser = clap::value_parser!(u32).range(4096..=1 << 30))]
    pub ring_bytes: u32,
    /// The `host` tag added to every envelope (default: this machine's hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Largest gRPC message accepted on ingress (larger ones are refused) and
    /// sent to a router (give routers the same limit).
    /// 64 KiB to 64 MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES, value_parser = grpc::message_bytes_parser())]
    pub max_message_bytes: usize,
    /// Most envelopes one ingress message (`EnvelopeBatch`) may hold; larger
    /// batches are refused whole with ResourceExhausted before they are
    /// decoded, and counted (1 to 100000).
    #[arg(long, default_value_t = spillway_proto::codec::DEFAULT_MAX_BATCH_ENVELOPES,
          value_parser = spillway_plumbing::usize_in(1, 100_000))]
    pub max_batch_envelopes: usize,
    /// Envelopes buffered per CPU core before the oldest are dropped (1 to
    /// 1000000).
    #[arg(long, default_value_t = 10_000, value_parser = usize_in(1, grpc::MAX_BUFFER_ENVELOPES))]
    pub buffer_per_core: usize,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Connections (BatchSender streams) kept to each router (1 to 64).
    #[arg(long, default_value_t = 2, value_parser = usize_in(1, 64))]
    pub links_per_router: usize,
    /// How often the collector emits its own metrics as envelopes.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub metrics_interval: Duration,
}

/// Starts the collector. Errors here are bad input (files, addresses) and
/// should end the process with status 2.
pub async fn start(flags: Flags) -> Result<tokio::task::JoinHandle<()>, String> {
    let tls = flags.tls.load()?;
    spillway_proto::codec::set_max_batch_envelopes(flags.max_batch_envelopes);
    http::check_token(flags.http_addr, flags.http_token.as_deref())?;
    let host = flags
        .hostname
        .clone()
        .unwrap_or_else(spillway_plumbing::hostname);
    let mut metrics = SelfMetrics::new("collector");
    let capture_dropped = metrics.counter_family(
        "capture_dropped",
        "Container output capture could not deliver whole (eBPF writes, log file records), by reason",
    );
    let files_followed = prometheus_client::metrics::gauge::Gauge::default();
    metrics.registry_mut().register(
        "files_followed",
        "CRI log files the files source holds open",
        files_followed.clone(),
    );
    let capture_metrics = capture::Metrics {
        ebpf: capture::ebpf::Metrics {
            dropped: capture_dropped.clone(),
            container_dropped: metrics.counter_family(
                "capture_container_dropped",
                "Container writes the eBPF program could not deliver whole, by container and reason",
            ),
        },
        files: capture::files::Metrics {
            dropped: capture_dropped,
            followed: files_followed,
        },
    };
    let route_metrics = RouteMetrics::register(&mut metrics);
    let metrics = Arc::new(metrics);
    let hub = Hub::new();
    let routes = Routes::new(
        hub.clone(),
        route_metrics.clone(),
        Some(&flags.state_dir),
        flags.max_routes as usize,
    )?;
    // Building routes reads the files they name: blocking work.
    let restored = tokio::task::spawn_blocking({
        let (routes, uris) = (routes.clone(), flags.route.clone());
        move || {
            routes.start_flags(&uris)?;
            routes.restore()
        }
    })
    .await
    .map_err(|e| format!("starting the routes failed: {e}"))??;
    let diodes: Arc<PerCore<Bytes>> = PerCore::for_this_machine(flags.buffer_per_core);

    let routers = flags
        .router
        .iter()
        .map(|r| Ok((r.clone(), grpc::endpoint(r, &tls)?)))
        .collect::<Result<Vec<_>, String>>()?;
    if routers.is_empty() {
        tracing::warn!("no --router given: envelopes are buffered, then dropped and counted");
    }

    let ingress_listener = grpc::bind("--ingress-addr", flags.ingress_addr).await?;
    let http_listener = grpc::bind("--http-addr", flags.http_addr).await?;
    // The HTTP port answers at once; /health says 503 until capture and
    // shipping are ready, so that orchestrators wait.
    let health = Health::new();
    health.pending(capture::HEALTH_PART, "starting");
    health.pending(shipper::HEALTH_PART, "starting");
    let http_context = http::Context {
        metrics: metrics.clone(),
        health: health.clone(),
        hub: hub.clone(),
        routes: routes.clone(),
        route_metrics,
    };
    spillway_plumbing::conn::spawn_http(
        http_listener,
        http::router(&http_context, flags.http_token.clone()),
        flags.conn.handshake_timeout,
    );

    let apps = Arc::new(AppEnvelopes::new(
        host.clone(),
        diodes.clone(),
        metrics.clone(),
        hub.clone(),
    ));
    let server = grpc::builder().add_service(IngressService::server(
        apps.clone(),
        metrics.clone(),
        flags.max_message_bytes,
    ));

    let policy = flags.batch.policy();
    let shards = output::shards(diodes.cores(), flags.buffer_per_core);
    let output = Output::new(shards.clone(), &host, metrics.clone(), hub.clone());
    let cri_endpoints = flags.cri_endpoint.clone().unwrap_or_else(|| {
        format!(
            "{} or {}",
            spillway_cri_api::CONTAINERD_ENDPOINT,
            spillway_cri_api::CRIO_ENDPOINT
        )
    });
    let needs_runtime = !matches!(flags.source, SourceKind::None | SourceKind::Files);
    match flags.runtime {
        _ if !needs_runtime => {}
        RuntimeKind::Auto => health.pending(
            capture::HEALTH_PART,
            format!(
                "finding the container runtime: asking Docker at {}, the CRI at {cri_endpoints}, podman at {}",
                flags.docker_host, flags.podman_host
            ),
        ),
        RuntimeKind::Cri => health.pending(
            capture::HEALTH_PART,
            format!("finding the CRI runtime at {cri_endpoints}"),
        ),
        RuntimeKind::Docker | RuntimeKind::Podman => {}
    }
    // The files source takes its tags from the files' paths.
    let runtime = match needs_runtime {
        false => None,
        true => Some(
            runtime::select(
                flags.runtime,
                &Endpoints {
                    docker_host: flags.docker_host.clone(),
                    cri_endpoint: flags.cri_endpoint.clone(),
                    podman_host: flags.podman_host.clone(),
                },
            )
            .await?,
        ),
    };
    let source = capture::start(
        flags.source,
        runtime,
        flags.ring_bytes,
        capture::files::Options {
            dir: flags.pod_logs_dir.clone(),
            poll_interval: flags.files_poll_interval,
            state_dir: flags.state_dir.clone(),
        },
        output,
        capture_metrics,
        health.clone(),
    )?;
    shipper::spawn(
        diodes.clone(),
        shards,
        routers,
        flags.links_per_router,
        policy,
        flags.max_message_bytes,
        metrics.clone(),
    );
    health.ready(shipper::HEALTH_PART);
    metrics.spawn_emitter(host.clone(), flags.metrics_interval, move |envelopes| {
        apps.accept_own(envelopes)
    });

    tracing::info!(
        "spillway-collector: v2 ingress on {} ({}), HTTP on http://{}, shipping to {} router(s), host tag {host:?}",
        flags.ingress_addr,
        if tls.is_plaintext() {
            "PLAINTEXT"
        } else {
            "mutual TLS"
        },
        flags.http_addr,
        flags.router.len(),
    );
    tracing::debug!("container source: {source:?}");
    if !flags.route.is_empty() || restored > 0 {
        tracing::info!(
            "routes: {} from --route, {restored} restored from {}",
            flags.route.len(),
            flags.state_dir.display()
        );
    }
    // The routes live as long as the server task.
    let routes_alive = routes;
    Ok(tokio::spawn(async move {
        let _routes = routes_alive;
        let timeout = flags.conn.handshake_timeout;
        if let Err(e) = grpc::serve(server, ingress_listener, &tls, timeout).await {
            tracing::error!("gRPC server stopped: {e}");
        }
    }))
}
