//! `strata history FILE`: the versions of the warehouse file that ran, with
//! when each was deployed and the epochs it committed.
//!
//! A version's epochs run from the first epoch its run recorded to the one
//! before the next deployment's first epoch (the newest: to the newest
//! manifest). The retained manifests of that range each name the hash they
//! were written under; one naming another version is shown, since it means
//! the records and the checkpoints disagree.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use strata_engine::checkpoint::store::CheckpointStore;
use strata_engine::versions::{Deployment, VersionStore, hash_of, short_hash};

use crate::commands::load_warehouse;
use crate::failure::Failure;

/// One line of the history.
#[derive(Debug, Serialize)]
struct Entry {
    hash: String,
    deployed_at: String,
    deployed_at_ms: i64,
    source: String,
    /// The first and last epoch committed under it (none: it committed none).
    first_epoch: Option<u64>,
    last_epoch: Option<u64>,
    /// The retained manifests in that range.
    manifests_retained: usize,
    /// Retained manifests in the range that name another version (or none).
    manifests_naming_other_versions: Vec<u64>,
    /// Whether it is the file given on the command line.
    current: bool,
}

pub async fn history(file: &Path, json: bool) -> Result<(), Failure> {
    let warehouse = load_warehouse(file)?;
    let current = std::fs::read(file)
        .map(|bytes| hash_of(&bytes))
        .map_err(|e| Failure::io(format!("cannot read {}: {e}", file.display())))?;
    let storage = warehouse.storage.open()?;
    let deployments = VersionStore::open(&storage, &warehouse.name)?
        .list()
        .await?;
    let checkpoints = CheckpointStore::open(&storage, &warehouse.name)?;
    let mut manifests = Vec::new();
    for epoch in checkpoints.epochs().await? {
        let manifest = checkpoints.read(epoch).await?;
        manifests.push((epoch, manifest.version));
    }
    let newest = manifests.last().map(|(e, _)| *e);
    let entries = entries(&deployments, &manifests, newest, &current);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &entries)
            .map_err(|e| Failure::internal(format!("cannot print the history: {e}")))?;
        writeln!(out)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(
            out,
            "no version of `{}` recorded under {} yet (`strata run` records each)",
            warehouse.name, warehouse.storage.root
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<12}  {:<24}  {:<17}  {:>9}  source",
        "version", "deployed", "epochs", "manifests"
    )?;
    for e in &entries {
        let epochs = match (e.first_epoch, e.last_epoch) {
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => "none committed".to_string(),
        };
        let mark = if e.current { " (this file)" } else { "" };
        writeln!(
            out,
            "{:<12}  {:<24}  {:<17}  {:>9}  {}{mark}",
            short_hash(&e.hash),
            e.deployed_at,
            epochs,
            e.manifests_retained,
            e.source
        )?;
        if !e.manifests_naming_other_versions.is_empty() {
            writeln!(
                out,
                "              manifests of epochs {:?} name another version",
                e.manifests_naming_other_versions
            )?;
        }
    }
    Ok(())
}

/// Joins the deployments (oldest first) with the retained manifests
/// (epoch, version named; oldest first).
fn entries(
    deployments: &[Deployment],
    manifests: &[(u64, Option<String>)],
    newest: Option<u64>,
    current: &str,
) -> Vec<Entry> {
    deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let end = match deployments.get(i + 1) {
                Some(next) => next.first_epoch.checked_sub(1),
                None => newest,
            };
            let range = end
                .filter(|e| *e >= d.first_epoch)
                .map(|e| (d.first_epoch, e));
            let in_range: Vec<&(u64, Option<String>)> = manifests
                .iter()
                .filter(|(e, _)| range.is_some_and(|(a, b)| (a..=b).contains(e)))
                .collect();
            Entry {
                hash: d.hash.clone(),
                deployed_at: chrono::DateTime::from_timestamp_millis(d.deployed_at_ms)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default(),
                deployed_at_ms: d.deployed_at_ms,
                source: d.source.clone(),
                first_epoch: range.map(|(a, _)| a),
                last_epoch: range.map(|(_, b)| b),
                manifests_retained: in_range.len(),
                manifests_naming_other_versions: in_range
                    .iter()
                    .filter(|(_, v)| v.as_deref() != Some(d.hash.as_str()))
                    .map(|(e, _)| *e)
                    .collect(),
                current: d.hash == current,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployed(hash: &str, first_epoch: u64) -> Deployment {
        Deployment {
            hash: hash.into(),
            first_epoch,
            deployed_at_ms: 0,
            source: "w.yaml".into(),
            file: String::new(),
        }
    }

    #[test]
    fn each_version_runs_until_the_next_one_starts() {
        let deployments = [
            deployed("a", 1),
            deployed("a2", 4),
            deployed("b", 4),
            deployed("c", 6),
        ];
        let manifests: Vec<(u64, Option<String>)> = vec![
            (3, Some("a".into())),
            (4, Some("b".into())),
            (5, Some("x".into())),
            (6, Some("c".into())),
            (7, Some("c".into())),
        ];
        let e = entries(&deployments, &manifests, Some(7), "c");
        let ranges: Vec<_> = e.iter().map(|e| (e.first_epoch, e.last_epoch)).collect();
        // a2 ran and committed nothing before b was deployed.
        assert_eq!(
            ranges,
            vec![
                (Some(1), Some(3)),
                (None, None),
                (Some(4), Some(5)),
                (Some(6), Some(7))
            ]
        );
        assert_eq!(e[0].manifests_retained, 1);
        assert_eq!(e[2].manifests_naming_other_versions, vec![5]);
        assert!(e[3].current && !e[0].current);
    }
}
