//! `strata serve FILE`, and the Flight SQL server `strata run` starts.

use std::path::Path;

use strata_flight_server::{
    Credentials, QueryLimits, RunningServer, ServeConfig, ServeError, TlsFiles,
};
use strata_layers::Warehouse;
use tracing::error;

use strata_engine::Shutdown;

use strata_dashboard::RunningDashboard;

use crate::commands::dashboard;
use crate::commands::load_warehouse;
use crate::commands::signals::stop_on_signals;
use crate::commands::{flight_metrics, metrics_endpoint};
use crate::failure::Failure;

/// The server settings of `warehouse`.
pub fn config(warehouse: &Warehouse) -> Result<ServeConfig, String> {
    // As `strata run` opens it: an S3 root needs the `s3` feature and takes
    // its settings from the file's options and the AWS_* environment.
    let storage = warehouse.storage.open().map_err(|e| e.to_string())?;
    Ok(ServeConfig {
        listen: warehouse.serve.listen,
        users: warehouse
            .serve
            .users
            .iter()
            .map(|u| Credentials {
                username: u.username.clone(),
                password: u.password.clone(),
            })
            .collect(),
        tls: warehouse.serve.tls.as_ref().map(|t| TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
        root: storage.url().clone(),
        storage_options: storage.options().clone(),
        limits: limits(&warehouse.serve.limits),
        handle_key: warehouse
            .serve
            .handle_key
            .as_ref()
            .map(|k| k.as_bytes().to_vec()),
        string_view: warehouse.serve.string_view,
    })
}

fn limits(l: &strata_layers::ServeLimits) -> QueryLimits {
    let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    QueryLimits {
        query_threads: l.query_threads,
        concurrent_queries: l.concurrent_queries,
        queued_queries: l.queued_queries,
        queue_timeout: l.queue_timeout,
        query_timeout: l.query_timeout,
        query_memory: bytes(l.query_memory),
        memory: bytes(l.memory),
        spill: l.spill,
        generated_rows: l.generated_rows,
        expression_depth: l.expression_depth,
        sql_bytes: bytes(l.sql_bytes),
        parameter_bytes: bytes(l.parameter_bytes),
        prepared_per_user: l.prepared_per_user,
        prepared_ttl: l.prepared_ttl,
    }
}

/// Starts the server for `warehouse`, stopping when `stop` resolves.
pub async fn start(
    warehouse: &Warehouse,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, String> {
    let config = config(warehouse)?;
    strata_flight_server::start(config, stop)
        .await
        .map_err(|e: ServeError| e.to_string())
}

/// Starts the server and, if the warehouse has one, the dashboard reading
/// through it; both stop with `shutdown`.
pub async fn start_with_dashboard(
    warehouse: &Warehouse,
    metrics: &strata_engine::Metrics,
    shutdown: &Shutdown,
) -> Result<(RunningServer, Option<RunningDashboard>), String> {
    let server = start(warehouse, shutdown.wait()).await?;
    let page = match dashboard::start(warehouse, server.local_addr, metrics, shutdown.wait()).await
    {
        Ok(page) => page,
        Err(e) => {
            // The Flight SQL server started: stop it with the run.
            shutdown.trigger();
            return Err(e);
        }
    };
    Ok((server, page))
}

pub async fn serve(file: &Path) -> Result<(), Failure> {
    let warehouse = load_warehouse(file)?;
    dashboard::check_access(&warehouse).map_err(Failure::config)?;
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone());
    let metrics = strata_engine::Metrics::new();
    flight_metrics::observe(&metrics);
    let (server, page) = start_with_dashboard(&warehouse, &metrics, &shutdown)
        .await
        .map_err(Failure::io)?;
    let endpoint = match metrics_endpoint::start(
        &warehouse,
        &metrics,
        Some(server.local_addr),
        shutdown.wait(),
    )
    .await
    {
        Ok(endpoint) => endpoint,
        Err(e) => {
            shutdown.trigger();
            return Err(Failure::io(e));
        }
    };
    let mut outcome = Ok(());
    if let Some(Err(e)) = futures::future::OptionFuture::from(endpoint.map(|p| p.wait())).await {
        error!(error = %e, "the metrics endpoint failed");
        outcome = Err(Failure::io(e));
    }
    if let Err(e) = server.wait().await {
        error!(error = %e, "the Flight SQL server failed");
        outcome = Err(Failure::io(format!("the Flight SQL server failed: {e}")));
    }
    if let Some(Err(e)) = futures::future::OptionFuture::from(page.map(|p| p.wait())).await {
        error!(error = %e, "the dashboard failed");
        outcome = Err(Failure::io(format!("the dashboard failed: {e}")));
    }
    outcome
}
