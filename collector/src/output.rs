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

use crate::container::{Container, EnvelopeTemplate};

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
}

impl Output {
    pub fn new(diodes: Shards, host: &str, metrics: Arc<SelfMetrics>) -> Self {
        Output {
            diodes,
            host: host.into(),
            metrics,
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

    /// Parks `e` in `shard`'s diode; a full diode drops its oldest envelope
    /// and counts it.
    pub fn send(&self, shard: usize, e: Envelope) {
        self.metrics.ingress.inc();
        if self.diodes[shard % self.shards()].push(e) {
            self.metrics.dropped(Direction::Ingress, 1);
        }
    }
}
