//! Self metrics: what every Spillway binary counts about itself.
//!
//! The same numbers are served as Prometheus text on `/metrics` and emitted
//! periodically as envelopes (source id `spillway-<binary>`), so they travel
//! through Spillway like any app's metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use spillway_proto::codec::{self, Refusal};
use spillway_proto::v2::{self, Envelope};

/// Label pairs of a metric family.
pub type Labels = Vec<(String, String)>;

/// Where along the path an envelope was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// On the way in: before the stage accepted it into its buffers.
    Ingress,
    /// On the way out: in a buffer towards a consumer or the next stage.
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Reasons of `dropped{direction, reason}` (see docs/operating.md).
pub mod reason {
    /// Router: an envelope no subscription selected (no consumer yet, or
    /// none for its source or kind).
    pub const NO_SUBSCRIBER: &str = "no_subscriber";
    /// Router, RLP: a subscriber's buffer was full; its oldest was dropped.
    pub const CONSUMER_SLOW: &str = "consumer_slow";
    /// Router, RLP: still buffered for a subscriber when its stream ended.
    pub const STREAM_CLOSED: &str = "stream_closed";
    /// RLP gateway: a batch with no protobuf-JSON form.
    pub const UNENCODABLE: &str = "unencodable";
    /// RLP: its own metric envelopes, when no router took them.
    pub const ROUTER_UNAVAILABLE: &str = "router_unavailable";
}

/// The `--metrics-interval` and `--instance-id` flags of the router and RLP.
#[derive(clap::Args, Clone, Debug)]
pub struct SelfMetricsArgs {
    /// How often this process emits its own metrics as envelopes.
    #[arg(long, default_value = "15s", value_parser = crate::parse_duration)]
    pub metrics_interval: Duration,
    /// Instance id of this process's own metric envelopes (default: hostname).
    #[arg(long)]
    pub instance_id: Option<String>,
}

impl SelfMetricsArgs {
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(crate::hostname)
    }
}

/// The counters every binary keeps.
pub struct SelfMetrics {
    registry: Registry,
    source_id: String,
    /// Envelopes received.
    pub ingress: Counter,
    /// Envelopes sent on.
    pub egress: Counter,
    /// Batches (gRPC messages) sent on: `egress / egress_batches` is the
    /// mean batch size.
    pub egress_batches: Counter,
    dropped: Family<Labels, Counter>,
    /// `dropped` summed over every label set, by direction (ingress, egress).
    dropped_totals: [Counter; 2],
    /// Open subscriptions (router, RLP).
    pub subscriptions: Gauge,
    last: [AtomicU64; 4],
}

impl SelfMetrics {
    /// `binary` is `collector`, `router` or `rlp`; the envelopes it emits
    /// carry the source id `spillway-<binary>`.
    pub fn new(binary: &str) -> Self {
        let mut registry = Registry::with_prefix("spillway");
        let ingress = Counter::default();
        let egress = Counter::default();
        let egress_batches = Counter::default();
        let dropped = Family::<Labels, Counter>::default();
        let subscriptions = Gauge::default();
        registry.register("ingress", "Envelopes received", ingress.clone());
        registry.register("egress", "Envelopes sent on", egress.clone());
        registry.register(
            "egress_batches",
            "Batches (gRPC messages) sent on; egress / egress_batches is the mean batch size",
            egress_batches.clone(),
        );
        registry.register(
            "dropped",
            "Envelopes dropped, by direction (ingress: refused on arrival; egress: lost in a buffer towards the next stage)",
            dropped.clone(),
        );
        registry.register_collector(Box::new(RefusedMessages));
        registry.register(
            "subscriptions",
            "Open egress subscriptions",
            subscriptions.clone(),
        );
        SelfMetrics {
            registry,
            source_id: format!("spillway-{binary}"),
            ingress,
            egress,
            egress_batches,
            dropped,
            dropped_totals: Default::default(),
            subscriptions,
            last: Default::default(),
        }
    }

    /// Registers a further metric (before the metrics are shared).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Registers a further counter family, labelled by `label`: for
    /// example `capture_dropped{reason}`.
    pub fn counter_family(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let family = Family::<Labels, Counter>::default();
        self.registry.register(name, help, family.clone());
        family
    }

    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// Counts `n` envelopes dropped in `direction`.
    pub fn dropped(&self, direction: Direction, n: u64) {
        if n > 0 {
            self.dropped_counter(direction).inc_by(n);
            self.dropped_totals[direction as usize].inc_by(n);
        }
    }

    /// Counts `n` envelopes dropped in `direction` for `reason`
    /// (`dropped{direction="egress",reason="consumer_slow"}`). The reasons
    /// are listed in docs/operating.md.
    pub fn dropped_because(&self, direction: Direction, reason: &'static str, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&vec![
                    ("direction".to_owned(), direction.as_str().to_owned()),
                    ("reason".to_owned(), reason.to_owned()),
                ])
                .inc_by(n);
            self.dropped_totals[direction as usize].inc_by(n);
        }
    }

    /// The `dropped` family itself, for stages that count drops under
    /// labels of their own (`dropped{direction="egress",route="r1"}`).
    pub fn dropped_family(&self) -> Family<Labels, Counter> {
        self.dropped.clone()
    }

    /// Envelopes dropped in `direction`, for every reason. (Drops counted
    /// through [`SelfMetrics::dropped_family`] under labels of their own
    /// are not included.)
    pub fn dropped_total(&self, direction: Direction) -> u64 {
        self.dropped_totals[direction as usize].get()
    }

    fn dropped_counter(&self, direction: Direction) -> Counter {
        self.dropped
            .get_or_create(&vec![(
                "direction".to_owned(),
                direction.as_str().to_owned(),
            )])
            .clone()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The current values as envelopes: a counter envelope each for
    /// `ingress`, `egress` and `dropped` (tagged `direction`), with the delta
    /// since the previous call and the running total, and a gauge envelope
    /// for `subscriptions`.
    pub fn envelopes(&self, instance_id: &str) -> Vec<Envelope> {
        let counters = [
            ("ingress", None, self.ingress.get()),
            ("egress", None, self.egress.get()),
            (
                "dropped",
                Some(Direction::Ingress),
                self.dropped_total(Direction::Ingress),
            ),
            (
                "dropped",
                Some(Direction::Egress),
                self.dropped_total(Direction::Egress),
            ),
        ];
        let mut out = Vec::with_capacity(5);
        for (i, (name, direction, total)) in counters.into_iter().enumerate() {
            let before = self.last[i].swap(total, Ordering::Relaxed);
            let mut e =
                Envelope::counter(&self.source_id, name, total.saturating_sub(before), total);
            e.instance_id = instance_id.to_owned();
            if let Some(d) = direction {
                e.tags.insert("direction".into(), d.as_str().into());
            }
            out.push(e);
        }
        let mut gauge = v2::Gauge::default();
        gauge.metrics.insert(
            "subscriptions".into(),
            v2::GaugeValue {
                unit: "count".into(),
                value: self.subscriptions.get() as f64,
            },
        );
        out.push(Envelope {
            timestamp: spillway_proto::now_nanos(),
            source_id: self.source_id.clone(),
            instance_id: instance_id.to_owned(),
            message: Some(v2::envelope::Message::Gauge(gauge)),
            ..Default::default()
        });
        out
    }

    /// Every `interval`, hands [`SelfMetrics::envelopes`] to `sink`.
    pub fn spawn_emitter(
        self: &Arc<Self>,
        instance_id: String,
        interval: Duration,
        sink: impl Fn(Vec<Envelope>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                sink(me.envelopes(&instance_id));
            }
        })
    }
}

/// `refused_messages{reason}`: gRPC messages refused whole, and
/// `refused_envelopes{reason}`: the envelopes they held where known, from
/// the process-wide counts of [`spillway_proto::codec::refusals`].
#[derive(Debug)]
struct RefusedMessages;

impl prometheus_client::collector::Collector for RefusedMessages {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        let mut family = encoder.encode_descriptor(
            "refused_messages",
            "gRPC messages refused whole (their envelopes with them), by reason: malformed, too_many_envelopes, too_many_tags, too_large",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for why in Refusal::ALL {
            let labels = [("reason", why.as_str())];
            ConstCounter::new(codec::refusals().get(why)).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "refused_envelopes",
            "Envelopes in gRPC messages refused whole, by the message's reason, where their number is known (not for too_large; not for a malformed batch)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for why in Refusal::ALL {
            let labels = [("reason", why.as_str())];
            ConstCounter::new(codec::refusals().envelopes(why))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `/metrics` (Prometheus text) and `/health` (always ready).
pub fn http_routes(metrics: Arc<SelfMetrics>) -> Router {
    http_routes_with_health(metrics, crate::health::Health::new())
}

/// `/metrics` (Prometheus text) and `/health`: 200 `ok` when `health` has
/// nothing pending, else 503 with a line per part that is not ready.
/// `/health/live` answers 200 whenever the process serves HTTP at all (for
/// liveness probes, which must not restart a process that waits on Docker).
pub fn http_routes_with_health(
    metrics: Arc<SelfMetrics>,
    health: Arc<crate::health::Health>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/health/live", get(|| async { "ok\n" }))
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move {
                    match health.check() {
                        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                        Err(pending) => (StatusCode::SERVICE_UNAVAILABLE, pending),
                    }
                }
            }),
        )
}

/// Serves `router` over HTTP on `listener` until the process ends, with
/// the default handshake timeout ([`crate::conn::spawn_http`]).
pub fn spawn_http(
    listener: tokio::net::TcpListener,
    router: Router,
) -> tokio::task::JoinHandle<()> {
    crate::conn::spawn_http(listener, router, crate::conn::DEFAULT_HANDSHAKE_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_and_emits_deltas() {
        let m = SelfMetrics::new("router");
        m.ingress.inc_by(5);
        m.dropped(Direction::Egress, 2);
        let text = m.render();
        assert!(text.contains("spillway_ingress_total 5"), "{text}");
        assert!(
            text.contains("spillway_dropped_total{direction=\"egress\"} 2"),
            "{text}"
        );

        let first = m.envelopes("i0");
        let ingress = &first[0];
        assert_eq!(ingress.source_id, "spillway-router");
        match &ingress.message {
            Some(v2::envelope::Message::Counter(c)) => {
                assert_eq!((c.name.as_str(), c.delta, c.total), ("ingress", 5, 5))
            }
            other => panic!("{other:?}"),
        }
        m.ingress.inc_by(3);
        match &m.envelopes("i0")[0].message {
            Some(v2::envelope::Message::Counter(c)) => assert_eq!((c.delta, c.total), (3, 8)),
            other => panic!("{other:?}"),
        }
        assert_eq!(first[3].tags["direction"], "egress");
    }

    #[test]
    fn drops_with_a_reason_are_labelled_and_in_the_totals() {
        let m = SelfMetrics::new("rlp");
        m.dropped(Direction::Egress, 2);
        m.dropped_because(Direction::Egress, "consumer_slow", 3);
        m.dropped_because(Direction::Egress, "stream_closed", 0);
        let text = m.render();
        assert!(
            text.contains(
                "spillway_dropped_total{direction=\"egress\",reason=\"consumer_slow\"} 3"
            ),
            "{text}"
        );
        assert!(!text.contains("stream_closed"), "{text}");
        assert_eq!(m.dropped_total(Direction::Egress), 5);
        assert_eq!(m.dropped_total(Direction::Ingress), 0);
    }
}
