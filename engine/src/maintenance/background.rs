//! Maintenance in the background of `strata run`: every table is looked at
//! at its layer's interval and compacted when a size tier is due (see
//! [`tiers`](crate::maintenance::tiers)), one table at a time (its own
//! small budget); its log is cleaned at most hourly (the cleanup lists the
//! whole `_delta_log`); never VACUUM (an operator's decision:
//! `strata maintain --vacuum`). A failure is logged and tried again at the
//! next interval; it never stops the pipeline.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::maintenance::{MaintainOptions, MaintainedTable, MaintenanceSpec, maintain};
use crate::shutdown::Shutdown;

/// How often a table's `_delta_log` is cleaned in the background.
const LOG_CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// Maintains `tables` until `shutdown`; tables whose spec has no interval
/// are left alone.
pub async fn run_background(tables: Vec<(MaintainedTable, MaintenanceSpec)>, shutdown: Shutdown) {
    let start = Instant::now();
    // (next pass, interval, next log cleanup, table, spec)
    let mut due: Vec<(Instant, Duration, Instant, MaintainedTable, MaintenanceSpec)> = tables
        .into_iter()
        .filter_map(|(t, spec)| spec.interval.map(|i| (start + i, i, start + i, t, spec)))
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
        for (at, interval, clean_at, table, spec) in &mut due {
            if *at > Instant::now() {
                continue;
            }
            if shutdown.is_triggered() {
                return;
            }
            let keep_log = *clean_at > Instant::now();
            if !keep_log {
                *clean_at = Instant::now() + LOG_CLEANUP_EVERY.max(*interval);
            }
            let options = MaintainOptions {
                keep_log,
                ..Default::default()
            };
            match maintain(&table.location, spec, options).await {
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
