//! What a live commit does when another writer committed to its table
//! first. Pure decisions, no I/O: the committer reloads the table and asks.
//!
//! A layer's table has writers besides its layer: a backfill swap (a
//! `replaceWhere` commit), and later compaction and other maintenance. They
//! must never stop the live pipeline. Delta's optimistic concurrency makes
//! the loser of a race re-check and retry; delta-rs's own check counts
//! every file of the snapshot an append started from as read, so a swap
//! that removed any of them failed the append for good. Strata's commits
//! say what they depend on instead:
//!
//! - An append (a window's closed rows, an ODS epoch) reads nothing: its
//!   files are new, and its one dependency is its `txn` action (appId =
//!   layer, version = epoch). It is committed as a blind append
//!   (`isBlindAppend`, so other writers do not count its files against
//!   what they read), and when the table moved on it is rebuilt on the
//!   newest version, whatever that version removed or added.
//! - An upsert (a MERGE by key) reads the rows with its keys; its commit
//!   carries a predicate on them, so only a writer touching those keys is a
//!   conflict, and then the MERGE is run again on the newest version.
//!
//! Either way the table's `txn` version decides after a lost race: the
//! epoch already in the table (an earlier attempt of ours landed) is done;
//! another epoch of the same appId landed meanwhile means a second process
//! writes the layer, the one true conflict, which stops it. So does a
//! changed schema (the epoch's files were written for the old one).

use std::time::Duration;

/// Attempts of one epoch's commit before the layer gives up.
pub const MAX_ATTEMPTS: u32 = 30;
/// The first retry's pause; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// What the table looked like after a lost race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterRace {
    /// The epoch being committed.
    pub epoch: u64,
    /// The layer's `txn` version the committer knew before the attempt.
    pub known: Option<u64>,
    /// The layer's `txn` version in the reloaded table.
    pub now: Option<u64>,
    /// The reloaded table has the schema and partitioning the epoch's
    /// files were written for.
    pub same_shape: bool,
    /// Attempts made so far (1 after the first).
    pub attempt: u32,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The table holds the epoch: nothing to commit.
    AlreadyIn,
    /// Commit again on the reloaded table after this pause.
    Retry(Duration),
    /// Stop the layer, for this reason.
    Stop(String),
}

/// Decides what a committer does after losing a race.
///
/// ```
/// use strata_engine::delta::commit_race::{AfterRace, Next, after_race};
/// // A backfill swap committed first: the txn version is unchanged.
/// let swap = AfterRace { epoch: 5, known: Some(4), now: Some(4), same_shape: true, attempt: 1 };
/// assert!(matches!(after_race(swap), Next::Retry(_)));
/// // Another process committed epoch 5 of this layer: it is in.
/// assert_eq!(after_race(AfterRace { now: Some(5), ..swap }), Next::AlreadyIn);
/// ```
pub fn after_race(r: AfterRace) -> Next {
    if r.now.is_some_and(|v| v >= r.epoch) {
        return Next::AlreadyIn;
    }
    if r.now != r.known {
        return Next::Stop(format!(
            "another writer committed epoch {} of this layer while this process was committing epoch {}: two processes run the layer on one storage root. Stop one of them; this one stops here and resumes from its checkpoint when restarted",
            r.now.map_or("(none)".to_string(), |v| v.to_string()),
            r.epoch
        ));
    }
    if !r.same_shape {
        return Next::Stop(format!(
            "another writer changed the table's schema or partitioning while epoch {} was being committed; its files were written for the old one. Restore the table's schema (or move the table aside and rebuild it), then restart",
            r.epoch
        ));
    }
    if r.attempt >= MAX_ATTEMPTS {
        return Next::Stop(format!(
            "epoch {} lost {} commit races in a row to other writers of the table; find what keeps committing to it (a loop of backfills or maintenance), then restart",
            r.epoch, r.attempt
        ));
    }
    Next::Retry(pause(r.attempt))
}

/// The pause before attempt `attempt + 1`.
fn pause(attempt: u32) -> Duration {
    let doubled = FIRST_PAUSE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    doubled.min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn race() -> AfterRace {
        AfterRace {
            epoch: 7,
            known: Some(6),
            now: Some(6),
            same_shape: true,
            attempt: 1,
        }
    }

    #[test]
    fn a_swap_or_compaction_that_won_is_retried_on_top_of() {
        assert_eq!(after_race(race()), Next::Retry(FIRST_PAUSE));
        let first = AfterRace {
            known: None,
            now: None,
            ..race()
        };
        assert!(matches!(after_race(first), Next::Retry(_)));
    }

    #[test]
    fn an_earlier_attempt_that_landed_is_not_committed_twice() {
        let landed = AfterRace {
            now: Some(7),
            ..race()
        };
        assert_eq!(after_race(landed), Next::AlreadyIn);
        let beyond = AfterRace {
            now: Some(9),
            same_shape: false,
            ..race()
        };
        assert_eq!(after_race(beyond), Next::AlreadyIn);
    }

    #[test]
    fn another_process_on_the_layer_stops_it() {
        let twin = AfterRace {
            now: Some(6),
            known: Some(5),
            ..race()
        };
        let Next::Stop(why) = after_race(twin) else {
            panic!("a second writer of the layer must stop it");
        };
        assert!(why.contains("two processes"), "{why}");
        let from_nothing = AfterRace {
            known: None,
            now: Some(3),
            ..race()
        };
        assert!(matches!(after_race(from_nothing), Next::Stop(_)));
    }

    #[test]
    fn a_changed_schema_stops_it() {
        let changed = AfterRace {
            same_shape: false,
            ..race()
        };
        let Next::Stop(why) = after_race(changed) else {
            panic!("a changed schema must stop the layer");
        };
        assert!(why.contains("schema"), "{why}");
    }

    #[test]
    fn pauses_grow_to_a_bound_and_attempts_end() {
        assert_eq!(pause(1), FIRST_PAUSE);
        assert_eq!(pause(2), FIRST_PAUSE * 2);
        assert_eq!(pause(200), MAX_PAUSE);
        let last = AfterRace {
            attempt: MAX_ATTEMPTS,
            ..race()
        };
        assert!(matches!(after_race(last), Next::Stop(_)));
        let before_last = AfterRace {
            attempt: MAX_ATTEMPTS - 1,
            ..race()
        };
        assert!(matches!(after_race(before_last), Next::Retry(_)));
    }
}
