//! Loggregator wire types for Spillway: v2, and the v1 (dropsonde) events
//! that Loggregator agents still forward to routers.
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

/// Loggregator v1 (dropsonde) events, package `events` (proto2; see
/// `proto/events/README.md`).
pub mod events {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/events.rs"));
}

/// The router's v1 ingest service, package `plumbing`
/// (`/plumbing.DopplerIngestor/Pusher`): each message carries one
/// marshalled [`events::Envelope`].
pub mod plumbing {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/plumbing.rs"));
}

pub mod codec;
pub mod encoded;
mod envelope;
pub use envelope::{Kind, now_nanos};
pub mod json;
pub mod preencoded;
