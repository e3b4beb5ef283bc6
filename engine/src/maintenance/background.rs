//! Maintenance in the background of `strata run`: every table is looked at
//! at its layer's interval and compacted when a size tier is due (see
//! [`tiers`](crate::maintenance::tiers)), one table at a time (its own
//! small budget); its log is cleaned and it is vacuumed at the first pass
//! and then at a quarter of their retentions (see
//! [`cadence`](crate::maintenance::cadence): the cleanup lists the whole
//! `_delta_log`, VACUUM the whole table). A failure
//! is logged and tried again at the next interval; it never stops the
//! pipeline.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::maintenance::{MaintainOptions, MaintainedTable, MaintenanceSpec, maintain};
use crate::shutdown::Shutdown;

/// One table's cadences (from its spec, once) and next passes.
struct Due {
    table: MaintainedTable,
    spec: MaintenanceSpec,
    interval: Duration,
    log_cleanup_every: Duration,
    vacuum_every: Option<Duration>,
    next_pass: Instant,
    next_log_cleanup: Instant,
    next_vacuum: Option<Instant>,
}

/// Maintains `tables` until `shutdown`; tables whose spec has no interval
/// are left alone. `min_retention` is the shortest VACUUM retention that
/// cannot reach an epoch still being committed (see
/// [`MaintainOptions::min_retention`]).
pub async fn run_background(
    tables: Vec<(MaintainedTable, MaintenanceSpec)>,
    min_retention: Duration,
    shutdown: Shutdown,
) {
    let start = Instant::now();
    let mut due: Vec<Due> = tables
        .into_iter()
        .filter_map(|(table, spec)| {
            let interval = spec.interval?;
            let vacuum_every = spec.vacuum_interval();
            // The first pass after a start cleans the log and vacuums too:
            // a warehouse redeployed more often than once a cadence (daily,
            // for VACUUM) would otherwise never get either.
            Some(Due {
                next_pass: start + interval,
                next_log_cleanup: start + interval,
                next_vacuum: vacuum_every.map(|_| start + interval),
                log_cleanup_every: spec.log_cleanup_interval()?,
                vacuum_every,
                interval,
                table,
                spec,
            })
        })
        .collect();
    let stopped = shutdown.wait();
    tokio::pin!(stopped);
    loop {
        let Some(next) = due.iter().map(|d| d.next_pass).min() else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut stopped => return,
        }
        for d in &mut due {
            if d.next_pass > Instant::now() {
                continue;
            }
            if shutdown.is_triggered() {
                return;
            }
            let now = Instant::now();
            let keep_log = d.next_log_cleanup > now;
            if !keep_log {
                d.next_log_cleanup = now + d.log_cleanup_every;
            }
            let vacuum = d.next_vacuum.is_some_and(|at| at <= now);
            if vacuum {
                d.next_vacuum = d.vacuum_every.map(|every| now + every);
            }
            let options = MaintainOptions {
                keep_log,
                vacuum,
                min_retention,
                ..Default::default()
            };
            match maintain(&d.table.location, &d.spec, options).await {
                Ok(r) => {
                    debug!(table = %d.table.name, files = r.files_after, log_entries_removed = r.log_entries_removed, vacuumed = r.vacuumed.len(), "background maintenance")
                }
                // A table not created yet is not an error worth more.
                Err(e) => {
                    warn!(table = %d.table.name, error = %e, "background maintenance failed; trying again at the next interval")
                }
            }
            d.next_pass = Instant::now() + d.interval;
        }
    }
}
