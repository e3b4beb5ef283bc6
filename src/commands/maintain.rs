//! `strata maintain FILE`: compacts each table's small files, cleans up its
//! log and, with `--vacuum`, removes files no version within the retention
//! needs (see `strata_engine::maintenance`). Safe while `strata run` runs:
//! compaction is then left to the run's background maintenance, as two
//! compactions of one table must not race (see
//! `MaintainOptions::compaction_elsewhere`); without a run, this command
//! holds the warehouse's lease while it compacts.

use std::time::Duration;

use strata_engine::lease::{self, KeptLease, LeaseStore};
use strata_engine::maintenance::{MaintainOptions, MaintenanceSpec, maintain, tables_of};
use strata_engine::sql::program::duration;
use strata_engine::{Metrics, Shutdown};

use crate::cli::MaintainArgs;
use crate::commands::{load_warehouse, plan_layers};
use crate::failure::{Failure, print};

pub async fn run(args: MaintainArgs) -> Result<(), Failure> {
    let w = load_warehouse(&args.file)?;
    let plan = plan_layers(&w, &args.layers, false)?;
    let tables = tables_of(&plan.dataflow).await?;
    // A dry run changes nothing: no lease needed.
    let (lease, compaction_elsewhere) = if args.dry_run {
        (None, false)
    } else {
        compactor(&plan.dataflow.storage).await?
    };
    let options = MaintainOptions {
        vacuum: args.vacuum,
        dry_run: args.dry_run,
        min_retention: strata_layers::min_vacuum_retention(longest_interval(&w)),
        keep_log: false,
        compaction_elsewhere,
    };
    let mut failed = None;
    for table in tables {
        if !exists(&table.location.url) {
            print(format!("{}: not created yet", table.name))?;
            continue;
        }
        let spec = w.maintenance_for(&table.layer);
        match maintain(&table.location, &spec, options).await {
            Ok(r) => {
                let mut line = format!(
                    "{}: {} -> {} files",
                    table.name, r.files_before, r.files_after
                );
                if r.compacted.0 > 0 {
                    line.push_str(&format!(
                        " (compacted {} into {})",
                        r.compacted.0, r.compacted.1
                    ));
                }
                if r.gave_way {
                    line.push_str(" (compaction gave way to a live commit)");
                }
                if r.log_entries_removed > 0 {
                    line.push_str(&format!(", {} log entries removed", r.log_entries_removed));
                }
                if args.vacuum {
                    let verb = if args.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    };
                    line.push_str(&format!(", vacuum {verb} {} file(s)", r.vacuumed.len()));
                    if args.dry_run {
                        for f in &r.vacuumed {
                            line.push_str(&format!("\n  {f}"));
                        }
                    }
                }
                print(line)?;
            }
            // The other tables are still maintained; the first failure is
            // the command's.
            Err(e) => {
                eprintln!("{}: error: {e}", table.name);
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(lease) = lease
        && let Err(e) = lease.release().await
    {
        failed.get_or_insert(e);
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Takes the warehouse's lease to compact, kept renewed while this command
/// runs; or, when a run holds it, says that compaction is left to it.
async fn compactor(
    root: &strata_engine::storage::StorageRoot,
) -> Result<(Option<KeptLease>, bool), Failure> {
    let store = LeaseStore::open(root, lease::DEFAULT_TTL)?;
    let me = lease::this_process(lease::DEFAULT_TTL);
    match store.try_acquire(&me).await? {
        Ok(held) => Ok((Some(held.keep(Shutdown::new(), Metrics::new())), false)),
        Err(holder) => {
            print(format!(
                "compaction left to the run that holds the warehouse ({holder}): it compacts in the background at each layer's maintenance.interval (with `interval: off`, stop it to compact here); logs and VACUUM are done here"
            ))?;
            Ok((None, true))
        }
    }
}

/// The longest checkpoint interval of the warehouse's layers: what the
/// shortest safe VACUUM retention is measured in.
fn longest_interval(w: &strata_layers::Warehouse) -> Duration {
    w.layers
        .iter()
        .filter_map(|l| l.checkpoint_interval)
        .fold(w.checkpoint.interval, Duration::max)
}

/// Whether a table has been created (has a `_delta_log`).
fn exists(url: &url::Url) -> bool {
    match url.to_file_path() {
        Ok(dir) => dir.join("_delta_log").is_dir(),
        // Remote tables: maintenance reports a missing one as an error.
        Err(()) => true,
    }
}

/// Starts background maintenance of the tables `dataflow` writes (see
/// `strata_engine::maintenance::run_background`), until `shutdown`.
pub fn spawn_background(
    w: &strata_layers::Warehouse,
    dataflow: &strata_engine::dataflow::DataflowSpec,
    shutdown: strata_engine::Shutdown,
) -> tokio::task::JoinHandle<()> {
    let dataflow = dataflow.clone();
    let w = w.clone();
    tokio::spawn(async move {
        let tables = match tables_of(&dataflow).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "no background maintenance: the tables could not be listed");
                return;
            }
        };
        let tables = tables
            .into_iter()
            .map(|t| {
                let spec = w.maintenance_for(&t.layer);
                (t, spec)
            })
            .collect();
        let min_retention = strata_layers::min_vacuum_retention(longest_interval(&w));
        strata_engine::maintenance::run_background(tables, min_retention, shutdown).await;
    })
}

/// How a layer's tables are maintained, for `strata validate`.
pub fn describe(spec: &MaintenanceSpec) -> String {
    let mib = |b: u64| b / (1024 * 1024);
    let every = |d: Option<Duration>| d.map(|d| duration(d.as_micros() as i64));
    format!(
        "maintenance: compact once {} files are under {} MiB, into {} MiB; vacuum keeps {} ({}); log keeps {}{}; in the background {}",
        spec.min_small_files,
        mib(spec.target_file_size / 2),
        mib(spec.target_file_size),
        duration(spec.vacuum_retention.as_micros() as i64),
        every(spec.vacuum_interval()).map_or(
            "only `strata maintain --vacuum` vacuums".to_string(),
            |e| format!("vacuumed every {e}")
        ),
        duration(spec.log_kept_for().as_micros() as i64),
        every(spec.log_cleanup_interval())
            .map_or(String::new(), |e| format!(" (cleaned every {e})")),
        every(spec.interval).map_or("never".to_string(), |e| format!("every {e}"))
    )
}
