//! The epochs a run committed, read from its checkpoint manifests
//! (`_strata/checkpoints/<warehouse>/<epoch>.json`) while it runs: older
//! manifests are pruned, so they are read as they appear.
//!
//! A manifest is written once an epoch's barriers have crossed every layer,
//! and the next epoch starts at the checkpoint interval's next tick (at once
//! when the epoch outlasted it), so the time between two consecutive
//! manifests is the interval while epochs keep up, and an epoch's duration
//! when they do not: what a backlog does to epochs shows there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::stats::Samples;

/// The manifests seen so far.
pub struct ManifestTimes {
    dir: PathBuf,
    /// Epoch -> created_at_ms.
    created: BTreeMap<u64, i64>,
}

impl ManifestTimes {
    /// The manifests of warehouse `name` under the storage root `root`.
    pub fn new(root: &Path, name: &str) -> Self {
        ManifestTimes {
            dir: root.join("_strata/checkpoints").join(name),
            created: BTreeMap::new(),
        }
    }

    /// Reads manifests not seen yet (one pruned while being read is skipped).
    pub fn refresh(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(epoch) = name
                .strip_suffix(".json")
                .and_then(|e| e.parse::<u64>().ok())
            else {
                continue;
            };
            if self.created.contains_key(&epoch) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let created = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("created_at_ms").and_then(|c| c.as_i64()));
            if let Some(created) = created {
                self.created.insert(epoch, created);
            }
        }
    }

    /// Epochs seen.
    pub fn epochs(&self) -> usize {
        self.created.len()
    }

    /// The newest epoch seen.
    pub fn newest(&self) -> Option<u64> {
        self.created.keys().next_back().copied()
    }

    /// Milliseconds between each manifest and the one of the next epoch.
    pub fn gaps_ms(&self) -> Samples {
        self.gaps_ms_after(None)
    }

    /// [`gaps_ms`](Self::gaps_ms) of the epochs after `epoch` (all with
    /// `None`): the gaps that ended after it.
    pub fn gaps_ms_after(&self, epoch: Option<u64>) -> Samples {
        let from = self.created.range(epoch.unwrap_or(0)..);
        let gaps = from
            .clone()
            .zip(from.skip(1))
            .filter(|((a, _), (b, _))| **b == **a + 1)
            .map(|((_, t0), (_, t1))| t1 - t0)
            .collect();
        Samples::new(gaps)
    }
}

/// The newest manifest of warehouse `name` under `root`, and its epoch.
fn newest_manifest(root: &Path, name: &str) -> Option<(u64, serde_json::Value)> {
    let dir = root.join("_strata/checkpoints").join(name);
    // Manifests are named by their zero-padded epoch.
    let (epoch, newest) = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let epoch = name.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((epoch, e.path()))
        })
        .max()?;
    let text = std::fs::read_to_string(newest).ok()?;
    Some((epoch, serde_json::from_str(&text).ok()?))
}

/// The watermark (microseconds) of `layer` at the newest checkpoint of
/// warehouse `name` under `root`: how far the live pipeline has closed it,
/// the default `--to` of a backfill. `None` before a checkpoint names one.
pub fn layer_watermark(root: &Path, name: &str, layer: &str) -> Option<i64> {
    let (_, manifest) = newest_manifest(root, name)?;
    manifest
        .get("layers")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(|n| n.as_str()) == Some(layer))?
        .get("watermark")?
        .as_i64()
}

/// The newest checkpoint's epoch and the state files it names (relative
/// to the checkpoint directory): each layer's whole state file, or the
/// files its state slices are in (the earlier checkpoints' files that hold
/// parts still held).
pub fn named_state_files(root: &Path, name: &str) -> Option<(u64, Vec<String>)> {
    let (epoch, manifest) = newest_manifest(root, name)?;
    let mut files = Vec::new();
    for layer in manifest.get("layers")?.as_array()? {
        files.extend(
            layer
                .get("state")
                .and_then(|s| s.as_str())
                .map(String::from),
        );
        let slices = layer.get("state_slices").and_then(|s| s.as_array());
        for slice in slices.into_iter().flatten() {
            files.extend(slice.get("file").and_then(|f| f.as_str()).map(String::from));
        }
    }
    files.sort();
    files.dedup();
    Some((epoch, files))
}
