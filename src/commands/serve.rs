//! `strata serve FILE`, and the Flight SQL server `strata run` starts.

use std::path::Path;

use strata_flight_server::{Credentials, RunningServer, ServeConfig, ServeError, TlsFiles};
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
    let mut root = warehouse.storage.root.clone();
    if !root.ends_with('/') {
        root.push('/');
    }
    let root = url::Url::parse(&root).map_err(|e| format!("storage root {root}: {e}"))?;
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
        root,
        storage_options: warehouse
            .storage
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
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
    shutdown: &Shutdown,
) -> Result<(RunningServer, Option<RunningDashboard>), String> {
    let server = start(warehouse, shutdown.wait()).await?;
    let page = dashboard::start(warehouse, server.local_addr, shutdown.wait()).await?;
    Ok((server, page))
}

pub async fn serve(file: &Path) -> Result<(), Failure> {
    let warehouse = load_warehouse(file)?;
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone());
    let metrics = strata_engine::Metrics::new();
    flight_metrics::observe(&metrics);
    let (server, page) = start_with_dashboard(&warehouse, &shutdown)
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
