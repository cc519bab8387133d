//! Envelopes that travel encoded (`spillway_proto::encoded`): the three
//! steps a router spends on each envelope, with 10 subscriptions.
//!
//! - `encoded/peek`: `WireEnvelope::new` on a collector-shaped log envelope
//!   (100-byte payload, 5 container tags): the check of the whole envelope
//!   and the read of its route key, instead of a prost decode.
//! - `encoded/route_10_subscriptions`: `PubSub::publish` of a batch of 256
//!   such envelopes to 10 subscriptions that each select every log, so
//!   each envelope is matched 10 times and its shared bytes pushed into 10
//!   diodes (the worst case of 10: every subscription takes everything).
//!   The diodes are emptied after each batch, unmeasured.
//! - `encoded/egress_write`: writing a batch of 256 envelopes' bytes as an
//!   `EnvelopeBatch`, as the codec of the router's and RLP's egress does
//!   (each envelope framed and copied unchanged, no encoding).
//!
//! And the first hop, the collector's v2 Ingress, per envelope an app sends
//! (a log with a 100-byte payload, a timestamp and 3 tags):
//!
//! - `encoded/collector_ingress`: `WireEnvelope::new` then
//!   `Enricher::enrich_wire`, which appends the `host` tag to the bytes as
//!   received (what the collector does since envelopes travel encoded);
//! - `encoded/collector_ingress_decoded`: prost decode, `Enricher::enrich`
//!   and encode, as the collector did before (the baseline).
//!
//! Throughput is in envelopes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use spillway_collector::enrich::Enricher;
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::Kind;
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::preencoded::put_batch_entry;
use spillway_proto::v2::{self, EgressBatchRequest};
use spillway_router::pubsub::PubSub;

mod common;

/// Envelopes per batch (the collector's batch size).
const BATCH: usize = 256;
/// Subscriptions of the route bench.
const SUBSCRIPTIONS: usize = 10;

fn bench(c: &mut Criterion) {
    let envelopes: Vec<WireEnvelope> = (0..BATCH)
        .map(|i| WireEnvelope::from_envelope(&common::container_log("shop-web", i)))
        .collect();
    let bytes: Vec<Bytes> = envelopes.iter().map(|e| e.bytes().clone()).collect();

    let mut group = c.benchmark_group("encoded");
    group.throughput(Throughput::Elements(1));
    group.bench_function("peek", |b| {
        b.iter_batched(
            || bytes[0].clone(),
            |e| WireEnvelope::new(black_box(e)).unwrap(),
            BatchSize::SmallInput,
        )
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    let pubsub = PubSub::new(100_000, Arc::new(SelfMetrics::new("router")));
    let request = EgressBatchRequest {
        use_preferred_tags: true,
        selectors: vec![v2::Selector::of(Kind::Log, "")],
        ..Default::default()
    };
    let subs: Vec<_> = (0..SUBSCRIPTIONS)
        .map(|_| pubsub.subscribe(&request).unwrap())
        .collect();
    group.bench_function("route_10_subscriptions", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = envelopes.clone();
                let start = Instant::now();
                pubsub.publish(batch);
                total += start.elapsed();
                for s in &subs {
                    let diode = &s.subscription().diode;
                    assert_eq!(diode.len(), BATCH, "every envelope to every subscription");
                    while diode.pop().is_some() {}
                }
            }
            total
        })
    });

    let mut buf = BytesMut::with_capacity(64 * 1024);
    group.bench_function("egress_write", |b| {
        b.iter(|| {
            buf.clear();
            for e in &bytes {
                put_batch_entry(&mut buf, e);
            }
            black_box(buf.len())
        })
    });

    group.throughput(Throughput::Elements(1));
    let enricher = Enricher::new("node-7".into());
    let app_log = Bytes::from(app_log().encode_to_vec());
    group.bench_function("collector_ingress", |b| {
        b.iter_batched(
            || app_log.clone(),
            |e| enricher.enrich_wire(WireEnvelope::new(black_box(e)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("collector_ingress_decoded", |b| {
        b.iter_batched(
            || app_log.clone(),
            |e| {
                let mut e = v2::Envelope::decode(black_box(e)).unwrap();
                enricher.enrich(&mut e);
                Bytes::from(e.encode_to_vec())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A log as a go-loggregator client sends it.
fn app_log() -> v2::Envelope {
    let mut e = v2::Envelope::log(
        1_700_000_000_000_000_000,
        "8d7f0a4e-2c1b-4a8e-9f3d-5b6c7d8e9f01",
        "3",
        vec![b'x'; 100],
        v2::log::Type::Out,
    );
    for (k, v) in [("deployment", "shop"), ("job", "web"), ("index", "3")] {
        e.tags.insert(k.into(), v.into());
    }
    e
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
