//! What a warehouse file says about a dimension and a layer's lookups.

use std::time::Duration;

use arrow::datatypes::SchemaRef;

use crate::storage::TableLocation;

/// A dimension a layer's SQL can look rows up in.
#[derive(Debug, Clone)]
pub struct DimensionSpec {
    /// The name the SQL joins it by.
    pub name: String,
    /// Its rows.
    pub schema: SchemaRef,
    /// The column lookups are keyed on.
    pub key: String,
    /// Where the rows are.
    pub source: DimensionSource,
    /// The cache in front of a PostgreSQL or Redis dimension (`None`: every
    /// lookup asks the source).
    pub cache: Option<CacheSpec>,
    /// How long one lookup (one query for a batch's keys) may take.
    pub timeout: Duration,
}

/// Where a dimension's rows are.
#[derive(Debug, Clone)]
pub enum DimensionSource {
    /// A Delta table, read whole and reloaded when it gets a new version.
    Delta {
        /// The table.
        location: TableLocation,
        /// How often to check for a new version.
        reload_interval: Duration,
    },
    /// A PostgreSQL table (or view).
    Postgres {
        /// `postgres://user:password@host:port/db` or a key=value string.
        url: String,
        /// The table, optionally schema-qualified (`public.agents`).
        table: String,
    },
    /// Redis keys `<key_prefix><key>`.
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Prepended to the key value to form the Redis key.
        key_prefix: String,
        /// How a row is stored.
        format: RedisFormat,
    },
}

/// How a dimension row is stored under its Redis key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFormat {
    /// A hash, one field per column (`HSET agent:7 name Ann store_id 3`).
    Hash,
    /// A string holding a JSON object (`SET agent:7 '{"name":"Ann"}'`).
    Json,
}

/// Flink's `lookup.partial-cache.*` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSpec {
    /// Keys held at most; the oldest are evicted first.
    pub max_rows: usize,
    /// A cached row is asked for again this long after it was fetched.
    pub expire_after_write: Duration,
    /// Also remember keys the dimension does not have.
    pub cache_missing_keys: bool,
}

/// What a layer does with rows whose lookup failed or timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LookupFailurePolicy {
    /// Ask again (backing off up to `max_backoff`) until the dimension
    /// answers; the layer waits meanwhile. Nothing is lost or changed.
    #[default]
    Retry,
    /// Emit the rows with the dimension's columns null (the key column
    /// keeps the looked-up value), and go on.
    Nulls,
    /// Send the rows to the layer's `_dead_letter` table with the reason.
    DeadLetter,
}

impl LookupFailurePolicy {
    /// The name written in warehouse files.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupFailurePolicy::Retry => "retry",
            LookupFailurePolicy::Nulls => "nulls",
            LookupFailurePolicy::DeadLetter => "dead_letter",
        }
    }
}
