//! Envelopes that apps send to the v2 Ingress API (and the collector's own
//! metrics): [`enrich`](crate::enrich)ed, offered to the routes that take
//! metrics, and parked in the per-core diodes that the shipper's app lane
//! drains. They stay encoded all the way: the diodes hold protobuf bytes.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use spillway_plumbing::diode::PerCore;
use spillway_plumbing::ingress::Sink;
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::Kind;
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::v2::Envelope;
use spillway_routes::{Event, Hub};

use crate::enrich::Enricher;

/// The [`Sink`] of the collector's v2 Ingress service.
pub struct AppEnvelopes {
    enricher: Enricher,
    diodes: Arc<PerCore<Bytes>>,
    metrics: Arc<SelfMetrics>,
    routes: Arc<Hub>,
}

impl AppEnvelopes {
    pub fn new(
        host: String,
        diodes: Arc<PerCore<Bytes>>,
        metrics: Arc<SelfMetrics>,
        routes: Arc<Hub>,
    ) -> Self {
        AppEnvelopes {
            enricher: Enricher::new(host),
            diodes,
            metrics,
            routes,
        }
    }

    /// Takes the collector's own metrics (built here, not received).
    pub fn accept_own(&self, envelopes: Vec<Envelope>) {
        self.accept(envelopes.iter().map(WireEnvelope::from_envelope).collect());
    }
}

impl Sink for AppEnvelopes {
    fn accept(&self, batch: Vec<WireEnvelope>) {
        let mut dropped = 0;
        for w in batch {
            let log = w.kind() == Some(Kind::Log);
            let bytes = self.enricher.enrich_wire(w);
            // Apps' metrics go to routes that ask (include=metrics).
            if !log {
                self.routes.publish_metric(|| Event {
                    envelope: Envelope::decode(bytes.clone()).expect("enriched bytes decode"),
                    container: None,
                });
            }
            dropped += u64::from(self.diodes.push(bytes));
        }
        self.metrics.dropped(Direction::Ingress, dropped);
    }
}
