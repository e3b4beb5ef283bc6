//! VACUUM and log cleanup: removing what no version within the retention
//! needs.
//!
//! Delta's VACUUM keeps a replaced file while its `remove` is younger than
//! the retention, which needs every remove of the retention in every
//! checkpoint: at 200 ms epochs, millions over 7 days, in a checkpoint
//! rewritten every 100 commits (see
//! [`REMOVES_KEPT_FOR`](crate::delta::table::REMOVES_KEPT_FOR)). Strata's
//! VACUUM asks the versions instead. The versions within the retention are
//! the one a reader at the retention's edge sees ([`retention_edge`]) and
//! every newer one; a file one of them reads is either
//! - read by the edge version (added at or before it, removed after it), or
//! - added after the edge, so written after the edge, less the time a
//!   written file may wait for its commit, or
//! - read by the newest version.
//!
//! So VACUUM keeps the files of the newest version and of the edge version,
//! and every file written after the edge less that wait ([`removable`]),
//! whatever the log says about removes. It loads two versions and lists the
//! table, as Delta's does.
//!
//! The wait is the retention floor ([`MaintainOptions::min_retention`]: a
//! few checkpoint intervals), the time an epoch's files may take to reach
//! their commit and a compaction's rewritten file to reach its. A file
//! committed later than that after it was written (an epoch the process
//! crashed in, committed by the recovery after a longer outage) counts as
//! written when it was: a VACUUM that runs a retention after it can remove
//! it from versions within the retention that no longer read it (the
//! newest still does).
//!
//! Files the log never named, older than the edge and the wait, go too:
//! those are the files of epochs that crashed before their manifest (an
//! epoch's files are written before the manifest decides it). Staged
//! upserts of crashed epochs (`_strata_staging/`) go as well.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::{debug, info};

use crate::delta::proof::{active_files, every_file_present};
use crate::delta::table::{open_existing, open_version};
use crate::delta::upsert_writer::STAGING_DIR;
use crate::error::{EngineError, Result};
use crate::maintenance::removable::removable;
use crate::maintenance::{MaintainOptions, retention_edge};
use crate::storage::TableLocation;

/// How many files VACUUM removes at once.
const REMOVALS_AT_ONCE: usize = 32;

/// Removes the files of the table at `location` that no version within
/// `retention` needs (`options.dry_run`: lists them only); returns them.
pub async fn vacuum(
    location: &TableLocation,
    retention: Duration,
    options: MaintainOptions,
) -> Result<Vec<String>> {
    let url = location.url.to_string();
    if retention < options.min_retention {
        return Err(EngineError::Config(format!(
            "a VACUUM retention of {retention:?} could remove files of an epoch still being committed; use at least {:?} (a few checkpoint intervals). Nothing was removed",
            options.min_retention
        )));
    }
    let chrono = |d: Duration| {
        chrono::Duration::from_std(d)
            .map_err(|e| EngineError::Config(format!("retention {d:?}: {e}")))
    };
    let edge = chrono::Utc::now() - chrono(retention)?;
    let table = open_existing(location).await?;
    every_file_present(&table, &url).await?;
    let store = table.log_store().object_store(None);
    let newest = table.version().unwrap_or(0);
    let mut needed: HashSet<Path> = active_files(&table, &url)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let at_edge = retention_edge::version_at(store.as_ref(), &url, newest, edge).await?;
    if at_edge < newest {
        let old = open_version(location, at_edge).await.map_err(|e| {
            EngineError::Config(format!(
                "VACUUM cannot read version {at_edge} of {url}, the one a reader at the retention's edge ({edge}) sees, so it cannot tell which files that version needs; nothing was removed. {e}"
            ))
        })?;
        needed.extend(active_files(&old, &url)?.into_iter().map(|(path, _)| path));
    }
    let listed: Vec<_> =
        store
            .list(None)
            .try_collect()
            .await
            .map_err(EngineError::object_store(
                url.clone(),
                "listing the table's files",
            ))?;
    // Staged upserts a merge consumed are deleted by it; those left are of
    // epochs that crashed (the same listing: it covers the staging too).
    let staging = Path::from(STAGING_DIR);
    let stale: Vec<Path> = listed
        .iter()
        .filter(|o| o.location.prefix_matches(&staging) && o.last_modified < edge)
        .map(|o| o.location.clone())
        .collect();
    let mut doomed = removable(listed, &needed, edge - chrono(options.min_retention)?);
    doomed.extend(stale);
    if !options.dry_run {
        stream::iter(doomed.iter().cloned())
            .map(|path| {
                let (store, url) = (store.clone(), url.clone());
                async move {
                    match store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(EngineError::object_store(
                            format!("{url}{path}"),
                            "removing a file no version within the retention needs",
                        )(e)),
                    }
                }
            })
            .buffer_unordered(REMOVALS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
    }
    // Background passes find nothing to remove most of the time: only a
    // removal is worth a line at the default level.
    if doomed.is_empty() {
        debug!(table = %url, edge_version = at_edge, dry_run = options.dry_run, "vacuumed: nothing to remove");
    } else {
        info!(table = %url, files = doomed.len(), edge_version = at_edge, dry_run = options.dry_run, "vacuumed");
    }
    Ok(doomed.into_iter().map(|p| p.to_string()).collect())
}

/// Removes `_delta_log` entries older than `retention` that the newest
/// Delta checkpoint makes unnecessary; returns how many.
pub(crate) async fn clean_log(location: &TableLocation, retention: Duration) -> Result<usize> {
    let url = location.url.to_string();
    let table = open_existing(location).await?;
    let Some(version) = table.version() else {
        return Ok(0);
    };
    let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
    deltalake::protocol::checkpoints::cleanup_expired_logs_for(
        version,
        table.log_store().as_ref(),
        cutoff,
        None,
    )
    .await
    .map_err(EngineError::delta(&url, "cleaning up the log"))
}
