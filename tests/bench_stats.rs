//! The benches' percentile rules (`benches/support/stats.rs`), tested here
//! because bench targets are built without a test harness.

#[allow(dead_code)]
#[path = "../benches/support/stats.rs"]
mod stats;
