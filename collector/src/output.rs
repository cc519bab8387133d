//! Where container sources hand their envelopes: one diode per shard.
//!
//! Envelopes of one container always go to the same diode (its *shard*),
//! and the shipper sends each diode's envelopes in order over one link at a
//! time, so a container's lines reach consumers in the order written.

use std::sync::Arc;

use spillway_plumbing::diode::Diode;
use spillway_plumbing::fnv;
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::v2::Envelope;
use spillway_routes::{Event, Hub};

use crate::container::{Container, EnvelopeTemplate, Stream};
use crate::lines::Line;

/// One diode per shard, each drained by its own ordered lane
/// ([`crate::shipper`]).
pub type Shards = Arc<[Arc<Diode<Envelope>>]>;

/// `count` shard diodes of `capacity` envelopes each.
pub fn shards(count: usize, capacity: usize) -> Shards {
    (0..count.max(1))
        .map(|_| Arc::new(Diode::new(capacity)))
        .collect()
}

#[derive(Clone)]
pub struct Output {
    diodes: Shards,
    host: Arc<str>,
    metrics: Arc<SelfMetrics>,
    routes: Arc<Hub>,
}

impl Output {
    /// Container lines go to `diodes` (towards the routers) and, when
    /// routes or `/logs` clients listen, to `routes`.
    pub fn new(diodes: Shards, host: &str, metrics: Arc<SelfMetrics>, routes: Arc<Hub>) -> Self {
        Output {
            diodes,
            host: host.into(),
            metrics,
            routes,
        }
    }

    /// The envelope template (ids and tags) for `c` on this host.
    pub fn template(&self, c: &Container) -> EnvelopeTemplate {
        EnvelopeTemplate::new(c, &self.host)
    }

    /// How many shards (diodes) there are.
    pub fn shards(&self) -> usize {
        self.diodes.len()
    }

    /// The shard of a container: a stable hash of its id.
    pub fn shard_of(&self, container_id: &str) -> usize {
        (fnv::hash(container_id.as_bytes(), fnv::OFFSET) % self.shards() as u64) as usize
    }

    /// Sends one line of a container: to the routes that want it, and into
    /// `shard`'s diode.
    pub fn line(&self, shard: usize, template: &EnvelopeTemplate, stream: Stream, line: Line) {
        let e = template.envelope(stream, line);
        self.routes.publish(|| Event {
            envelope: e.clone(),
            container: Some(template.info.clone()),
        });
        self.send(shard, e);
    }

    /// Parks `e` in `shard`'s diode; a full diode drops its oldest envelope
    /// and counts it.
    pub fn send(&self, shard: usize, e: Envelope) {
        self.metrics.ingress.inc();
        if self.diodes[shard % self.shards()].push(e) {
            self.metrics.dropped(Direction::Ingress, 1);
        }
    }
}
