//! Cutting a full diode into batches: `spillway_plumbing::batch`.
//!
//! Between each diode and the next hop, a lane takes the envelopes out with
//! `next_batch` (up to `--batch-size` 256, default flags) and cuts them
//! so that no gRPC message exceeds its limit: the collector's lanes write
//! them as `EnvelopeBatch` bytes with `encode_batches` (container lines and
//! app envelopes are already bytes), the router's egress cuts encoded
//! envelopes by their byte lengths. Under load the diode is full
//! and batches are full at once, so this is the whole per-envelope cost of
//! batching in the collector's shipper and in the router's egress. Each
//! iteration drains a diode holding 40 full batches (10,240 envelopes, just
//! above the default 10,000 buffer; whole batches, so no batch waits for
//! its linger) through the code path of:
//!
//! - `collector_shard_lane`: an ordered lane of the collector's shipper
//!   (`Diode<Bytes>` of encoded envelopes; drop what cannot fit a message,
//!   then write the `EnvelopeBatch` bytes, cut at the byte limit).
//! - `collector_app_lane`: the same over the `PerCore<Bytes>` diodes of
//!   the v2 Ingress API (the envelopes spread over the CPUs' diodes).
//! - `router_egress`: a router subscription served by `serve_diode`
//!   (`Diode<Bytes>` of the envelopes as received, cut by their byte
//!   lengths; the bytes are written unchanged by the codec, see the
//!   `encoded` bench).
//! - `next_batch_only`: `next_batch` on a `Diode<Envelope>` without the
//!   cutting by bytes, to show what the sizing costs.
//!
//! The futures are polled directly (a full diode never makes `next_batch`
//! wait). Refilling the diode between iterations is not measured.
//! Throughput is in envelopes.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use spillway_plumbing::batch::{self, BatchArgs, BatchPolicy, EncodeEntry, Source};
use spillway_plumbing::diode::{Diode, PerCore};
use spillway_plumbing::grpc::DEFAULT_MAX_MESSAGE_BYTES;
use spillway_proto::v2::Envelope;

mod common;

/// Envelopes per iteration: 40 batches of the default 256.
const BATCHES: usize = 40;

/// The default `--batch-size 256 --batch-interval 5ms`.
fn policy() -> BatchPolicy {
    BatchArgs {
        batch_size: 256,
        batch_interval: Duration::from_millis(5),
        batch_pace: batch::DEFAULT_PACE,
    }
    .policy()
}

/// Runs a future that must not wait: `next_batch` on a source holding at
/// least a full batch returns at once.
fn ready_now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("next_batch waited: the source held less than a full batch"),
    }
}

/// What a collector lane does with `items` envelopes of `source`: the
/// messages it would send (kept from the optimiser), and the envelopes it
/// took (to refill the source).
fn collector_lane<T: EncodeEntry>(source: &impl Source<T>, items: usize) -> Vec<Vec<T>> {
    let (policy, max_message_bytes) = (policy(), DEFAULT_MAX_MESSAGE_BYTES);
    let max_bytes = max_message_bytes.min(batch::MAX_BATCH_BYTES);
    let mut taken_all = Vec::new();
    let mut taken = 0;
    while taken < items {
        let envelopes = ready_now(batch::next_batch(source, policy));
        taken += envelopes.len();
        black_box(batch::encode_batches(
            &envelopes,
            max_message_bytes,
            max_bytes,
        ));
        taken_all.push(envelopes);
    }
    taken_all
}

/// What the router's egress does with `items` envelopes of a subscription.
fn router_egress(diode: &Diode<Bytes>, items: usize) -> Vec<Vec<Bytes>> {
    let policy = policy();
    let mut messages = Vec::new();
    let mut taken = 0;
    while taken < items {
        let shared = ready_now(batch::next_batch(diode, policy));
        taken += shared.len();
        messages.extend(batch::chunk_by_bytes(shared, batch::MAX_BATCH_BYTES, |e| {
            spillway_proto::preencoded::batch_entry_len(e.len())
        }));
    }
    messages
}

/// Total time of `iters` runs of `drain`, each followed by an unmeasured
/// `refill` with what it returned.
fn timed<O>(iters: u64, mut drain: impl FnMut() -> O, mut refill: impl FnMut(O)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let out = black_box(drain());
        total += start.elapsed();
        refill(out);
    }
    total
}

/// Puts back into `diode` what a drain took; it holds `items` again.
fn refill<T>(diode: &Diode<T>, messages: Vec<Vec<T>>, items: usize) {
    for e in messages.into_iter().flatten() {
        diode.push(e);
    }
    assert_eq!(diode.len(), items, "every envelope came back");
}

fn batching(c: &mut Criterion) {
    let items = BATCHES * policy().max_items;
    let envelopes: Vec<Envelope> = (0..items)
        .map(|i| common::container_log("shop-web", i))
        .collect();
    let refill_diode =
        |diode: &Diode<Envelope>, messages: Vec<Vec<Envelope>>| refill(diode, messages, items);

    let mut group = c.benchmark_group("batching");
    group
        .throughput(Throughput::Elements(items as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(30);

    let encoded = Diode::new(items);
    refill(
        &encoded,
        vec![
            envelopes
                .iter()
                .map(|e| Bytes::from(prost::Message::encode_to_vec(e)))
                .collect(),
        ],
        items,
    );
    group.bench_function("collector_shard_lane", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || collector_lane(&encoded, items),
                |m| refill(&encoded, m, items),
            )
        })
    });

    let diode = Diode::new(items);
    refill_diode(&diode, vec![envelopes.clone()]);

    let per_core = PerCore::for_this_machine(items);
    let cores = per_core.cores();
    let refill_per_core = |messages: Vec<Vec<Bytes>>| {
        for (i, e) in messages.into_iter().flatten().enumerate() {
            per_core.push_to(i % cores, e);
        }
        assert_eq!(per_core.len(), items, "every envelope came back");
    };
    refill_per_core(vec![
        envelopes
            .iter()
            .map(|e| Bytes::from(prost::Message::encode_to_vec(e)))
            .collect(),
    ]);
    group.bench_function("collector_app_lane", |b| {
        b.iter_custom(|iters| timed(iters, || collector_lane(&per_core, items), refill_per_core))
    });

    let shared = Diode::new(items);
    let refill_shared = |messages: Vec<Vec<Bytes>>| refill(&shared, messages, items);
    refill_shared(vec![
        envelopes
            .iter()
            .map(|e| Bytes::from(prost::Message::encode_to_vec(e)))
            .collect(),
    ]);
    group.bench_function("router_egress", |b| {
        b.iter_custom(|iters| timed(iters, || router_egress(&shared, items), refill_shared))
    });

    group.bench_function("next_batch_only", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let mut batches = Vec::with_capacity(BATCHES);
                    for _ in 0..BATCHES {
                        batches.push(ready_now(batch::next_batch(&diode, policy())));
                    }
                    batches
                },
                |m| refill_diode(&diode, m),
            )
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = batching
}
criterion_main!(benches);
