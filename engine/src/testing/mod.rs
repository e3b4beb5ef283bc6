//! In-memory I/O for the engine's own tests: sources over an in-memory log,
//! tables that keep what each epoch committed, injected crashes, and a
//! harness that runs a whole dataflow on them with a paused clock.

pub(crate) mod crash;
pub(crate) mod harness;
pub(crate) mod memory_source;
pub(crate) mod memory_tables;

#[cfg(test)]
mod backlog_tests;
#[cfg(test)]
mod dataflow_tests;
#[cfg(test)]
mod fixture_tests;
