//! `state_ttl:` for a `GROUP BY` without windows, as Flink's
//! `table.exec.state.ttl`: a group not updated for the time to live is
//! forgotten.
//!
//! A windowed aggregate frees a window's groups when the window closes; a
//! plain `GROUP BY` never closes, so its state grows with every key ever
//! seen (every user, every order id), and a warehouse run for months runs
//! out of memory. With a time to live, groups untouched for that long are
//! dropped at a checkpoint. Their row in the table stays as it was; a key
//! seen again after it expired starts from nothing, and its next upsert
//! replaces the row with the new count (Flink's semantics too).
//!
//! Time here is processing time (the wall clock when a group was last
//! updated, Flink's default), kept per group in the checkpoint as an extra
//! state column, so a restart does not make every group young again. State
//! written without the column (before a time to live was set) counts as
//! touched at restore.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::error::Result;

/// The state column holding when each group was last updated (ms).
pub const TOUCHED_COLUMN: &str = "__strata_touched_ms";

/// The wall clock, in ms since the Unix epoch (a test's own in tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// When each group (by id) was last updated, and what expires.
pub struct GroupTtl {
    ttl_ms: i64,
    touched: Vec<i64>,
    clock: Clock,
}

impl GroupTtl {
    /// Groups untouched for `ttl` expire; `clock` tells the time.
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        GroupTtl {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            touched: Vec::new(),
            clock,
        }
    }

    /// Marks the groups `changed` flags as updated now (new ids included).
    pub fn touch(&mut self, changed: &[bool]) {
        let now = (self.clock)();
        if self.touched.len() < changed.len() {
            self.touched.resize(changed.len(), now);
        }
        for (touched, changed) in self.touched.iter_mut().zip(changed) {
            if *changed {
                *touched = now;
            }
        }
    }

    /// Which of `groups` groups to keep, if any expired (then forgets the
    /// expired ones' times: the kept are renumbered in order).
    pub fn expire(&mut self, groups: usize) -> Option<BooleanArray> {
        let now = (self.clock)();
        self.touched.resize(groups, now);
        let oldest = now.saturating_sub(self.ttl_ms);
        if self.touched.iter().all(|t| *t > oldest) {
            return None;
        }
        let keep: BooleanArray = self.touched.iter().map(|t| Some(*t > oldest)).collect();
        self.touched.retain(|t| *t > oldest);
        Some(keep)
    }

    /// `snapshot` (one row per group, by id) with the groups' times added.
    pub fn attach(&mut self, snapshot: RecordBatch) -> Result<RecordBatch> {
        let now = (self.clock)();
        self.touched.resize(snapshot.num_rows(), now);
        let mut fields: Vec<Arc<Field>> = snapshot.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(TOUCHED_COLUMN, DataType::Int64, false)));
        let mut columns = snapshot.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(self.touched.clone())) as ArrayRef);
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// Takes the groups' times out of checkpointed `state` (none there: all
    /// touched now); returns the aggregate's own state.
    pub fn detach(&mut self, state: RecordBatch) -> RecordBatch {
        let (rest, touched) = split_touched(state);
        let now = (self.clock)();
        self.touched = match touched {
            Some(t) => t.iter().map(|v| v.unwrap_or(now)).collect(),
            None => vec![now; rest.num_rows()],
        };
        rest
    }
}

/// `state` without its times column, and the column if it had one.
pub fn split_touched(state: RecordBatch) -> (RecordBatch, Option<Int64Array>) {
    let Ok(i) = state.schema().index_of(TOUCHED_COLUMN) else {
        return (state, None);
    };
    let touched = state
        .column(i)
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned();
    let mut rest = state;
    rest.remove_column(i);
    (rest, touched)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    fn clock() -> (Arc<AtomicI64>, Clock) {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let read = now.clone();
        (now, Arc::new(move || read.load(Ordering::SeqCst)))
    }

    #[test]
    fn groups_untouched_for_the_ttl_expire_and_the_rest_keep_their_times() {
        let (now, clock) = clock();
        let mut ttl = GroupTtl::new(Duration::from_secs(10), clock);
        ttl.touch(&[true, true, true]);
        assert!(ttl.expire(3).is_none());
        now.fetch_add(6_000, Ordering::SeqCst);
        ttl.touch(&[false, true, false, true]);
        now.fetch_add(4_000, Ordering::SeqCst);
        // Groups 0 and 2 are 10 s old: expired; 1 and 3 are 4 s old.
        let keep = ttl
            .expire(4)
            .map(|k| k.iter().flatten().collect::<Vec<_>>());
        assert_eq!(keep, Some(vec![false, true, false, true]));
        now.fetch_add(5_999, Ordering::SeqCst);
        assert!(ttl.expire(2).is_none());
        now.fetch_add(1, Ordering::SeqCst);
        assert_eq!(ttl.expire(2).map(|k| k.true_count()), Some(0));
    }

    #[test]
    fn the_times_survive_a_checkpoint_and_old_state_counts_as_touched() {
        let (now, clock) = clock();
        let mut ttl = GroupTtl::new(Duration::from_secs(10), clock.clone());
        ttl.touch(&[true, true]);
        now.fetch_add(8_000, Ordering::SeqCst);
        ttl.touch(&[false, true]);
        let state =
            RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef)])
                .unwrap_or_else(|e| panic!("{e}"));
        let saved = ttl.attach(state.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(saved.num_columns(), 2);

        let mut restored = GroupTtl::new(Duration::from_secs(10), clock.clone());
        assert_eq!(restored.detach(saved), state);
        now.fetch_add(2_000, Ordering::SeqCst);
        let keep = restored
            .expire(2)
            .map(|k| k.iter().flatten().collect::<Vec<_>>());
        assert_eq!(keep, Some(vec![false, true]));

        let mut from_old = GroupTtl::new(Duration::from_secs(10), clock);
        assert_eq!(from_old.detach(state.clone()), state);
        now.fetch_add(9_999, Ordering::SeqCst);
        assert!(from_old.expire(2).is_none());
    }
}
