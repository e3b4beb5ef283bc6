//! What the benches share: running `strata` as a child process and measuring
//! its peak memory, and reading what it committed from the Delta log.

pub mod child;
pub mod delta_log;
pub mod stats;
