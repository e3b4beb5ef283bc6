//! The manifest as it is on disk: formats 2 and 3, spelled out in types this module
//! owns, so that no change to a runtime type (offsets, lookup counters,
//! deltalake's `Add`) can silently change what a running warehouse's
//! checkpoints say. Reading checks the format first: a manifest of a newer
//! format is refused with what to do, not half-understood.
//!
//! The fixtures under `engine/tests/fixtures/checkpoints/` are manifests
//! real runs wrote; every format this engine claims to read has some, and
//! the tests read each of them.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::Add;
use serde::{Deserialize, Serialize};

use crate::checkpoint::manifest::{
    LayerCheckpoint, Manifest, PartitionTime, PendingCommit, SourceCheckpoint, Upsert,
};
use crate::checkpoint::state_log::StateSlice;
use crate::evolution::LayerShape;
use crate::kafka::offsets::SourceOffsets;
use crate::lookup::LookupStats;

/// The newest format this engine writes and reads. Format 3 is format 2
/// with layer state kept by parts (`state_slices`: rows of earlier state
/// files, see `checkpoint::state_log`), which a Strata reading format 2
/// would take for no state at all; a manifest is written as format 3 only
/// when a layer's state is kept so, so warehouses without windowed layers
/// can still be run by a Strata of format 2.
pub const MANIFEST_FORMAT: u32 = 3;
/// The format of manifests without state slices.
const WHOLE_STATE_FORMAT: u32 = 2;
/// The oldest format it reads.
pub const OLDEST_READABLE: u32 = 2;

/// Just the format field, read before anything else.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// Why a manifest cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub enum FormatError {
    /// Not JSON of the expected shape.
    Unreadable(String),
    /// Written by a newer Strata.
    Newer(u32),
    /// Of a format this Strata no longer reads.
    Older(u32),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Unreadable(e) => f.write_str(e),
            FormatError::Newer(n) => write!(
                f,
                "it is of manifest format {n}, written by a newer Strata (this one reads formats {OLDEST_READABLE} to {MANIFEST_FORMAT}): run that version, or a newer one"
            ),
            FormatError::Older(n) => write!(
                f,
                "it is of manifest format {n}, which this Strata no longer reads (formats {OLDEST_READABLE} to {MANIFEST_FORMAT}): run the version that wrote it to its end, or backfill the layers from the log"
            ),
        }
    }
}

/// Reads a manifest's bytes: the format first, then the manifest.
pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
    let format = serde_json::from_slice::<FormatOnly>(bytes)
        .map_err(|e| FormatError::Unreadable(e.to_string()))?
        .format;
    if format > MANIFEST_FORMAT {
        return Err(FormatError::Newer(format));
    }
    if format < OLDEST_READABLE {
        return Err(FormatError::Older(format));
    }
    let on_disk: ManifestV2 =
        serde_json::from_slice(bytes).map_err(|e| FormatError::Unreadable(e.to_string()))?;
    Ok(on_disk.into())
}

/// A manifest's bytes, in the format this engine writes.
pub fn encode(manifest: &Manifest) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ManifestV2::from(manifest))
}

/// The format `manifest` is written in: the oldest that says all it says.
fn format_of(manifest: &Manifest) -> u32 {
    if manifest.layers.iter().any(|l| !l.state_slices.is_empty()) {
        MANIFEST_FORMAT
    } else {
        WHOLE_STATE_FORMAT
    }
}

/// Formats 2 and 3.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestV2 {
    format: u32,
    dataflow: String,
    epoch: u64,
    created_at_ms: i64,
    sources: Vec<SourceV2>,
    layers: Vec<LayerV2>,
    sinks: Vec<SinkV2>,
    /// Added within format 2: older manifests have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SourceV2 {
    id: String,
    offsets: Vec<PositionV2>,
    event_times: Vec<EventTimeV2>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PositionV2 {
    topic: String,
    partition: i32,
    next_offset: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventTimeV2 {
    topic: String,
    partition: i32,
    max_event_time: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerV2 {
    name: String,
    watermark: Option<i64>,
    state: Option<String>,
    /// Format 3: the rows of state files that hold the layer's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    state_slices: Vec<SliceV3>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    published: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    lookups: Vec<LookupV2>,
    /// Added within format 2: older manifests have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shape: Option<LayerShape>,
}

/// Rows `offset .. offset + rows` of a state file.
#[derive(Debug, Serialize, Deserialize)]
struct SliceV3 {
    file: String,
    offset: u64,
    rows: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LookupV2 {
    dimension: String,
    keys: u64,
    hits: u64,
    misses: u64,
    queries: u64,
    rows_fetched: u64,
    failures: u64,
    timeouts: u64,
    reloads: u64,
    hit_rate: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SinkV2 {
    table: String,
    app_id: String,
    adds: Vec<FileV2>,
    rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upsert: Option<UpsertV2>,
}

/// A Parquet file of the epoch, with what a Delta `add` action needs (the
/// names are Delta's own, as the log spells them).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileV2 {
    path: String,
    #[serde(default)]
    partition_values: BTreeMap<String, Option<String>>,
    size: i64,
    modification_time: i64,
    data_change: bool,
    #[serde(default)]
    stats: Option<String>,
    #[serde(default)]
    tags: Option<HashMap<String, Option<String>>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UpsertV2 {
    keys: Vec<String>,
    staging: Option<String>,
}

impl From<ManifestV2> for Manifest {
    fn from(m: ManifestV2) -> Self {
        Manifest {
            format: m.format,
            dataflow: m.dataflow,
            epoch: m.epoch,
            created_at_ms: m.created_at_ms,
            sources: m
                .sources
                .into_iter()
                .map(|s| {
                    let mut offsets = SourceOffsets::default();
                    for p in s.offsets {
                        offsets.set_at_least(&p.topic, p.partition, p.next_offset);
                    }
                    SourceCheckpoint {
                        id: s.id,
                        offsets,
                        event_times: s
                            .event_times
                            .into_iter()
                            .map(|t| PartitionTime {
                                topic: t.topic,
                                partition: t.partition,
                                max_event_time: t.max_event_time,
                            })
                            .collect(),
                    }
                })
                .collect(),
            layers: m
                .layers
                .into_iter()
                .map(|l| LayerCheckpoint {
                    name: l.name,
                    watermark: l.watermark,
                    state: l.state,
                    state_slices: l
                        .state_slices
                        .into_iter()
                        .map(|s| StateSlice {
                            file: s.file,
                            offset: s.offset,
                            rows: s.rows,
                        })
                        .collect(),
                    published: l.published,
                    lookups: l
                        .lookups
                        .into_iter()
                        .map(|s| LookupStats {
                            dimension: s.dimension,
                            keys: s.keys,
                            hits: s.hits,
                            misses: s.misses,
                            queries: s.queries,
                            rows_fetched: s.rows_fetched,
                            failures: s.failures,
                            timeouts: s.timeouts,
                            reloads: s.reloads,
                            hit_rate: s.hit_rate,
                        })
                        .collect(),
                    shape: l.shape,
                })
                .collect(),
            sinks: m
                .sinks
                .into_iter()
                .map(|s| PendingCommit {
                    table: s.table,
                    app_id: s.app_id,
                    adds: s
                        .adds
                        .into_iter()
                        .map(|f| Add {
                            path: f.path,
                            partition_values: f.partition_values.into_iter().collect(),
                            size: f.size,
                            modification_time: f.modification_time,
                            data_change: f.data_change,
                            stats: f.stats,
                            tags: f.tags,
                            ..Default::default()
                        })
                        .collect(),
                    rows: s.rows,
                    upsert: s.upsert.map(|u| Upsert {
                        keys: u.keys,
                        staging: u.staging,
                    }),
                })
                .collect(),
            version: m.version,
        }
    }
}

impl From<&Manifest> for ManifestV2 {
    fn from(m: &Manifest) -> Self {
        ManifestV2 {
            format: format_of(m),
            dataflow: m.dataflow.clone(),
            epoch: m.epoch,
            created_at_ms: m.created_at_ms,
            sources: m
                .sources
                .iter()
                .map(|s| SourceV2 {
                    id: s.id.clone(),
                    offsets: s
                        .offsets
                        .iter()
                        .map(|(tp, next)| PositionV2 {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            next_offset: next,
                        })
                        .collect(),
                    event_times: s
                        .event_times
                        .iter()
                        .map(|t| EventTimeV2 {
                            topic: t.topic.clone(),
                            partition: t.partition,
                            max_event_time: t.max_event_time,
                        })
                        .collect(),
                })
                .collect(),
            layers: m
                .layers
                .iter()
                .map(|l| LayerV2 {
                    name: l.name.clone(),
                    watermark: l.watermark,
                    state: l.state.clone(),
                    state_slices: l
                        .state_slices
                        .iter()
                        .map(|s| SliceV3 {
                            file: s.file.clone(),
                            offset: s.offset,
                            rows: s.rows,
                        })
                        .collect(),
                    published: l.published.clone(),
                    lookups: l
                        .lookups
                        .iter()
                        .map(|s| LookupV2 {
                            dimension: s.dimension.clone(),
                            keys: s.keys,
                            hits: s.hits,
                            misses: s.misses,
                            queries: s.queries,
                            rows_fetched: s.rows_fetched,
                            failures: s.failures,
                            timeouts: s.timeouts,
                            reloads: s.reloads,
                            hit_rate: s.hit_rate,
                        })
                        .collect(),
                    shape: l.shape.clone(),
                })
                .collect(),
            sinks: m
                .sinks
                .iter()
                .map(|s| SinkV2 {
                    table: s.table.clone(),
                    app_id: s.app_id.clone(),
                    adds: s
                        .adds
                        .iter()
                        .map(|a| FileV2 {
                            path: a.path.clone(),
                            partition_values: a
                                .partition_values
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                            size: a.size,
                            modification_time: a.modification_time,
                            data_change: a.data_change,
                            stats: a.stats.clone(),
                            tags: a.tags.clone(),
                        })
                        .collect(),
                    rows: s.rows,
                    upsert: s.upsert.as_ref().map(|u| UpsertV2 {
                        keys: u.keys.clone(),
                        staging: u.staging.clone(),
                    }),
                })
                .collect(),
            version: m.version.clone(),
        }
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
