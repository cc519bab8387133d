//! Benchmark results and the report made from them.
//!
//! - [`results`]: the schema of the files `spillway-bench` writes under
//!   `target/bench/`;
//! - [`analysis`]: the numbers computed from them (highest rate held, CPU
//!   per line, the targets);
//! - [`micro`]: the criterion micro-benchmarks' results;
//! - [`scenarios`]: the max-rate and short-lived suites, and the figures
//!   from before the capture rework;
//! - [`charts`]: the PNG charts;
//! - [`report`]: the markdown report, [`write_report`].

pub mod analysis;
pub mod charts;
pub mod format;
pub mod micro;
pub mod report;
pub mod results;
pub mod scenarios;

#[cfg(test)]
mod fixtures;

pub use report::{Inputs, write_report};
