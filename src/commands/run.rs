//! `strata run FILE`: every layer as a pipeline, until a signal.

use std::path::Path;
use std::process::ExitCode;

use strata_engine::Shutdown;
use strata_engine::ods::run_ods;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub async fn run(file: &Path, layers: &[String], bounded: bool) -> ExitCode {
    let warehouse = match strata_layers::load(file) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = match strata_layers::plan(&warehouse, layers, bounded) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    tokio::spawn(stop_on_signals(shutdown.clone()));
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
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The first SIGINT or SIGTERM stops cleanly (each layer commits its last
/// epoch); a second one exits at once, which is as safe as a crash.
async fn stop_on_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        warn!("cannot listen for signals; stop with SIGKILL (no data is lost)");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    info!("stopping: committing the last epoch of every layer (signal again to exit at once)");
    shutdown.trigger();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    warn!("second signal: exiting now; the next start recovers from the last checkpoint");
    std::process::exit(130);
}
