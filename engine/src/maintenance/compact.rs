//! Compaction: a table's small files rewritten into files of a target size,
//! as Delta OPTIMIZE does (bin-packing per partition, `dataChange=false`).
//!
//! Its commit only rearranges rows, so delta-rs checks it against the
//! commits that won the race at snapshot isolation: epochs' appends do not
//! conflict with it (it commits after them), and an upsert that rewrote a
//! file it read makes it fail, which it takes as giving way: the files
//! will be compacted next time. A live epoch commit that loses the race to
//! it makes its commit again on the newest version
//! (`crate::delta::commit_race`), so compaction never fails an epoch.

use std::num::NonZeroU64;

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use tracing::info;

use crate::delta::proof::{active_files, every_file_present};
use crate::delta::table::open_existing;
use crate::error::{EngineError, Result};
use crate::maintenance::{MaintenanceSpec, TableReport, tiers};
use crate::storage::TableLocation;

/// Compacts the table at `location`, tier by tier (see
/// [`tiers`](crate::maintenance::tiers)), to each tier that has enough
/// small files (`dry_run`: only counts the table's files).
pub async fn compact(
    location: &TableLocation,
    spec: &MaintenanceSpec,
    dry_run: bool,
) -> Result<TableReport> {
    let url = location.url.to_string();
    let mut table = open_existing(location).await?;
    let mut files = active_files(&table, &url)?;
    let mut report = TableReport {
        files_before: files.len(),
        files_after: files.len(),
        ..Default::default()
    };
    if dry_run {
        return Ok(report);
    }
    let target = spec.target_file_size.max(tiers::MIN_TIER);
    let mut proven = false;
    for tier in tiers::tiers(target) {
        let sizes = files
            .iter()
            .map(|(_, size)| u64::try_from(*size).unwrap_or(0));
        if !tiers::due(sizes, tier, spec.min_small_files) {
            continue;
        }
        if !proven {
            every_file_present(&table, &url).await?;
            proven = true;
        }
        let tier_size = NonZeroU64::new(tier).unwrap_or(NonZeroU64::MIN);
        // No log cleanup inside the commit: maintenance does it as its own step.
        let properties = CommitProperties::default().with_cleanup_expired_logs(Some(false));
        match table
            .optimize()
            .with_target_size(tier_size)
            .with_commit_properties(properties)
            .await
        {
            Ok((compacted, metrics)) => {
                table = compacted;
                files = active_files(&table, &url)?;
                report.compacted.0 += metrics.num_files_removed;
                report.compacted.1 += metrics.num_files_added;
                report.files_after = files.len();
                info!(table = %url, tier_mib = tier / (1024 * 1024), removed = metrics.num_files_removed,
                      added = metrics.num_files_added, files = report.files_after, "compacted");
            }
            Err(e) if gave_way(&e) => {
                info!(table = %url, reason = %e, "compaction gave way to a live commit; the files are compacted next time");
                report.gave_way = true;
                break;
            }
            Err(e) => return Err(EngineError::delta(&url, "compacting")(e)),
        }
    }
    Ok(report)
}

/// Whether compaction failed because a live commit changed what it read.
fn gave_way(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
                | TransactionError::VersionAlreadyExists(_)
        } | DeltaTableError::VersionAlreadyExists(_)
    )
}
