//! The checkpoint manifest: the record that decides an epoch.
//!
//! An epoch is committed the moment its manifest exists. One manifest covers
//! the whole dataflow (every layer the process runs): the offsets each source
//! read up to, each layer's watermark and operator state, and, for every
//! Delta table, the files the epoch wrote (the `add` actions, not yet in the
//! table's log). Committing those files to the tables happens after, and is
//! idempotent through the Delta `txn` action, so a crash between the
//! manifest and the table commits is repaired on restart by committing the
//! same files again. Because all layers share the epoch, a chain of layers
//! is exactly-once as a whole, without broker transactions.

use std::collections::BTreeMap;

use deltalake::kernel::Add;

use crate::checkpoint::state_log::StateSlice;
use crate::evolution::LayerShape;
use crate::kafka::offsets::SourceOffsets;
use crate::lookup::LookupStats;

pub use crate::checkpoint::format::MANIFEST_FORMAT;

/// One checkpoint of one dataflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Format version, for readers of older manifests.
    pub format: u32,
    /// The dataflow id (the warehouse's name).
    pub dataflow: String,
    /// The epoch, from 1.
    pub epoch: u64,
    /// When it was written, ms since the epoch.
    pub created_at_ms: i64,
    /// Where each source is.
    pub sources: Vec<SourceCheckpoint>,
    /// Where each layer is.
    pub layers: Vec<LayerCheckpoint>,
    /// Each table's work for this epoch.
    pub sinks: Vec<PendingCommit>,
    /// sha256 of the warehouse file the epoch ran (see `crate::versions`);
    /// none in manifests of runs that did not record it.
    pub version: Option<String>,
}

/// A source's position after an epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceCheckpoint {
    /// The source id (its layer, or `layer.input`).
    pub id: String,
    /// Next offset to read per partition.
    pub offsets: SourceOffsets,
    /// Latest event time seen per partition, for the watermark.
    pub event_times: Vec<PartitionTime>,
}

/// A layer's time and state after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCheckpoint {
    /// The layer.
    pub name: String,
    /// Its input watermark, microseconds (what makes rows late).
    pub watermark: Option<i64>,
    /// Its operator state file, relative to the checkpoint directory, when
    /// the state was written whole.
    pub state: Option<String>,
    /// The rows of earlier state files that hold its state, when the
    /// operator keeps it by parts (see `checkpoint::state_log`).
    pub state_slices: Vec<StateSlice>,
    /// Rows it published to Kafka in the epoch, by the table they came
    /// from (the layer's own for `publish:`, side tables for `side_topics:`).
    pub published: BTreeMap<String, u64>,
    /// Its dimensions' lookup counters (totals since the process started):
    /// cache hit rate, queries, failures.
    pub lookups: Vec<LookupStats>,
    /// Its SQL's hash and state layout, for redeploys to compare with
    /// (none in manifests of runs that did not record them).
    pub shape: Option<LayerShape>,
}

/// A partition's latest event time, as kept in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTime {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Latest event time seen, microseconds.
    pub max_event_time: i64,
}

/// A Delta sink's pre-committed work for one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommit {
    /// The table's URL.
    pub table: String,
    /// The Delta `txn` appId the sink commits under.
    pub app_id: String,
    /// The Parquet files written for the epoch.
    pub adds: Vec<Add>,
    /// Rows in those files.
    pub rows: u64,
    /// For an upserted table: the staged rows to MERGE (instead of `adds`).
    pub upsert: Option<Upsert>,
}

/// An epoch's changed rows of an upserted table, waiting to be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    /// The columns that identify a row.
    pub keys: Vec<String>,
    /// The staged Parquet file, relative to the table root (none: no change).
    pub staging: Option<String>,
}

impl PendingCommit {
    /// Whether the epoch added nothing to the table: no files and no staged
    /// upserts. Such an epoch is not committed to the table at all (an epoch
    /// costs what it carries); see [`crate::dataflow::coordinator`] for why
    /// recovery stays exactly-once.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.upsert.as_ref().is_none_or(|u| u.staging.is_none())
    }
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
            dataflow: "beike".into(),
            epoch: 7,
            created_at_ms: 1,
            sources: vec![SourceCheckpoint {
                id: "ods_deals".into(),
                offsets,
                event_times: vec![],
            }],
            layers: vec![
                LayerCheckpoint {
                    name: "ods_deals".into(),
                    published: BTreeMap::from([("ods_deals_late".to_string(), 12)]),
                    watermark: Some(5),
                    state: None,
                    state_slices: vec![],
                    lookups: vec![],
                    shape: Some(LayerShape::new(Some("SELECT 1"), None, None)),
                },
                LayerCheckpoint {
                    name: "dws".into(),
                    published: BTreeMap::new(),
                    watermark: Some(5),
                    state: None,
                    state_slices: vec![
                        StateSlice {
                            file: "state/1-r-dws.arrow".into(),
                            offset: 4,
                            rows: 2,
                        },
                        StateSlice {
                            file: "state/3-r-dws.arrow".into(),
                            offset: 0,
                            rows: 9,
                        },
                    ],
                    lookups: vec![],
                    shape: None,
                },
            ],
            sinks: vec![PendingCommit {
                table: "file:///t/".into(),
                app_id: "ods_deals".into(),
                adds: vec![],
                rows: 0,
                upsert: None,
            }],
            version: Some("ab12".into()),
        };
        let bytes = crate::checkpoint::format::encode(&m).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""next_offset":100"#), "{text}");
        // State kept by parts: format 3 (a format-2 reader would see none).
        assert!(text.contains(r#""format":3"#), "{text}");
        let back = crate::checkpoint::format::decode(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
