//! Maintenance in the background of `strata run`: compaction and log
//! cleanup of every table at its layer's interval, one table at a time (its
//! own small budget), never VACUUM (an operator's decision:
//! `strata maintain --vacuum`). A failure is logged and tried again at the
//! next interval; it never stops the pipeline.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::maintenance::{MaintainOptions, MaintainedTable, MaintenanceSpec, maintain};
use crate::shutdown::Shutdown;

/// Maintains `tables` until `shutdown`; tables whose spec has no interval
/// are left alone.
pub async fn run_background(tables: Vec<(MaintainedTable, MaintenanceSpec)>, shutdown: Shutdown) {
    let start = Instant::now();
    let mut due: Vec<(Instant, Duration, MaintainedTable, MaintenanceSpec)> = tables
        .into_iter()
        .filter_map(|(t, spec)| spec.interval.map(|i| (start + i, i, t, spec)))
        .collect();
    let stopped = shutdown.wait();
    tokio::pin!(stopped);
    loop {
        let Some(next) = due.iter().map(|d| d.0).min() else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut stopped => return,
        }
        for (at, interval, table, spec) in &mut due {
            if *at > Instant::now() {
                continue;
            }
            if shutdown.is_triggered() {
                return;
            }
            match maintain(&table.location, spec, MaintainOptions::default()).await {
                Ok(r) => {
                    debug!(table = %table.name, files = r.files_after, log_entries_removed = r.log_entries_removed, "background maintenance")
                }
                // A table not created yet is not an error worth more.
                Err(e) => {
                    warn!(table = %table.name, error = %e, "background maintenance failed; trying again at the next interval")
                }
            }
            *at = Instant::now() + *interval;
        }
    }
}
