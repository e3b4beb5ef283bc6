//! Sample event generators: realistic records for demos, tests and benches.

pub mod deals;
