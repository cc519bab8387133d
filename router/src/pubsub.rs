//! Publish/subscribe: which subscriptions get an envelope.
//!
//! Subscriptions live in an immutable [`Snapshot`] that is rebuilt when one
//! comes or goes, so publishing takes no lock beyond cloning an `Arc`.
//! Selectors are indexed by source id; those with an empty source id match
//! any source.
//!
//! Shard groups: subscriptions with the same non-empty `shard_id` share the
//! stream, each envelope going to one member that matches it, in turn
//! (round-robin). When members ask for a `deterministic_name`, counters and
//! gauges go to the member picked by a hash of the counter name (or of the
//! gauge's metric-name set), so the same metric always reaches the same
//! consumer. Members are ordered by their deterministic name, so every
//! router with the same members picks the same one.
//!
//! Each subscription has its own diode: a slow consumer loses its own oldest
//! envelopes (counted as dropped, direction egress, reason `consumer_slow`)
//! and never slows publishing or other consumers. An envelope no
//! subscription selects is counted as `no_subscriber` (no consumer yet,
//! say after a restart, before the RLPs subscribe again), and what is left
//! in a subscription's diode when its stream ends as `stream_closed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use spillway_plumbing::diode::Diode;
use spillway_plumbing::fnv;
use spillway_plumbing::metrics::{Direction, SelfMetrics, reason};
use spillway_proto::Kind;
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::v2::EgressBatchRequest;

use crate::selectors::Selector;

/// One consumer's subscription.
pub struct Subscription {
    id: u64,
    shard_id: String,
    deterministic_name: String,
    selectors: Vec<Selector>,
    /// Envelopes waiting for this consumer, as the bytes they came as
    /// (shared with every other subscription that gets them).
    pub diode: Arc<Diode<Bytes>>,
}

pub struct PubSub {
    /// Read (without locking) for every batch published; replaced whole
    /// when subscriptions come and go, under `writer`.
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    next_id: AtomicU64,
    buffer: usize,
    metrics: Arc<SelfMetrics>,
}

#[derive(Default)]
struct Snapshot {
    /// Sorted by (shard_id, deterministic_name, id): shard group members sit
    /// next to each other, in the order used for deterministic picks.
    subs: Vec<Arc<Subscription>>,
    /// The shard group of each subscription, if any.
    group_of: Vec<Option<usize>>,
    groups: Vec<Group>,
    /// (subscription, selector) by the selector's source id.
    by_source: HashMap<String, Vec<(usize, usize)>>,
    /// (subscription, selector) of selectors for any source.
    any_source: Vec<(usize, usize)>,
}

struct Group {
    /// The round-robin position, kept across snapshots so that subscription
    /// churn does not favour the first member.
    next: Arc<AtomicUsize>,
    deterministic: bool,
}

/// Keeps a subscription alive; dropping it unsubscribes.
pub struct Handle {
    pubsub: Arc<PubSub>,
    sub: Arc<Subscription>,
}

impl Handle {
    pub fn subscription(&self) -> &Subscription {
        &self.sub
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.pubsub.remove(self.sub.id);
        self.pubsub.metrics.dropped_because(
            Direction::Egress,
            reason::STREAM_CLOSED,
            self.sub.diode.len() as u64,
        );
    }
}

impl PubSub {
    /// Each subscription buffers up to `buffer` envelopes.
    pub fn new(buffer: usize, metrics: Arc<SelfMetrics>) -> Arc<Self> {
        Arc::new(PubSub {
            snapshot: ArcSwap::default(),
            writer: Mutex::new(()),
            next_id: AtomicU64::new(1),
            buffer,
            metrics,
        })
    }

    /// Adds a subscription; the error (for `InvalidArgument`) says what is
    /// wrong with the request.
    pub fn subscribe(self: &Arc<Self>, req: &EgressBatchRequest) -> Result<Handle, String> {
        req.validate()?;
        let selectors = req
            .effective_selectors()
            .iter()
            .map(|s| Selector::compile(s).expect("validated"))
            .collect();
        let sub = Arc::new(Subscription {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            shard_id: req.shard_id.clone(),
            deterministic_name: req.deterministic_name.clone(),
            selectors,
            diode: Arc::new(Diode::growing(self.buffer)),
        });
        self.update(|subs| subs.push(sub.clone()));
        self.metrics.subscriptions.inc();
        Ok(Handle {
            pubsub: self.clone(),
            sub,
        })
    }

    fn remove(&self, id: u64) {
        self.update(|subs| subs.retain(|s| s.id != id));
        self.metrics.subscriptions.dec();
    }

    fn update(&self, change: impl FnOnce(&mut Vec<Arc<Subscription>>)) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.snapshot.load();
        let mut subs = now.subs.clone();
        change(&mut subs);
        let positions = now.round_robin_positions();
        self.snapshot
            .store(Arc::new(Snapshot::build(subs, &positions)));
    }

    pub fn subscription_count(&self) -> usize {
        self.snapshot.load().subs.len()
    }

    /// Delivers each envelope to every subscription that selects it, and to
    /// one member of each shard group that selects it.
    pub fn publish(&self, batch: Vec<WireEnvelope>) {
        let snap = self.snapshot.load();
        if snap.subs.is_empty() {
            self.metrics.dropped_because(
                Direction::Egress,
                reason::NO_SUBSCRIBER,
                batch.len() as u64,
            );
            return;
        }
        let mut hits = Vec::new();
        let mut grouped = Vec::new();
        let mut unselected = 0;
        for envelope in batch {
            hits.clear();
            snap.matching(&envelope, &mut hits);
            if hits.is_empty() {
                unselected += 1;
                continue;
            }
            grouped.clear();
            for &s in &hits {
                match snap.group_of[s] {
                    None => self.deliver(&snap.subs[s], envelope.bytes()),
                    Some(g) => grouped.push((g, s)),
                }
            }
            // `hits` is sorted, and group members are contiguous in `subs`,
            // so `grouped` is sorted by group.
            for run in grouped.chunk_by(|a, b| a.0 == b.0) {
                let group = &snap.groups[run[0].0];
                let hash = if group.deterministic {
                    metric_hash(&envelope)
                } else {
                    None
                };
                let pick = match hash {
                    Some(h) => (h % run.len() as u64) as usize,
                    None => group.next.fetch_add(1, Ordering::Relaxed) % run.len(),
                };
                self.deliver(&snap.subs[run[pick].1], envelope.bytes());
            }
        }
        self.metrics
            .dropped_because(Direction::Egress, reason::NO_SUBSCRIBER, unselected);
    }

    fn deliver(&self, sub: &Subscription, envelope: &Bytes) {
        if sub.diode.push(envelope.clone()) {
            self.metrics
                .dropped_because(Direction::Egress, reason::CONSUMER_SLOW, 1);
        }
    }
}

impl Snapshot {
    /// Each shard group's round-robin position, by shard id.
    fn round_robin_positions(&self) -> HashMap<String, Arc<AtomicUsize>> {
        let mut positions = HashMap::new();
        for (i, g) in self.group_of.iter().enumerate() {
            if let Some(g) = g {
                positions
                    .entry(self.subs[i].shard_id.clone())
                    .or_insert_with(|| self.groups[*g].next.clone());
            }
        }
        positions
    }

    fn build(
        mut subs: Vec<Arc<Subscription>>,
        positions: &HashMap<String, Arc<AtomicUsize>>,
    ) -> Snapshot {
        subs.sort_by(|a, b| {
            (&a.shard_id, &a.deterministic_name, a.id).cmp(&(
                &b.shard_id,
                &b.deterministic_name,
                b.id,
            ))
        });
        let mut snap = Snapshot::default();
        for (i, sub) in subs.iter().enumerate() {
            let group = (!sub.shard_id.is_empty()).then(|| {
                let same_as_previous = i > 0 && subs[i - 1].shard_id == sub.shard_id;
                if !same_as_previous {
                    let next = positions.get(&sub.shard_id).cloned().unwrap_or_default();
                    snap.groups.push(Group {
                        next,
                        deterministic: false,
                    });
                }
                let g = snap.groups.len() - 1;
                snap.groups[g].deterministic |= !sub.deterministic_name.is_empty();
                g
            });
            snap.group_of.push(group);
            for (k, selector) in sub.selectors.iter().enumerate() {
                match &selector.source_id {
                    Some(id) => snap.by_source.entry(id.clone()).or_default().push((i, k)),
                    None => snap.any_source.push((i, k)),
                }
            }
        }
        snap.subs = subs;
        snap
    }

    /// Indices of subscriptions with a selector matching `e`, sorted, each
    /// once (a subscription whose selectors overlap gets an envelope once).
    fn matching(&self, e: &WireEnvelope, out: &mut Vec<usize>) {
        let by_source = self
            .by_source
            .get(e.source_id())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &(s, k) in by_source.iter().chain(&self.any_source) {
            if self.subs[s].selectors[k].rule.matches(e) {
                out.push(s);
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// For counters and gauges, a stable hash of what names the metric (the
/// gauge's names in sorted order, as the peek gives them).
fn metric_hash(e: &WireEnvelope) -> Option<u64> {
    match e.kind()? {
        Kind::Counter => Some(fnv::hash(e.counter_name().as_bytes(), fnv::OFFSET)),
        Kind::Gauge => Some(e.gauge_names().fold(fnv::OFFSET, |h, n| {
            fnv::hash(b"\0", fnv::hash(n.as_bytes(), h))
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::v2::{self, Envelope, Selector as WireSelector, envelope::Message};

    fn request(shard: &str, det: &str, selectors: Vec<WireSelector>) -> EgressBatchRequest {
        EgressBatchRequest {
            shard_id: shard.into(),
            deterministic_name: det.into(),
            selectors,
            ..Default::default()
        }
    }

    fn log(source: &str, n: usize) -> WireEnvelope {
        WireEnvelope::from_envelope(&Envelope::log(
            n as i64,
            source,
            "0",
            format!("{n}").into_bytes(),
            v2::log::Type::Out,
        ))
    }

    fn drain(h: &Handle) -> Vec<Envelope> {
        std::iter::from_fn(|| h.subscription().diode.pop())
            .map(|b| prost::Message::decode(b).unwrap())
            .collect()
    }

    fn pubsub() -> Arc<PubSub> {
        PubSub::new(100_000, Arc::new(SelfMetrics::new("router")))
    }

    #[test]
    fn no_selectors_is_refused() {
        let ps = pubsub();
        let err = ps.subscribe(&request("", "", vec![])).err().unwrap();
        assert!(err.contains("no selectors"), "{err}");
        let bad = WireSelector {
            source_id: "a".into(),
            message: None,
        };
        assert!(ps.subscribe(&request("", "", vec![bad])).is_err());
        // The legacy selector counts when `selectors` is empty.
        let legacy = EgressBatchRequest {
            legacy_selector: Some(WireSelector::of(Kind::Log, "a")),
            ..Default::default()
        };
        let h = ps.subscribe(&legacy).unwrap();
        ps.publish(vec![log("a", 1), log("b", 2)]);
        assert_eq!(drain(&h).len(), 1);
    }

    #[test]
    fn every_subscription_gets_the_same_bytes_not_a_copy() {
        let ps = pubsub();
        let sel = || vec![WireSelector::of(Kind::Log, "")];
        let handles: Vec<Handle> = (0..3)
            .map(|_| ps.subscribe(&request("", "", sel())).unwrap())
            .collect();
        let e = log("a", 1);
        let sent = e.bytes().clone();
        ps.publish(vec![e]);
        for h in &handles {
            let got = h.subscription().diode.pop().unwrap();
            assert_eq!(got, sent);
            assert_eq!(got.as_ptr(), sent.as_ptr(), "shared, not copied");
        }
    }

    #[test]
    fn overlapping_selectors_deliver_once_and_unsubscribe_on_drop() {
        let ps = pubsub();
        let h = ps
            .subscribe(&request(
                "",
                "",
                vec![
                    WireSelector::of(Kind::Log, "a"),
                    WireSelector::of(Kind::Log, ""),
                ],
            ))
            .unwrap();
        ps.publish(vec![log("a", 1), log("b", 2)]);
        assert_eq!(drain(&h).len(), 2);
        assert_eq!(ps.subscription_count(), 1);
        drop(h);
        assert_eq!(ps.subscription_count(), 0);
    }

    #[test]
    fn shard_group_splits_fairly_and_other_groups_get_everything() {
        let ps = pubsub();
        let sel = || vec![WireSelector::of(Kind::Log, "")];
        let a = ps.subscribe(&request("s", "", sel())).unwrap();
        let b = ps.subscribe(&request("s", "", sel())).unwrap();
        let other = ps.subscribe(&request("t", "", sel())).unwrap();
        let plain = ps.subscribe(&request("", "", sel())).unwrap();
        ps.publish((0..1000).map(|i| log("x", i)).collect());
        let (a, b) = (drain(&a), drain(&b));
        assert_eq!(a.len() + b.len(), 1000);
        assert_eq!(a.len(), 500, "round-robin is exactly fair");
        let mut seen: Vec<i64> = a.iter().chain(&b).map(|e| e.timestamp).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 1000, "each envelope to exactly one member");
        assert_eq!(drain(&other).len(), 1000);
        assert_eq!(drain(&plain).len(), 1000);
    }

    #[test]
    fn round_robin_stays_fair_while_other_subscriptions_come_and_go() {
        let ps = pubsub();
        let sel = || vec![WireSelector::of(Kind::Log, "")];
        let a = ps.subscribe(&request("s", "", sel())).unwrap();
        let b = ps.subscribe(&request("s", "", sel())).unwrap();
        for i in 0..100 {
            // Each change rebuilds the snapshot; the group keeps its place.
            drop(ps.subscribe(&request("other", "", sel())).unwrap());
            ps.publish(vec![log("x", i)]);
        }
        assert_eq!((drain(&a).len(), drain(&b).len()), (50, 50));
    }

    #[test]
    fn deterministic_names_route_the_same_metric_to_the_same_member() {
        // Two routers with the same two members, subscribed in different
        // orders, must pick the same member for a metric.
        let pick = |order: [&str; 2]| {
            let ps = pubsub();
            let handles: Vec<_> = order
                .iter()
                .map(|d| {
                    (
                        d.to_string(),
                        ps.subscribe(&request("s", d, vec![WireSelector::of(Kind::Counter, "")]))
                            .unwrap(),
                    )
                })
                .collect();
            let names: Vec<String> = (0..50).map(|i| format!("metric-{i}")).collect();
            for _ in 0..3 {
                ps.publish(
                    names
                        .iter()
                        .map(|n| WireEnvelope::from_envelope(&Envelope::counter("x", n, 1, 0)))
                        .collect(),
                );
            }
            let mut owner = HashMap::new();
            for (d, h) in &handles {
                for e in drain(h) {
                    let Some(Message::Counter(c)) = &e.message else {
                        unreachable!()
                    };
                    let prev = owner.insert(c.name.clone(), d.clone());
                    assert!(
                        prev.is_none() || prev.as_ref() == Some(d),
                        "{} moved between members",
                        c.name
                    );
                }
            }
            owner
        };
        let one = pick(["alpha", "beta"]);
        assert_eq!(one.len(), 50);
        assert!(one.values().any(|d| d == "alpha") && one.values().any(|d| d == "beta"));
        assert_eq!(one, pick(["beta", "alpha"]));
    }

    #[test]
    fn a_full_subscription_drops_its_oldest_and_counts() {
        let metrics = Arc::new(SelfMetrics::new("router"));
        let ps = PubSub::new(10, metrics.clone());
        let slow = ps
            .subscribe(&request("", "", vec![WireSelector::of(Kind::Log, "")]))
            .unwrap();
        ps.publish((0..25).map(|i| log("x", i)).collect());
        let got = drain(&slow);
        assert_eq!(got.first().unwrap().timestamp, 15);
        assert_eq!(got.len(), 10);
        assert_eq!(metrics.dropped_total(Direction::Egress), 15);
    }

    #[test]
    fn unselected_and_left_behind_envelopes_are_counted() {
        let metrics = Arc::new(SelfMetrics::new("router"));
        let ps = PubSub::new(100, metrics.clone());
        ps.publish((0..3).map(|i| log("x", i)).collect());
        assert_eq!(
            metrics.dropped_total(Direction::Egress),
            3,
            "no subscription"
        );
        let h = ps
            .subscribe(&request("", "", vec![WireSelector::of(Kind::Log, "a")]))
            .unwrap();
        ps.publish(vec![log("a", 1), log("b", 2), log("a", 3)]);
        assert_eq!(metrics.dropped_total(Direction::Egress), 4, "b unselected");
        drop(h);
        assert_eq!(
            metrics.dropped_total(Direction::Egress),
            6,
            "two left behind"
        );
        let text = metrics.render();
        assert!(text.contains("reason=\"no_subscriber\"} 4"), "{text}");
        assert!(text.contains("reason=\"stream_closed\"} 2"), "{text}");
    }
}
