//! VACUUM and log cleanup: removing what no version within the retention
//! needs.
//!
//! VACUUM runs in Delta's full mode: besides files replaced by compaction
//! and upserts (the log's `remove` actions), it removes files the log never
//! named, older than the retention: those are the files of epochs that
//! crashed before their manifest (an epoch's files are written before the
//! manifest decides it). Staged upserts of crashed epochs
//! (`_strata_staging/`, which Delta's VACUUM skips as hidden) go too.
//!
//! The retention is floored (see [`MaintainOptions::min_retention`]): a
//! file younger than a few checkpoint intervals may belong to an epoch
//! whose manifest is written but whose table commit is still to come, and
//! recovery would need it.

use std::time::Duration;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::vacuum::VacuumMode;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::info;

use crate::delta::proof::every_file_present;
use crate::delta::table::open_existing;
use crate::delta::upsert_writer::STAGING_DIR;
use crate::error::{EngineError, Result};
use crate::maintenance::MaintainOptions;
use crate::storage::TableLocation;

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
    let table = open_existing(location).await?;
    every_file_present(&table, &url).await?;
    let chrono_retention = chrono::Duration::from_std(retention)
        .map_err(|e| EngineError::Config(format!("retention {retention:?}: {e}")))?;
    let store = table.log_store().object_store(None);
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(chrono_retention)
        // The floor above is Strata's rule; the table's own property
        // (7 days by default) would refuse shorter retentions.
        .with_enforce_retention_duration(false)
        .with_dry_run(options.dry_run)
        .with_commit_properties(CommitProperties::default().with_cleanup_expired_logs(Some(false)))
        .await
        .map_err(EngineError::delta(&url, "vacuuming"))?;
    let mut removed = metrics.files_deleted;
    // Staged upserts a merge consumed are deleted by it; those left are of
    // epochs that crashed.
    let cutoff = chrono::Utc::now() - chrono_retention;
    let staging = Path::from(STAGING_DIR);
    let stale: Vec<Path> = store
        .list(Some(&staging))
        .try_filter(|o| std::future::ready(o.last_modified < cutoff))
        .map_ok(|o| o.location)
        .try_collect()
        .await
        .map_err(EngineError::object_store(
            format!("{url}{STAGING_DIR}"),
            "listing staged upserts",
        ))?;
    for path in stale {
        if !options.dry_run {
            store
                .delete(&path)
                .await
                .map_err(EngineError::object_store(
                    format!("{url}{path}"),
                    "removing a staged upsert of a crashed epoch",
                ))?;
        }
        removed.push(path.to_string());
    }
    info!(table = %url, files = removed.len(), dry_run = options.dry_run, "vacuumed");
    Ok(removed)
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
