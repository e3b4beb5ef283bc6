//! Counters of a dimension's lookups, exported in every checkpoint manifest
//! (`layers[].lookups`) and in the logs.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters, shared by a dimension's lookups.
#[derive(Debug, Default)]
pub struct LookupMetrics {
    keys: AtomicU64,
    hits: AtomicU64,
    queries: AtomicU64,
    rows_fetched: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    reloads: AtomicU64,
}

/// The counters at one moment (totals since the process started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupStats {
    /// The dimension.
    pub dimension: String,
    /// Distinct keys looked up (per batch).
    pub keys: u64,
    /// Keys answered by the cache (or the in-memory Delta table).
    pub hits: u64,
    /// Keys asked of the source.
    pub misses: u64,
    /// Queries sent to the source (one per batch with misses).
    pub queries: u64,
    /// Rows the source returned.
    pub rows_fetched: u64,
    /// Lookups that failed (errors and timeouts).
    pub failures: u64,
    /// Of those, timeouts.
    pub timeouts: u64,
    /// Delta dimensions: times the table was (re)loaded.
    pub reloads: u64,
    /// `hits / keys`.
    pub hit_rate: f64,
}

impl LookupMetrics {
    pub(crate) fn keys(&self, n: usize, hits: usize) {
        self.keys.fetch_add(n as u64, Ordering::Relaxed);
        self.hits.fetch_add(hits as u64, Ordering::Relaxed);
    }

    pub(crate) fn query(&self, rows: usize) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.rows_fetched.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self, timeout: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if timeout {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reload(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn stats(&self, dimension: &str) -> LookupStats {
        let keys = self.keys.load(Ordering::Relaxed);
        let hits = self.hits.load(Ordering::Relaxed);
        LookupStats {
            dimension: dimension.to_string(),
            keys,
            hits,
            misses: keys - hits.min(keys),
            queries: self.queries.load(Ordering::Relaxed),
            rows_fetched: self.rows_fetched.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            hit_rate: if keys == 0 {
                0.0
            } else {
                hits as f64 / keys as f64
            },
        }
    }
}
