//! Where container sources hand their envelopes: the per-core diodes.
//!
//! Envelopes of one container always go to the same diode (its *shard*),
//! and the shipper sends each diode's envelopes in order over one link at a
//! time, so a container's lines reach consumers in the order written.

use std::sync::Arc;

use spillway_plumbing::diode::PerCore;
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::v2::Envelope;

use crate::container::{Container, EnvelopeTemplate};

#[derive(Clone)]
pub struct Output {
    diodes: Arc<PerCore<Envelope>>,
    host: Arc<str>,
    metrics: Arc<SelfMetrics>,
}

impl Output {
    pub fn new(diodes: Arc<PerCore<Envelope>>, host: &str, metrics: Arc<SelfMetrics>) -> Self {
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
        self.diodes.cores()
    }

    /// The shard of a container: a stable hash of its id.
    pub fn shard_of(&self, container_id: &str) -> usize {
        (fnv1a(container_id.as_bytes()) % self.shards() as u64) as usize
    }

    /// Parks `e` in `shard`'s diode; a full diode drops its oldest envelope
    /// and counts it.
    pub fn send(&self, shard: usize, e: Envelope) {
        self.metrics.ingress.inc();
        if self.diodes.push_to(shard % self.shards(), e) {
            self.metrics.dropped(Direction::Ingress, 1);
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
