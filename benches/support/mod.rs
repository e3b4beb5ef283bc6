//! What the benches share: running `strata` as a child process and measuring
//! its peak memory and, while it runs, its CPU and memory from /proc; what
//! the storage root holds on disk; what it committed, from the Delta log.

// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

pub mod beike;
pub mod child;
pub mod delta_log;
pub mod endpoints;
pub mod flags;
pub mod manifests;
pub mod procfs;
pub mod runner;
pub mod stats;
pub mod table_dirs;
