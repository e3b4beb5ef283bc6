//! Delta Lake sinks.

pub mod two_phase_sink;
