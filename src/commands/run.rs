//! `strata run FILE`: every layer as a pipeline, and the Flight SQL server,
//! until a signal.

use std::path::Path;
use std::process::ExitCode;

use strata_engine::Shutdown;
use strata_engine::ods::run_ods;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::commands::load_warehouse;
use crate::commands::serve;
use crate::commands::signals::stop_on_signals;

pub async fn run(file: &Path, layers: &[String], bounded: bool, serve_tables: bool) -> ExitCode {
    let Some(warehouse) = load_warehouse(file) else {
        return ExitCode::FAILURE;
    };
    let plan = match strata_layers::plan(&warehouse, layers, bounded) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone());
    let server = if serve_tables {
        match serve::start(&warehouse, shutdown.wait()).await {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("error: {e} (or run with --no-serve)");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    info!(warehouse = %warehouse.name, layers = plan.ods.len(), storage = %warehouse.storage.root, "starting");
    let mut tasks = JoinSet::new();
    for spec in plan.ods {
        let layer = spec.layer.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { (layer, run_ods(spec, shutdown).await) });
    }
    let mut failed = false;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((layer, Ok(report))) => {
                info!(layer = %layer, records = report.records, rows = report.rows, dead_letters = report.dead_letters, "layer finished");
            }
            Ok((layer, Err(e))) => {
                error!(layer = %layer, error = %e, "layer failed; stopping the others");
                failed = true;
                shutdown.trigger();
            }
            Err(e) => {
                error!(error = %e, "a layer task panicked; stopping the others");
                failed = true;
                shutdown.trigger();
            }
        }
    }
    // Bounded runs end by themselves: the server goes with them.
    shutdown.trigger();
    if let Some(server) = server
        && let Err(e) = server.wait().await
    {
        error!(error = %e, "the Flight SQL server failed");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
