//! The partial cache in front of a PostgreSQL or Redis dimension.
//!
//! Entries expire a fixed time after they were written, so the oldest
//! written entry is always the first to expire: one FIFO queue gives both
//! expiry and eviction (when the cache is full the oldest entry goes), and
//! nothing has to be touched on a hit. Time is passed in, so the logic is
//! tested without clocks.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::lookup::spec::CacheSpec;

/// What the cache knows of a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached<V> {
    /// The dimension's rows for the key (usually one).
    Rows(Vec<V>),
    /// The dimension has no row for the key.
    Missing,
}

struct Entry<V> {
    written: Instant,
    value: Cached<V>,
}

/// Keys to their dimension rows (`V`: a handle on a row).
pub struct LookupCache<V> {
    spec: CacheSpec,
    entries: HashMap<String, Entry<V>>,
    order: VecDeque<(String, Instant)>,
}

impl<V: Clone> LookupCache<V> {
    /// An empty cache.
    pub fn new(spec: CacheSpec) -> Self {
        LookupCache {
            spec,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What is known of `key` at `now`, unless it expired.
    pub fn get(&self, key: &str, now: Instant) -> Option<&Cached<V>> {
        self.entries
            .get(key)
            .filter(|e| now.saturating_duration_since(e.written) < self.spec.expire_after_write)
            .map(|e| &e.value)
    }

    /// Remembers `key`'s rows (an empty list: the key is missing, kept only
    /// with `cache_missing_keys`).
    pub fn put(&mut self, key: String, rows: Vec<V>, now: Instant) {
        let value = if rows.is_empty() {
            if !self.spec.cache_missing_keys {
                return;
            }
            Cached::Missing
        } else {
            Cached::Rows(rows)
        };
        if self.spec.max_rows == 0 {
            return;
        }
        self.order.push_back((key.clone(), now));
        self.entries.insert(
            key,
            Entry {
                written: now,
                value,
            },
        );
        self.evict(now);
    }

    fn evict(&mut self, now: Instant) {
        while let Some((key, written)) = self.order.front() {
            let expired = now.saturating_duration_since(*written) >= self.spec.expire_after_write;
            if !expired && self.entries.len() <= self.spec.max_rows {
                break;
            }
            // A key written again since has a newer queue entry: only the
            // entry this queue slot wrote is removed.
            if self.entries.get(key).is_some_and(|e| e.written == *written) {
                self.entries.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(max_rows: usize, ttl_s: u64, missing: bool) -> CacheSpec {
        CacheSpec {
            max_rows,
            expire_after_write: Duration::from_secs(ttl_s),
            cache_missing_keys: missing,
        }
    }

    #[test]
    fn rows_are_served_until_they_expire() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(spec(10, 60, false));
        c.put("a".into(), vec![1], t0);
        assert_eq!(
            c.get("a", t0 + Duration::from_secs(59)),
            Some(&Cached::Rows(vec![1]))
        );
        assert_eq!(c.get("a", t0 + Duration::from_secs(60)), None);
        assert_eq!(c.get("b", t0), None);
    }

    #[test]
    fn the_oldest_key_goes_when_full() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(spec(2, 60, false));
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            c.put(k.into(), vec![i], t0 + Duration::from_secs(i as u64));
        }
        let now = t0 + Duration::from_secs(3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", now), None);
        assert_eq!(c.get("c", now), Some(&Cached::Rows(vec![2])));
    }

    #[test]
    fn rewriting_a_key_keeps_it_past_its_first_slot() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(spec(2, 60, false));
        c.put("a".into(), vec![1], t0);
        c.put("b".into(), vec![2], t0 + Duration::from_secs(1));
        c.put("a".into(), vec![3], t0 + Duration::from_secs(2));
        c.put("c".into(), vec![4], t0 + Duration::from_secs(3));
        let now = t0 + Duration::from_secs(4);
        assert_eq!(c.get("a", now), Some(&Cached::Rows(vec![3])));
        assert_eq!(c.get("b", now), None, "b is the oldest write");
    }

    #[test]
    fn missing_keys_are_kept_only_when_asked() {
        let t0 = Instant::now();
        let mut off = LookupCache::<u8>::new(spec(10, 60, false));
        off.put("x".into(), vec![], t0);
        assert_eq!(off.get("x", t0), None);
        let mut on = LookupCache::<u8>::new(spec(10, 60, true));
        on.put("x".into(), vec![], t0);
        assert_eq!(on.get("x", t0), Some(&Cached::Missing));
    }
}
