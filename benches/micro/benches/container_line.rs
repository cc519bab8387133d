//! A container line's cost in the collector, from its template to the bytes
//! of the `EnvelopeBatch` handed to gRPC: the old path against the new one,
//! in the same run.
//!
//! Every iteration takes 256 lines (one default `--batch-size` batch) of
//! [`common::PAYLOAD_BYTES`] (100) bytes from one container with the
//! contract's tags (`container_id`, `container_name`, `image`, `host`,
//! `source_type`, plus a `spillway.tag.` label), and writes them as one
//! `EnvelopeBatch` into a reused buffer (what tonic's encoder writes into).
//! Throughput is in lines, so criterion's time divided by 256 is the cost
//! of one line:
//!
//! - `old_envelope_entry_len_prost`: what the collector did before:
//!   `EnvelopeTemplate::envelope` (clones the tag map and the ids into a
//!   prost `Envelope`), the shipper's `batch::entry_len` per envelope
//!   (dropping the too large, cutting at the byte limit), then prost
//!   encoding the `EnvelopeBatch` (tonic's `ProstEncoder`), and dropping
//!   the envelopes.
//! - `new_encode_append`: what it does now: `EnvelopeTemplate::encode`
//!   (the line's bytes, one allocation), then `batch::encode_batches`
//!   (entry framing appended to the batch's bytes) and the copy into the
//!   buffer (tonic's `PreEncodedCodec`).
//! - `new_output_line_full`: the new path through `Output::line` as the
//!   capture sources call it, with the routes hub idle (no route, no
//!   `/logs` client), the shard diode's push and pop included.
//!
//! The lines are made before the timing (their payloads share one buffer,
//! as the capture's do); the diode and the stages between them are not in
//! the first two, which measure the encoding work alone.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use spillway_collector::container::{Container, EnvelopeTemplate, Stream};
use spillway_collector::lines::Line;
use spillway_collector::output::{self, Output};
use spillway_plumbing::batch;
use spillway_plumbing::grpc::DEFAULT_MAX_MESSAGE_BYTES;
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::v2::{Envelope, EnvelopeBatch};

mod common;

/// Lines per iteration: one default batch.
const LINES: usize = 256;

/// A container whose envelopes carry the same tags as
/// `common::container_log`'s, plus one `spillway.tag.` label.
fn container() -> Container {
    let tags = common::container_tags(3);
    Container {
        id: tags["container_id"].clone(),
        name: tags["container_name"].clone(),
        image: tags["image"].clone(),
        labels: [
            ("com.docker.compose.service", "shop-web"),
            ("com.docker.compose.container-number", "1"),
            ("spillway.tag.team", "payments"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    }
}

const HOST: &str = "node-07.dc1.example.com";

/// `LINES` lines of 100 bytes whose payloads share one buffer.
fn lines() -> Vec<Line> {
    let mut all = BytesMut::with_capacity(LINES * common::PAYLOAD_BYTES);
    let mut out = Vec::with_capacity(LINES);
    for seq in 0..LINES {
        let e = common::container_log("shop-web", seq);
        let Some(spillway_proto::v2::envelope::Message::Log(log)) = e.message else {
            unreachable!()
        };
        all.put_slice(&log.payload);
        out.push((e.timestamp, all.split().freeze()));
    }
    out.into_iter()
        .map(|(timestamp, payload)| Line {
            payload,
            timestamp,
            partial: false,
        })
        .collect()
}

fn old_path(t: &EnvelopeTemplate, lines: Vec<Line>, buf: &mut BytesMut) -> usize {
    let max_bytes = DEFAULT_MAX_MESSAGE_BYTES.min(batch::MAX_BATCH_BYTES);
    let mut envelopes: Vec<Envelope> = lines
        .into_iter()
        .map(|l| t.envelope(Stream::Stdout, l))
        .collect();
    envelopes.retain(|e| batch::entry_len(e) <= DEFAULT_MAX_MESSAGE_BYTES);
    let mut written = 0;
    for chunk in batch::chunk_by_bytes(envelopes, max_bytes, batch::entry_len) {
        buf.clear();
        EnvelopeBatch { batch: chunk }
            .encode(buf)
            .expect("room in a BytesMut");
        written += buf.len();
    }
    written
}

fn new_path(t: &EnvelopeTemplate, lines: Vec<Line>, buf: &mut BytesMut) -> usize {
    let max_bytes = DEFAULT_MAX_MESSAGE_BYTES.min(batch::MAX_BATCH_BYTES);
    let encoded: Vec<Bytes> = lines.iter().map(|l| t.encode(Stream::Stdout, l)).collect();
    drop(lines);
    let (batches, _) = batch::encode_batches(&encoded, DEFAULT_MAX_MESSAGE_BYTES, max_bytes);
    drop(encoded);
    let mut written = 0;
    for b in batches {
        buf.clear();
        buf.put_slice(&b.bytes);
        written += buf.len();
    }
    written
}

fn container_line(c: &mut Criterion) {
    let t = EnvelopeTemplate::new(&container(), HOST);
    let lines = lines();
    // Both paths write the same envelopes.
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    old_path(&t, lines.clone(), &mut a);
    new_path(&t, lines.clone(), &mut b);
    assert_eq!(
        EnvelopeBatch::decode(a.clone()).unwrap(),
        EnvelopeBatch::decode(b.clone()).unwrap()
    );
    assert_eq!(a.len(), b.len());

    let mut group = c.benchmark_group("container_line");
    group.throughput(Throughput::Elements(LINES as u64));
    let mut buf = BytesMut::with_capacity(1 << 20);
    group.bench_function("old_envelope_entry_len_prost", |bench| {
        bench.iter_batched(
            || lines.clone(),
            |lines| black_box(old_path(&t, lines, &mut buf)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("new_encode_append", |bench| {
        bench.iter_batched(
            || lines.clone(),
            |lines| black_box(new_path(&t, lines, &mut buf)),
            BatchSize::SmallInput,
        )
    });

    let shards = output::shards(1, LINES);
    let out = Output::new(
        shards.clone(),
        HOST,
        Arc::new(SelfMetrics::new("collector")),
        spillway_routes::Hub::new(),
    );
    let t = out.template(&container());
    let mut taken = Vec::with_capacity(LINES);
    group.bench_function("new_output_line_full", |bench| {
        bench.iter_batched(
            || lines.clone(),
            |lines| {
                for l in lines {
                    out.line(0, &t, Stream::Stdout, l);
                }
                taken.clear();
                while let Some(e) = shards[0].pop() {
                    taken.push(e);
                }
                let (batches, _) = batch::encode_batches(
                    &taken,
                    DEFAULT_MAX_MESSAGE_BYTES,
                    batch::MAX_BATCH_BYTES,
                );
                taken.clear();
                for b in batches {
                    buf.clear();
                    buf.put_slice(&b.bytes);
                }
                black_box(buf.len())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = container_line
}
criterion_main!(benches);
