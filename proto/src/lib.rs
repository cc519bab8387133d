//! Loggregator v2 wire types for Spillway.
//!
//! The `.proto` files under `proto/` are written from the wire facts in
//! `shared/spec/loggregator-v2.md`; `build.rs` compiles them without a system
//! `protoc`. Besides the generated prost messages and tonic services, every
//! message has protobuf-JSON serde impls (pbjson, proto field names kept:
//! `source_id`, int64 as strings, bytes as base64), which is the format of
//! the RLP gateway and of `spillway tail --json`.
//!
//! The small helpers here are shared by every stage: what kind an envelope
//! is, and the ingress normalisation every agent applies.

pub mod v2 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/loggregator.v2.rs"));
    include!(concat!(env!("OUT_DIR"), "/loggregator.v2.serde.rs"));
}

pub mod codec;
pub mod encoded;
mod envelope;
pub use envelope::{Kind, now_nanos};
pub mod json;
pub mod preencoded;
