//! Envelopes shaped like the ones Spillway's collector makes, shared by the
//! benches (each bench file includes this module with `mod common;`).

#![allow(dead_code)] // Not every bench uses every helper.

use std::collections::HashMap;

use spillway_proto::v2::{self, Envelope};

/// Bytes of log line in every benchmark envelope.
pub const PAYLOAD_BYTES: usize = 100;

/// The tags the collector puts on a container's envelopes (see
/// `collector/src/container.rs`): container id (64 hex digits), name,
/// image, host and source type.
pub fn container_tags(container: usize) -> HashMap<String, String> {
    // A 64-hex-digit id that differs per container.
    let id: String = (0..8)
        .map(|k| {
            format!(
                "{:08x}",
                (container as u32 ^ 0x9e37_79b9).rotate_left(k * 4)
            )
        })
        .collect();
    HashMap::from([
        ("container_id".to_owned(), id),
        ("container_name".to_owned(), format!("shop-web-{container}")),
        (
            "image".to_owned(),
            "registry.example.com/shop/web:1.42.0".to_owned(),
        ),
        ("host".to_owned(), "node-07.dc1.example.com".to_owned()),
        ("source_type".to_owned(), "container".to_owned()),
    ])
}

/// A stdout log envelope of [`PAYLOAD_BYTES`] with the collector's tags,
/// from source `source_id`.
pub fn container_log(source_id: &str, seq: usize) -> Envelope {
    let mut line = format!("{seq:08} GET /api/v1/orders?page=3 200 1532B 12ms ua=\"curl/8.5\" ");
    line.extend(std::iter::repeat_n(
        '.',
        PAYLOAD_BYTES.saturating_sub(line.len()),
    ));
    line.truncate(PAYLOAD_BYTES);
    let mut e = Envelope::log(
        1_700_000_000_000_000_000 + seq as i64,
        source_id,
        "1",
        line.into_bytes(),
        v2::log::Type::Out,
    );
    e.tags = container_tags(seq % 16);
    e
}

/// The criterion settings every bench uses: short, so that the whole
/// suite stays within a few minutes.
pub fn config() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}
