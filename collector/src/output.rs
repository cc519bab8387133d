//! Where container sources hand their envelopes: one diode per shard.
//!
//! Envelopes of one container always go to the same diode (its *shard*),
//! and the shipper sends each diode's envelopes in order over one link at a
//! time, so a container's lines reach consumers in the order written.
//!
//! The diodes hold envelopes already encoded (protobuf bytes, one
//! allocation per line: [`EnvelopeTemplate::encode`]); a prost `Envelope`
//! is built for a line only when a route or a `/logs` client listens.

use std::sync::Arc;

use bytes::Bytes;

use spillway_plumbing::diode::Diode;
use spillway_plumbing::fnv;
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_routes::{Event, Hub};

use crate::container::{Container, EnvelopeTemplate, Stream};
use crate::lines::Line;

/// One diode per shard, each drained by its own ordered lane
/// ([`crate::shipper`]). Each entry is one `Envelope`'s protobuf bytes.
pub type Shards = Arc<[Arc<Diode<Bytes>>]>;

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

    /// The `host` tag of this collector's envelopes.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How many shards (diodes) there are.
    pub fn shards(&self) -> usize {
        self.diodes.len()
    }

    /// The shard of a container: a stable hash of its id.
    pub fn shard_of(&self, container_id: &str) -> usize {
        (fnv::hash(container_id.as_bytes(), fnv::OFFSET) % self.shards() as u64) as usize
    }

    /// Sends one line of a container: encoded into `shard`'s diode, and to
    /// the routes and `/logs` clients, if any listen (only then is an
    /// `Envelope` built for it).
    pub fn line(&self, shard: usize, template: &EnvelopeTemplate, stream: Stream, line: Line) {
        let encoded = self.publish(template, stream, line);
        self.send(shard, encoded);
    }

    /// Like [`Output::line`], but the shard's lane is not woken until
    /// [`Output::end_round`]: for a source that hands lines in rounds (an
    /// eBPF ring loop drains its ring in rounds). The lane then takes a
    /// round's lines as full batches, instead of being woken, and sending,
    /// for every few lines while the source is busy.
    pub fn line_in_round(
        &self,
        shard: usize,
        template: &EnvelopeTemplate,
        stream: Stream,
        line: Line,
    ) {
        let encoded = self.publish(template, stream, line);
        self.park(shard, encoded, false);
    }

    /// How many more envelopes `shard`'s diode takes before it drops its
    /// oldest: a source with a backlog of its own feeds it at that pace.
    pub fn room(&self, shard: usize) -> usize {
        self.diode(shard).room()
    }

    /// Whether `shard`'s diode is empty (its lane took everything).
    pub fn is_drained(&self, shard: usize) -> bool {
        self.diode(shard).is_empty()
    }

    /// Counts `n` lines a source dropped before they reached a diode (its
    /// own backlog overflowed), like the diode's own drops.
    pub fn dropped_before_diode(&self, n: u64) {
        self.metrics.ingress.inc_by(n);
        self.metrics.dropped(Direction::Ingress, n);
    }

    /// Ends a round of [`Output::line_in_round`]: wakes `shard`'s lane if
    /// lines wait for it.
    pub fn end_round(&self, shard: usize) {
        self.diode(shard).wake_if_ready();
    }

    /// Encodes a container line for the diodes, and hands it to the routes
    /// if any listen.
    fn publish(&self, template: &EnvelopeTemplate, stream: Stream, line: Line) -> Bytes {
        let encoded = template.encode(stream, &line);
        self.routes.publish(|| Event {
            envelope: template.envelope(stream, line),
            container: Some(template.info.clone()),
        });
        encoded
    }

    fn diode(&self, shard: usize) -> &Diode<Bytes> {
        &self.diodes[shard % self.shards()]
    }

    /// Parks an encoded envelope in `shard`'s diode; a full diode drops its
    /// oldest envelope and counts it.
    pub fn send(&self, shard: usize, e: Bytes) {
        self.park(shard, e, true);
    }

    /// Counts `e` in, parks it in `shard`'s diode (counting the oldest if
    /// it must go), and wakes the lane if `wake`.
    fn park(&self, shard: usize, e: Bytes, wake: bool) {
        self.metrics.ingress.inc();
        let diode = self.diode(shard);
        let dropped = if wake {
            diode.push(e)
        } else {
            diode.push_quiet(e)
        };
        if dropped {
            self.metrics.dropped(Direction::Ingress, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prost::Message as _;
    use spillway_proto::v2::Envelope;
    use spillway_routes::filter::Matcher;
    use spillway_routes::hub::Tap;

    fn container() -> Container {
        Container {
            id: "c".repeat(64),
            name: "web-1".into(),
            image: "busybox".into(),
            ..Default::default()
        }
    }

    fn line(payload: &'static [u8], partial: bool) -> Line {
        Line {
            payload: Bytes::from_static(payload),
            timestamp: 7,
            partial,
        }
    }

    #[test]
    fn lines_go_encoded_to_their_shard_and_as_envelopes_to_listening_routes() {
        let shards = shards(2, 10);
        let metrics = Arc::new(SelfMetrics::new("collector"));
        let hub = Hub::new();
        let out = Output::new(shards.clone(), "h", metrics, hub.clone());
        let t = out.template(&container());

        // Nobody listens: only the diode gets the line.
        out.line(1, &t, Stream::Stdout, line(b"one", false));
        let tap = Tap::new(Matcher::default(), false, 10, Counter::default());
        hub.attach(tap.clone());
        out.line(1, &t, Stream::Stderr, line(b"two", true));

        assert!(shards[0].pop().is_none());
        let decoded: Vec<Envelope> = std::iter::from_fn(|| shards[1].pop())
            .map(|b| Envelope::decode(b).unwrap())
            .collect();
        assert_eq!(
            decoded,
            [
                t.envelope(Stream::Stdout, line(b"one", false)),
                t.envelope(Stream::Stderr, line(b"two", true)),
            ]
        );
        let event = tap.pop().expect("the route got the second line");
        assert_eq!(event.envelope, decoded[1]);
        assert_eq!(event.container.as_deref(), Some(&*t.info));
        assert!(tap.pop().is_none(), "and only that one");
    }
}
