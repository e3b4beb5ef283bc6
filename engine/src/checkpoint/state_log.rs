//! Incremental operator state: which state file holds each part of a
//! layer's state, so a checkpoint writes only the parts that are new.
//!
//! A window aggregate's state is its open windows (or slices), and an
//! epoch's rows touch few of them, with few groups: a day's CUMULATE Top-N
//! holds up to 1,440 one-minute slices, an hour's `COUNT(DISTINCT)` a set
//! per group. Writing all of it at every checkpoint (five times a second at
//! 200 ms epochs) made each epoch cost what the day held. So the operator
//! hands over its state as parts with ids: each checkpoint freezes the
//! groups the epoch's rows touched into new parts (partial states, merged
//! when read), and says which parts it holds. The layer writes the new
//! parts to the epoch's state file, and the manifest names, for the rest,
//! the rows of the earlier files that hold them ([`StateSlice`]s). This is
//! pure bookkeeping, apart from the I/O: the layer task writes the files,
//! recovery reads the slices.
//!
//! Every state file a manifest names is read whole at a restore. So that a
//! restore reads a bounded number of files, and windows do not pile up
//! parts, the log asks for every part again (the operator then merges each
//! window's parts into one, and the layer writes one whole file) when the
//! files it names reach [`StateLog::new`]'s bound, and at a run's first
//! checkpoint, where it does not know what the restored files hold.
//!
//! Files are only ever named by newer checkpoints for as long as one of
//! their parts is held: once a checkpoint stops naming a file, no later one
//! names it again. Pruning relies on that (see
//! [`CheckpointStore::prune`](crate::checkpoint::store::CheckpointStore::prune)).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Rows `offset .. offset + rows` of the state file `file` (relative to
/// the checkpoint directory): part of a layer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSlice {
    /// The state file.
    pub file: String,
    /// The first row.
    pub offset: u64,
    /// How many rows.
    pub rows: u64,
}

/// Where one part is: its file, rows, and a share of the file's bytes.
#[derive(Debug, Clone)]
struct Placed {
    file: Arc<str>,
    offset: u64,
    rows: u64,
    bytes: u64,
}

/// A file this checkpoint wrote: its name, its size, and the parts it
/// holds, in order (key and rows).
pub struct Written<'a> {
    /// The file's name, as the manifest names it.
    pub file: &'a str,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its parts, in the order their rows are in the file.
    pub parts: &'a [(i64, u64)],
}

/// Which file holds each part of one layer's state.
#[derive(Debug)]
pub struct StateLog {
    parts: BTreeMap<i64, Placed>,
    max_files: usize,
    /// Whether this run has written a checkpoint with every part.
    whole_written: bool,
}

impl StateLog {
    /// A log that asks for every part once its checkpoints name
    /// `max_files` files.
    pub fn new(max_files: usize) -> Self {
        StateLog {
            parts: BTreeMap::new(),
            max_files: max_files.max(1),
            whole_written: false,
        }
    }

    /// Whether the next checkpoint must write every part, not only the
    /// new ones: the run's first, and when the files named reached the
    /// bound.
    pub fn wants_every_part(&self) -> bool {
        !self.whole_written || self.files() >= self.max_files
    }

    /// Records a checkpoint: `written` (none when no part is new) holds
    /// the new parts (every part when `every_part`), and `held`
    /// are the keys of every part the operator holds now; the others are
    /// forgotten.
    pub fn record(&mut self, written: Option<Written<'_>>, held: &[i64], every_part: bool) {
        if every_part {
            self.parts.clear();
            self.whole_written = true;
        }
        if let Some(w) = written {
            let file: Arc<str> = Arc::from(w.file);
            let total: u64 = w.parts.iter().map(|(_, rows)| rows).sum();
            let mut offset = 0;
            for (key, rows) in w.parts {
                let bytes = w.bytes.saturating_mul(*rows) / total.max(1);
                self.parts.insert(
                    *key,
                    Placed {
                        file: file.clone(),
                        offset,
                        rows: *rows,
                        bytes,
                    },
                );
                offset += rows;
            }
        }
        let held: BTreeSet<i64> = held.iter().copied().collect();
        self.parts.retain(|key, _| held.contains(key));
    }

    /// The rows of every part held, by file (oldest file first) and offset;
    /// adjacent rows of one file are one slice.
    pub fn slices(&self) -> Vec<StateSlice> {
        let mut placed: Vec<&Placed> = self.parts.values().collect();
        placed.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
        let mut out: Vec<StateSlice> = Vec::new();
        for p in placed {
            match out.last_mut() {
                Some(last) if *last.file == *p.file && last.offset + last.rows == p.offset => {
                    last.rows += p.rows;
                }
                _ => out.push(StateSlice {
                    file: p.file.to_string(),
                    offset: p.offset,
                    rows: p.rows,
                }),
            }
        }
        out
    }

    /// How many files the parts held are in.
    pub fn files(&self) -> usize {
        let mut files: Vec<&str> = self.parts.values().map(|p| &*p.file).collect();
        files.sort_unstable();
        files.dedup();
        files.len()
    }

    /// Rows of every part held.
    pub fn rows(&self) -> u64 {
        self.parts.values().map(|p| p.rows).sum()
    }

    /// Bytes of every part held (each part's share of its file's bytes, by
    /// rows).
    pub fn bytes(&self) -> u64 {
        self.parts.values().map(|p| p.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(file: &str, offset: u64, rows: u64) -> StateSlice {
        StateSlice {
            file: file.into(),
            offset,
            rows,
        }
    }

    #[test]
    fn a_checkpoint_writes_the_new_parts_and_names_the_rest_where_they_are() {
        let mut log = StateLog::new(8);
        assert!(log.wants_every_part(), "a run's first checkpoint");
        let every = [(10, 3), (20, 2), (30, 4)];
        log.record(
            Some(Written {
                file: "e1",
                bytes: 900,
                parts: &every,
            }),
            &[10, 20, 30],
            true,
        );
        assert_eq!(log.slices(), vec![slice("e1", 0, 9)]);
        assert!(!log.wants_every_part());

        // Window 20 changed; 10 and 30 stay where they were.
        log.record(
            Some(Written {
                file: "e2",
                bytes: 50,
                parts: &[(20, 5)],
            }),
            &[10, 20, 30],
            false,
        );
        assert_eq!(
            log.slices(),
            vec![slice("e1", 0, 3), slice("e1", 5, 4), slice("e2", 0, 5)]
        );
        assert_eq!(log.rows(), 12);
        assert_eq!(log.bytes(), 300 + 400 + 50);

        // Nothing changed, window 10 closed.
        log.record(None, &[20, 30], false);
        assert_eq!(log.slices(), vec![slice("e1", 5, 4), slice("e2", 0, 5)]);

        // A new window, and 30 closed: e1 is no longer named.
        log.record(
            Some(Written {
                file: "e4",
                bytes: 10,
                parts: &[(40, 1)],
            }),
            &[20, 40],
            false,
        );
        assert_eq!(log.slices(), vec![slice("e2", 0, 5), slice("e4", 0, 1)]);
        assert_eq!(log.files(), 2);
    }

    #[test]
    fn every_part_is_asked_for_again_once_the_files_named_reach_the_bound() {
        let mut log = StateLog::new(3);
        log.record(
            Some(Written {
                file: "e1",
                bytes: 10,
                parts: &[(1, 1)],
            }),
            &[1],
            true,
        );
        for (epoch, key) in [(2, 2), (3, 3)] {
            assert!(!log.wants_every_part());
            let file = format!("e{epoch}");
            log.record(
                Some(Written {
                    file: &file,
                    bytes: 10,
                    parts: &[(key, 1)],
                }),
                &[1, 2, 3][..key as usize],
                false,
            );
        }
        assert_eq!(log.files(), 3);
        assert!(log.wants_every_part());
        log.record(
            Some(Written {
                file: "e4",
                bytes: 30,
                parts: &[(1, 1), (2, 1), (3, 1)],
            }),
            &[1, 2, 3],
            true,
        );
        assert_eq!(log.slices(), vec![slice("e4", 0, 3)]);
        assert!(!log.wants_every_part());
    }

    #[test]
    fn an_operator_holding_nothing_names_no_file() {
        let mut log = StateLog::new(4);
        log.record(None, &[], true);
        assert!(log.slices().is_empty());
        assert_eq!((log.files(), log.rows(), log.bytes()), (0, 0, 0));
    }
}
