//! The checkpoint manifest: the record that decides an epoch.
//!
//! An epoch is committed the moment its manifest exists. The manifest holds
//! the source offsets the epoch read up to and, for every Delta sink, the
//! files the epoch wrote (the `add` actions, not yet in the table's log).
//! Committing those files to the tables happens after, and is idempotent
//! through the Delta `txn` action, so a crash between the manifest and the
//! table commits is repaired on restart by committing the same files again.

use deltalake::kernel::Add;
use serde::{Deserialize, Serialize};

use crate::kafka::offsets::SourceOffsets;

/// The manifest format version this engine writes.
pub const MANIFEST_FORMAT: u32 = 1;

/// One checkpoint of one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, for readers of older manifests.
    pub format: u32,
    /// The pipeline (layer) id.
    pub pipeline: String,
    /// The epoch, from 1.
    pub epoch: u64,
    /// When it was written, ms since the epoch.
    pub created_at_ms: i64,
    /// Next offset to read per source partition after this epoch.
    pub offsets: SourceOffsets,
    /// Each sink's files for this epoch.
    pub sinks: Vec<PendingCommit>,
}

/// A Delta sink's pre-committed work for one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCommit {
    /// The table's URL.
    pub table: String,
    /// The Delta `txn` appId the sink commits under.
    pub app_id: String,
    /// The Parquet files written for the epoch.
    pub adds: Vec<Add>,
    /// Rows in those files.
    pub rows: u64,
}

impl Manifest {
    /// The manifest's file name; zero-padded so names sort by epoch.
    pub fn file_name(epoch: u64) -> String {
        format!("{epoch:020}.json")
    }

    /// The epoch a manifest file name stands for.
    pub fn epoch_of(file_name: &str) -> Option<u64> {
        file_name.strip_suffix(".json")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_by_epoch_and_parse_back() {
        let a = Manifest::file_name(9);
        let b = Manifest::file_name(10);
        assert!(a < b);
        assert_eq!(Manifest::epoch_of(&b), Some(10));
        assert_eq!(Manifest::epoch_of("10.json.tmp"), None);
    }

    #[test]
    fn round_trips_through_json() {
        let mut offsets = SourceOffsets::default();
        offsets.advance("deals", 3, 99);
        let m = Manifest {
            format: MANIFEST_FORMAT,
            pipeline: "ods_deals".into(),
            epoch: 7,
            created_at_ms: 1,
            offsets,
            sinks: vec![PendingCommit {
                table: "file:///t/".into(),
                app_id: "ods_deals".into(),
                adds: vec![],
                rows: 0,
            }],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""next_offset":100"#), "{text}");
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }
}
