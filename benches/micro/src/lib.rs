//! Criterion micro-benchmarks of Spillway's hot paths, in `benches/` (run
//! them with `cargo xtask bench` or `cargo bench -p spillway-microbench`;
//! `cargo test -p spillway-microbench --benches` runs each once):
//! `diode` compares the diodes of `spillway_plumbing::diode` (plain and
//! per-core) with `crossbeam_channel` and `std::sync::mpsc`, on one thread
//! (groups `diode_push_pop`) and between a producer and a consumer thread
//! (`diode_spsc`, `diode_spsc_1024`); `envelope` encodes and decodes
//! Loggregator v2 envelopes like the collector's with prost, one and a
//! batch of 100 (`envelope_encode`, `envelope_decode`); `batching` cuts a
//! full diode into batches as the collector's shipper and the router's
//! egress do (`batching`); `matching` publishes batches into the router's
//! `PubSub` with 10, 1,000 and 10,000 subscriptions (`router_match`);
//! `container_line` measures one container line from its template to the
//! bytes of its batch in the collector, the old path (a prost `Envelope`,
//! `entry_len`, prost encoding) against the new (pre-encoded envelope bytes
//! appended to the batch) in the same run; `encoded` measures what a
//! router spends per envelope that travels as bytes: the peek, routing to
//! 10 subscriptions (match and enqueue) and the egress write.
//! Results land in the standard criterion layout under `target/criterion`;
//! each bench file's module doc says what it measures and why it matters.
