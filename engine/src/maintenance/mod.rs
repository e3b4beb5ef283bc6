//! Table maintenance: what keeps a table cheap to write and read however
//! long the warehouse runs, off the epoch path.
//!
//! An epoch writes a few small files to each table it adds rows to; over
//! months those are millions of files, a `_delta_log` with as many entries,
//! and, for files replaced by upserts or left by crashed epochs, storage
//! that is never freed. Maintenance, per table:
//! - compaction ([`compact`]): small files rewritten into files of a target
//!   size, tier by tier ([`tiers`]: a compacted file is not rewritten by
//!   every pass), as Delta OPTIMIZE (`dataChange=false`, so readers and the
//!   epoch commits racing it see the same rows; a live commit that loses
//!   a race to it commits again on the newest version, and a compaction
//!   that loses to a live upsert gives way);
//! - log cleanup: `_delta_log` entries older than the log retention (and
//!   the VACUUM retention) and older than the newest Delta checkpoint are
//!   removed (epoch commits no longer do it: it lists the whole log);
//! - VACUUM ([`vacuum`]): files no version within the retention needs
//!   (replaced by compaction or upserts, written by epochs that crashed
//!   before their manifest, staged upserts of crashed epochs).
//!
//! `strata run` does all three in the background, log cleanup and VACUUM
//! at a quarter of their retentions ([`cadence`]), so a table's files and
//! log entries stop growing once its retentions have passed.
//!
//! One compactor per warehouse: the lease holder (`strata run`'s
//! background task, or `strata maintain` when no run holds the lease; see
//! [`MaintainOptions::compaction_elsewhere`]).
//!
//! Destructive steps prove their input first (every file the table names
//! exists, the retention cannot reach files of an epoch still being
//! committed) and refuse, changing nothing, when they cannot.

mod background;
pub mod cadence;
mod compact;
mod removable;
mod retention_edge;
mod tables;
pub mod tiers;
mod vacuum;

use std::time::Duration;

pub use background::run_background;
pub use cadence::VacuumEvery;
pub use compact::compact;
pub use tables::{MaintainedTable, tables_of};
pub use vacuum::vacuum;

use crate::error::Result;
use crate::storage::TableLocation;

/// How a table is maintained (`maintenance:` in the warehouse file, per
/// warehouse and per layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSpec {
    /// Size compaction writes files up to (default 128 MiB).
    pub target_file_size: u64,
    /// A table is compacted to a size tier once it has this many files
    /// smaller than half the tier (default 16; the tiers are the target,
    /// an eighth of it, ... down to 1 MiB: see [`tiers`]).
    pub min_small_files: usize,
    /// How long files no longer in the table are kept for readers of older
    /// versions and time travel, before VACUUM removes them (default 7 days).
    pub vacuum_retention: Duration,
    /// How long `_delta_log` entries are kept (default 30 days, Delta's;
    /// never less than `vacuum_retention`: see
    /// [`log_kept_for`](Self::log_kept_for)).
    pub log_retention: Duration,
    /// How often `strata run` looks at its tables in the background and
    /// compacts the size tiers that are due (default 1 minute: a table
    /// with nothing due costs a look at its newest state; `None`: never).
    /// Log cleanup and VACUUM, which list the whole `_delta_log` and the
    /// whole table, run less often (see [`cadence`]).
    pub interval: Option<Duration>,
    /// When the background vacuums (default: every quarter of the
    /// retention, at most daily).
    pub vacuum_every: VacuumEvery,
}

impl Default for MaintenanceSpec {
    fn default() -> Self {
        MaintenanceSpec {
            target_file_size: 128 * 1024 * 1024,
            min_small_files: 16,
            vacuum_retention: Duration::from_secs(7 * 24 * 3600),
            log_retention: Duration::from_secs(30 * 24 * 3600),
            interval: Some(Duration::from_secs(60)),
            vacuum_every: VacuumEvery::Auto,
        }
    }
}

/// What to do to a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintainOptions {
    /// Also VACUUM.
    pub vacuum: bool,
    /// Only say what would be done.
    pub dry_run: bool,
    /// Leave the `_delta_log` as it is (background passes between their
    /// log cleanups).
    pub keep_log: bool,
    /// The shortest retention VACUUM accepts: files younger than this may
    /// belong to an epoch still being committed (a few checkpoint
    /// intervals).
    pub min_retention: Duration,
    /// Leave compaction to another process (only count the files): the
    /// running `strata run`, whose background maintenance is the one
    /// compactor while it holds the warehouse's lease. Two compactions of
    /// one table must never race: delta-rs lets two `dataChange=false`
    /// removes of one file both commit, so each would add the rows of the
    /// files both replaced, and every such row would be read twice.
    pub compaction_elsewhere: bool,
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    /// Files in the table before.
    pub files_before: usize,
    /// Files in the table after.
    pub files_after: usize,
    /// Files compaction rewrote, and the files it wrote.
    pub compacted: (u64, u64),
    /// Whether compaction gave way to a live commit.
    pub gave_way: bool,
    /// `_delta_log` entries removed.
    pub log_entries_removed: usize,
    /// Files VACUUM removed (or would remove, in a dry run).
    pub vacuumed: Vec<String>,
}

/// Compacts, cleans the log and (if asked) vacuums the table at
/// `location`.
pub async fn maintain(
    location: &TableLocation,
    spec: &MaintenanceSpec,
    options: MaintainOptions,
) -> Result<TableReport> {
    let mut report = compact(
        location,
        spec,
        options.dry_run || options.compaction_elsewhere,
    )
    .await?;
    if !options.dry_run && !options.keep_log {
        report.log_entries_removed = vacuum::clean_log(location, spec.log_kept_for()).await?;
    }
    if options.vacuum {
        report.vacuumed = vacuum(location, spec.vacuum_retention, options).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod maintenance_tests;
