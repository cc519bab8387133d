//! Router matching: `spillway_router::pubsub::PubSub::publish` as the
//! number of subscriptions grows.
//!
//! Every envelope a router receives is matched against every subscription
//! (consumers of the v2 Egress API, the RLP's, the CLI's `tail`) and put
//! in the diode of each one that selects it. Selectors are indexed by
//! source id, so the work per envelope does not grow with the number of
//! subscriptions, but the memory it touches does: with 10,000 the index
//! and most subscriptions' diodes are out of cache. Selectors for any
//! source (a firehose such as a log store's or the RLP's) are checked
//! against every envelope.
//!
//! - `router_match/by_source_id/<n>`: `n` subscriptions, subscription `i`
//!   selecting the logs of source `app-{i}`.
//! - `router_match/by_source_id_plus_5_any/<n>`: the same plus 5
//!   subscriptions selecting the logs of any source, so every envelope goes
//!   to 6 subscriptions.
//!
//! Each iteration publishes a batch of 256 log envelopes (the collector's
//! batch size; 100-byte payload, container tags) whose source ids walk
//! round-robin over all `n` subscribed ids. What is measured is
//! `publish`: the lookup and selector matching on each encoded envelope's
//! peeked key, and pushing its shared bytes into the diode of every
//! matching subscription (with its wake-up). After each publish the diodes
//! that received something are drained, unmeasured, so none is ever full
//! and nothing is dropped.
//! Throughput is in envelopes published.
//!
//! Making the subscriptions is not measured but is slow: each subscribe
//! rebuilds the router's whole subscription index, so 10,000 take tens of
//! seconds (the time is printed on stderr). The sizes are benched in
//! growing order on one router, which is only made when a bench the
//! filter selects needs it. `cargo test --benches` (a debug build) skips
//! the 10,000 size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::Kind;
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::v2::{self, EgressBatchRequest};
use spillway_router::pubsub::{Handle, PubSub};

mod common;

/// Envelopes per published batch.
const BATCH: usize = 256;
/// Each subscription's diode: room for a whole batch, drained after each.
const BUFFER: usize = BATCH;
/// Subscriptions selecting any source in the `plus_5_any` variant.
const ANY_SOURCE: usize = 5;

/// A subscription request as the end-to-end tests make it
/// (`e2e::request`): logs of `source_id` (empty: any source).
fn request(source_id: &str) -> EgressBatchRequest {
    EgressBatchRequest {
        use_preferred_tags: true,
        selectors: vec![v2::Selector::of(Kind::Log, source_id)],
        ..Default::default()
    }
}

/// A router with per-source subscriptions `app-0`, `app-1`... and some
/// for any source.
struct Router {
    pubsub: Arc<PubSub>,
    metrics: Arc<SelfMetrics>,
    by_source: Vec<Handle>,
    any_source: Vec<Handle>,
}

impl Router {
    fn new() -> Router {
        let metrics = Arc::new(SelfMetrics::new("router"));
        let pubsub = PubSub::new(BUFFER, metrics.clone());
        Router {
            pubsub,
            metrics,
            by_source: Vec::new(),
            any_source: Vec::new(),
        }
    }

    fn subscribe(&self, source_id: &str) -> Handle {
        self.pubsub
            .subscribe(&request(source_id))
            .expect("valid request")
    }

    /// Makes the router have `n` per-source subscriptions (subscribing
    /// `app-{i}` as needed) and `any` for any source.
    fn shape(&mut self, n: usize, any: usize) {
        if self.by_source.len() < n {
            let start = Instant::now();
            while self.by_source.len() < n {
                let h = self.subscribe(&format!("app-{}", self.by_source.len()));
                self.by_source.push(h);
            }
            eprintln!(
                "router_match: {n} subscriptions made in {:.1?} (not measured)",
                start.elapsed()
            );
        }
        assert_eq!(
            self.by_source.len(),
            n,
            "sizes are benched in growing order"
        );
        self.any_source.truncate(any);
        while self.any_source.len() < any {
            let h = self.subscribe("");
            self.any_source.push(h);
        }
    }

    /// Empties the diodes of `hit` (indices into `by_source`) and of the
    /// any-source subscriptions, returning to `pool` the envelopes no diode
    /// holds any more.
    fn drain(&self, hit: &[usize]) {
        for h in hit
            .iter()
            .map(|&i| &self.by_source[i])
            .chain(&self.any_source)
        {
            while h.subscription().diode.pop().is_some() {}
        }
    }
}

/// Benches `publish` with `n` per-source subscriptions and `any` for any
/// source: batches of `BATCH` envelopes whose source ids walk over the
/// per-source subscriptions. The router is shaped inside the bench closure,
/// so that a bench a filter leaves out costs no subscribing.
fn bench_publish(
    group: &mut BenchmarkGroup<'_, WallTime>,
    router: &mut Router,
    name: &str,
    n: usize,
    any: usize,
) {
    // One encoded envelope per source id (`app-{i}`), cloned into each
    // batch (a reference count), outside the measured time.
    let mut sources: Vec<WireEnvelope> = Vec::new();
    let mut hit = Vec::with_capacity(BATCH);
    let mut next = 0;
    group.bench_function(BenchmarkId::new(name, n), |b| {
        router.shape(n, any);
        let router = &*router;
        while sources.len() < n {
            let source = format!("app-{}", sources.len());
            sources.push(WireEnvelope::from_envelope(&common::container_log(
                &source,
                sources.len(),
            )));
        }
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut batch = Vec::with_capacity(BATCH);
                hit.clear();
                for _ in 0..BATCH {
                    batch.push(sources[next].clone());
                    hit.push(next);
                    next = (next + 1) % n;
                }
                let start = Instant::now();
                router.pubsub.publish(batch);
                total += start.elapsed();
                router.drain(&hit);
            }
            total
        })
    });
    assert_eq!(router.metrics.dropped_total(Direction::Egress), 0);
}

fn bench(c: &mut Criterion) {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // bench once, in a debug build.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let mut group = c.benchmark_group("router_match");
    group.throughput(Throughput::Elements(BATCH as u64));
    // One router, grown from one size to the next: each subscribe rebuilds
    // the router's whole subscription index, so making n subscriptions
    // costs O(n²) (about 40 s for 10,000 on a 2-core machine).
    let mut router = Router::new();
    for n in [10, 1_000, 10_000] {
        if n > 1_000 && !bench_mode {
            eprintln!(
                "router_match/*/{n}: skipped in test mode (subscribing {n} one by one takes minutes in a debug build)"
            );
            continue;
        }
        bench_publish(&mut group, &mut router, "by_source_id", n, 0);
        bench_publish(
            &mut group,
            &mut router,
            "by_source_id_plus_5_any",
            n,
            ANY_SOURCE,
        );
    }
    group.finish();
    // Dropping a handle rebuilds the index too: unsubscribing them one by
    // one would be quadratic again, and this is the end of the process.
    std::mem::forget(router);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
