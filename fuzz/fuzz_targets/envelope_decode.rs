//! Decoding of gRPC messages from outside (`codec::decode`, what the
//! codec of every service does): envelope batches from collectors and
//! agents, single envelopes, and the RLP's egress requests, with the
//! counting codec's prechecks.
//!
//! The limit is set low (8 envelopes, so 256 tags and gauge values) for
//! the fuzzer to reach it.
//!
//! Invariants: a refusal is `InvalidArgument` or `ResourceExhausted`, never
//! `Internal`; what decodes holds no more envelopes and map entries than
//! the limits (the prechecks on the encoded bytes cannot be got round); a
//! decoded batch encodes and decodes again to as many envelopes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use spillway_proto::codec::{self, decode};
use spillway_proto::v2::{self, envelope::Message};
use tonic::Code;

const MAX_ENVELOPES: usize = 8;

fn entries(e: &v2::Envelope) -> usize {
    let gauge = match &e.message {
        Some(Message::Gauge(g)) => g.metrics.len(),
        _ => 0,
    };
    e.tags.len() + e.deprecated_tags.len() + gauge
}

fn refused_well(status: &tonic::Status) {
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::ResourceExhausted
        ),
        "refused with {status:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    codec::set_max_batch_envelopes(MAX_ENVELOPES);
    let max_entries = codec::max_map_entries();
    match decode::<v2::EnvelopeBatch>(data) {
        Ok(batch) => {
            assert!(
                batch.batch.len() <= MAX_ENVELOPES,
                "{} envelopes",
                batch.batch.len()
            );
            let n: usize = batch.batch.iter().map(entries).sum();
            assert!(n <= max_entries, "{n} tags and gauge values");
            let again = decode::<v2::EnvelopeBatch>(&batch.encode_to_vec())
                .expect("a decoded batch encodes to one that decodes");
            assert_eq!(again.batch.len(), batch.batch.len());
        }
        Err(status) => refused_well(&status),
    }
    match decode::<v2::Envelope>(data) {
        Ok(e) => assert!(entries(&e) <= max_entries, "{} tags", entries(&e)),
        Err(status) => refused_well(&status),
    }
    if let Err(status) = decode::<v2::EgressBatchRequest>(data) {
        refused_well(&status);
    }
    if let Err(status) = decode::<v2::EgressRequest>(data) {
        refused_well(&status);
    }
});
