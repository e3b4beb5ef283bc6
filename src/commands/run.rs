//! `strata run FILE`: every layer as a pipeline, and the Flight SQL server,
//! until a signal.

use std::path::Path;
use std::process::ExitCode;

use strata_engine::Shutdown;
use strata_engine::dataflow::run_dataflow;
use tracing::{error, info};

use crate::commands::load_warehouse;
use crate::commands::serve;
use crate::commands::signals::stop_on_signals;
use crate::commands::validate::check_queries;

pub async fn run(file: &Path, layers: &[String], bounded: bool, serve_tables: bool) -> ExitCode {
    // First: a signal while the layers are being planned stops them cleanly.
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone());
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
    if check_queries(&warehouse, &plan.dataflow).await.is_none() {
        return ExitCode::FAILURE;
    }
    let (server, page) = if serve_tables {
        match serve::start_with_dashboard(&warehouse, &shutdown).await {
            Ok((server, page)) => (Some(server), page),
            Err(e) => {
                eprintln!("error: {e} (or run with --no-serve)");
                return ExitCode::FAILURE;
            }
        }
    } else {
        (None, None)
    };
    info!(warehouse = %warehouse.name, layers = plan.dataflow.layers.len(), sources = plan.dataflow.sources.len(), storage = %warehouse.storage.root, "starting");
    let mut failed = false;
    match run_dataflow(plan.dataflow, shutdown.clone()).await {
        Ok(report) => info!(epochs = report.epochs, rows = report.rows, "layers stopped"),
        Err(e) => {
            error!(error = %e, "the layers failed");
            failed = true;
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
    if let Some(page) = page
        && let Err(e) = page.wait().await
    {
        error!(error = %e, "the dashboard failed");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
