//! Lookup joins: enriching a stream with dimension rows, as Flink's
//! `JOIN dim FOR SYSTEM_TIME AS OF e.proc_time ON e.k = dim.k`.
//!
//! A dimension lives outside the stream: a Delta table (the warehouse's own,
//! or any path), a PostgreSQL table or Redis keys. Each input batch asks its
//! dimensions once, for the batch's distinct keys (one query per batch, never
//! one per row), asynchronously and under a timeout; a [`cache`] in front of
//! PostgreSQL and Redis keeps recent rows (and, optionally, keys known to be
//! missing), as Flink's FLIP-221 partial cache does. A Delta dimension is
//! held whole in memory and reloaded when the table gets a new version
//! (Flink's ALL strategy): it is the warehouse's own storage, so reading it
//! whole is cheap and a lookup is a hash probe.
//!
//! The join is processing-time: each row sees the dimension as it is when
//! the row is processed, so a replay after a crash may see newer dimension
//! rows than the first run did. That is Flink's semantics too; for joins
//! that must be repeatable, join on event time in a window or interval join.
//!
//! When a lookup fails or times out, the layer's [`LookupFailurePolicy`]
//! decides: retry until the dimension answers (the layer waits, and so does
//! its checkpoint), emit the rows with the dimension's columns null, or send
//! them to the layer's dead-letter table with the reason.

pub mod cache;
mod delta_source;
pub mod dimension;
pub mod metrics;
mod postgres_source;
mod redis_source;
pub mod spec;
mod text_rows;

pub use dimension::{Dimension, LookupError};
pub use metrics::{LookupMetrics, LookupStats};
pub use spec::{CacheSpec, DimensionSource, DimensionSpec, LookupFailurePolicy, RedisFormat};
