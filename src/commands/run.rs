//! `strata run FILE`: every layer as a pipeline, and the Flight SQL server,
//! until a signal.

use std::path::Path;

use strata_engine::EngineError;
use strata_engine::backfill::{ResetRequest, reset_state};
use strata_engine::dataflow::replay::ReplayProgress;
use strata_engine::dataflow::run_dataflow_observed;
use strata_engine::evolution::redeploy::{inspect, refusal};
use strata_engine::fence::Fence;
use strata_engine::lease::{self, KeptLease, LeaseStore, WhenHeld};
use strata_engine::storage::StorageRoot;
use strata_engine::versions::WarehouseVersion;
use strata_engine::{Metrics, Shutdown};
use tracing::{error, info};

use crate::commands::signals::stop_on_signals;
use crate::commands::time_arg::parse_time;
use crate::commands::validate::check_queries;
use crate::commands::{dashboard, maintain};
use crate::commands::{flight_metrics, metrics_endpoint, serve};
use crate::commands::{load_warehouse, plan_layers};
use crate::failure::Failure;

/// `--reset-state LAYER --from TIME`.
pub struct StateReset {
    pub layer: String,
    pub from: String,
}

/// How long a stopping run waits for the background maintenance pass in
/// progress.
const MAINTENANCE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(
    file: &Path,
    layers: &[String],
    bounded: bool,
    serve_tables: bool,
    when_held: WhenHeld,
    reset: Option<StateReset>,
) -> Result<(), Failure> {
    // First: a signal while the layers are being planned stops them cleanly.
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone());
    let warehouse = load_warehouse(file)?;
    if serve_tables {
        dashboard::check_access(&warehouse).map_err(Failure::config)?;
    }
    let mut plan = plan_layers(&warehouse, layers, bounded)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::io(format!("cannot read {}: {e}", file.display())))?;
    plan.dataflow.version = Some(WarehouseVersion::of(text, &file.display().to_string()));
    check_queries(&warehouse, &plan.dataflow).await?;
    let reset_from = match &reset {
        Some(r) => Some(parse_time(&r.from).map_err(Failure::config)?),
        None => None,
    };
    let resetting: Vec<String> = reset.iter().map(|r| r.layer.clone()).collect();
    // Before anything is written (the lease, a version record, a table): a
    // layer that cannot take its state refuses the whole run.
    let inspection = inspect(&plan.dataflow, &file.display().to_string(), &resetting).await?;
    let refused = inspection.incompatible();
    if !refused.is_empty() {
        let reasons: Vec<String> = refused.iter().map(|e| refusal(e)).collect();
        // The file asks for what the stored tables and state cannot take: a
        // configuration error (exit 2), as a refused schema change is.
        return Err(Failure::config(format!(
            "warehouse {}: this file cannot be deployed over what the storage root holds; nothing was changed (`strata plan {}` shows every layer).\n{}",
            warehouse.name,
            file.display(),
            reasons.join("\n")
        )));
    }
    let metrics = Metrics::new();
    let (lease, fence) = take_lease(&plan.dataflow.storage, when_held, &shutdown, &metrics).await?;
    if let (Some(r), Some(from_us)) = (&reset, reset_from) {
        let request = ResetRequest {
            layer: r.layer.clone(),
            from_us,
            progress: ReplayProgress::new(),
        };
        match reset_state(plan.dataflow.clone(), request, shutdown.clone()).await {
            Ok(Some(report)) => {
                info!(layer = %r.layer, replayed = report.replayed, rows = report.rows, epoch = report.epoch, "state reset done")
            }
            Ok(None) => {
                let _ = lease.release().await;
                return Err(Failure::from(EngineError::Pipeline {
                    pipeline: warehouse.name.clone(),
                    reason:
                        "stopped before the state reset finished: nothing was changed; run it again"
                            .into(),
                }));
            }
            Err(e) => {
                let _ = lease.release().await;
                return Err(e.into());
            }
        }
    }
    flight_metrics::observe(&metrics);
    let (server, page) = if serve_tables {
        let (server, page) = serve::start_with_dashboard(&warehouse, &metrics, &shutdown)
            .await
            .map_err(|e| Failure::io(format!("{e} (or run with --no-serve)")))?;
        (Some(server), page)
    } else {
        (None, None)
    };
    let flight = server.as_ref().map(|s| s.local_addr);
    let endpoint =
        match metrics_endpoint::start(&warehouse, &metrics, flight, shutdown.wait()).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                shutdown.trigger();
                return Err(Failure::io(e));
            }
        };
    info!(warehouse = %warehouse.name, layers = plan.dataflow.layers.len(), sources = plan.dataflow.sources.len(), storage = %warehouse.storage.root, "starting");
    // The layers' error is the one that decides the exit code; the
    // servers' are logged (they stop because the layers did).
    let mut maintenance = maintain::spawn_background(&warehouse, &plan.dataflow, shutdown.clone());
    let outcome = run_dataflow_observed(plan.dataflow, shutdown.clone(), metrics, fence).await;
    if let Ok(report) = &outcome {
        info!(epochs = report.epochs, rows = report.rows, "layers stopped");
    }
    // Bounded runs end by themselves: the server goes with them.
    shutdown.trigger();
    // The maintenance pass in progress finishes its table (the loop stops
    // between tables): a Delta scan still running when the runtime ends
    // panics in its thread. One that takes longer is cut short, which
    // commits nothing (its files go at the next VACUUM).
    if tokio::time::timeout(MAINTENANCE_GRACE, &mut maintenance)
        .await
        .is_err()
    {
        maintenance.abort();
        let _ = maintenance.await;
    }
    let released = lease.release().await;
    let mut served = Ok(());
    if let Some(server) = server
        && let Err(e) = server.wait().await
    {
        error!(error = %e, "the Flight SQL server failed");
        served = Err(Failure::io(format!("the Flight SQL server failed: {e}")));
    }
    if let Some(page) = page
        && let Err(e) = page.wait().await
    {
        error!(error = %e, "the dashboard failed");
        served = Err(Failure::io(format!("the dashboard failed: {e}")));
    }
    if let Some(endpoint) = endpoint
        && let Err(e) = endpoint.wait().await
    {
        error!(error = %e, "the metrics endpoint failed");
        served = Err(Failure::io(e));
    }
    outcome?;
    released?;
    served
}

/// One writer per warehouse: takes its lease (waiting for another run to
/// stop, unless `--no-wait`) and keeps it renewed while this run lives;
/// the fence the pipelines check before each commit.
async fn take_lease(
    root: &StorageRoot,
    when_held: WhenHeld,
    shutdown: &Shutdown,
    metrics: &Metrics,
) -> Result<(KeptLease, Fence), Failure> {
    let store = LeaseStore::open(root, lease::DEFAULT_TTL)?;
    let me = lease::this_process(lease::DEFAULT_TTL);
    let lease = store.acquire(&me, when_held, shutdown).await?;
    let fence = lease.fence();
    Ok((lease.keep(shutdown.clone(), metrics.clone()), fence))
}
