//! Sample event generators: realistic records for demos, tests and benches.

pub mod beike_events;
pub mod beike_world;
pub mod deals;
pub mod dimension_tables;
pub mod malform;
