//! Loggregator v2 envelope encoding and decoding with prost.
//!
//! Every envelope crosses the wire as protobuf at least twice (collector →
//! router, router → consumer or RLP), and each hop decodes it and encodes
//! it again, so prost's cost per envelope bounds what one core of a
//! Spillway binary can move. The envelope is a stdout log line of 100 bytes
//! with the tags the collector puts on container logs (container id of 64
//! hex digits, container name, image, host, source type): 345 bytes
//! encoded, 34.8 KB for a batch of 100 (printed on stderr).
//!
//! - `envelope_encode`: one `Envelope`, and an `EnvelopeBatch` of 100 (what
//!   the collector sends), encoded into a reused buffer as tonic's codec
//!   does.
//! - `envelope_decode`: the same bytes decoded from a `Bytes` buffer (as
//!   tonic hands them over, so the payload is not copied), the decoded
//!   messages dropped within the measurement.
//!
//! Throughput is in envelopes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use prost::bytes::Bytes;
use spillway_proto::v2::{Envelope, EnvelopeBatch};

mod common;

const BATCH: usize = 100;

fn envelope() -> Envelope {
    common::container_log("shop-web", 7)
}

fn batch() -> EnvelopeBatch {
    EnvelopeBatch {
        batch: (0..BATCH)
            .map(|i| common::container_log("shop-web", i))
            .collect(),
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_encode");
    let mut buf = Vec::with_capacity(64 * 1024);

    let one = envelope();
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&one).encode(&mut buf).unwrap();
            black_box(&buf);
        })
    });

    let many = batch();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_100", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&many).encode(&mut buf).unwrap();
            black_box(&buf);
        })
    });

    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_decode");

    let one = envelope();
    let bytes = Bytes::from(one.encode_to_vec());
    eprintln!("envelope_decode/single: {} bytes", bytes.len());
    assert_eq!(Envelope::decode(bytes.clone()).unwrap(), one);
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter(|| Envelope::decode(black_box(bytes.clone())).unwrap())
    });

    let many = batch();
    let bytes = Bytes::from(many.encode_to_vec());
    eprintln!("envelope_decode/batch_100: {} bytes", bytes.len());
    assert_eq!(EnvelopeBatch::decode(bytes.clone()).unwrap(), many);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_100", |b| {
        b.iter(|| EnvelopeBatch::decode(black_box(bytes.clone())).unwrap())
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = encode, decode
}
criterion_main!(benches);
