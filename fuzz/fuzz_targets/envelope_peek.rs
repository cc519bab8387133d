//! Peeking encoded envelope batches (`encoded::peek_batch`, what the
//! collector's and router's v2 Ingress do with every message) against
//! prost's decoding of the same bytes.
//!
//! The limit is set low (8 envelopes, so 256 tags and gauge values) for
//! the fuzzer to reach it.
//!
//! Invariants: a refusal is `InvalidArgument` or `ResourceExhausted`;
//! whatever prost refuses is refused; what is accepted decodes in prost to
//! as many envelopes, each with the source id, kind, counter name, gauge
//! names, timestamp and tags that the peek read, and each envelope's bytes
//! decode alone to the same envelope.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use spillway_proto::codec;
use spillway_proto::encoded::peek_batch;
use spillway_proto::v2::{self, envelope::Message};
use tonic::Code;

const MAX_ENVELOPES: usize = 8;

fuzz_target!(|data: &[u8]| {
    codec::set_max_batch_envelopes(MAX_ENVELOPES);
    let peeked = match peek_batch(data) {
        Ok(peeked) => peeked,
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::ResourceExhausted
                ),
                "refused with {status:?}"
            );
            return;
        }
    };
    let batch = v2::EnvelopeBatch::decode(data).expect("what peeks well, prost decodes");
    assert_eq!(peeked.len(), batch.batch.len());
    for (w, e) in peeked.iter().zip(&batch.batch) {
        assert_eq!(&w.decode(), e, "the envelope's own bytes decode alike");
        assert_eq!(w.source_id(), e.source_id);
        assert_eq!(w.kind(), e.kind());
        assert_eq!(w.timestamp(), e.timestamp);
        let (counter, gauges) = match &e.message {
            Some(Message::Counter(c)) => (c.name.as_str(), BTreeSet::new()),
            Some(Message::Gauge(g)) => ("", g.metrics.keys().map(String::as_str).collect()),
            _ => ("", BTreeSet::new()),
        };
        assert_eq!(w.counter_name(), counter);
        assert_eq!(w.gauge_names().collect::<BTreeSet<_>>(), gauges);
        assert_eq!(w.has_tags(), !e.tags.is_empty());
        assert_eq!(w.has_deprecated_tags(), !e.deprecated_tags.is_empty());
        for (k, v) in &e.tags {
            assert_eq!(w.tag(k), Some(v.as_str()), "tag {k:?}");
        }
    }
});
