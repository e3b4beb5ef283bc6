//! The dashboard of `dashboard:`, started beside the Flight SQL server and
//! reading through it, with the console (the warehouse's graph and its
//! numbers from the process's metrics) on the same server, behind the
//! same logins as Flight SQL (`serve.users`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use strata_dashboard::{DashboardConfig, PanelConfig, PanelWaits, RunningDashboard};
use strata_engine::Metrics;
use strata_engine::dataflow::layer_plan;
use strata_engine::dataflow::spec::DataflowSpec;
use strata_flight_server::ClientConfig;
use strata_layers::{Chart, Warehouse};
use tracing::debug;

use crate::commands::console_view::WarehouseConsole;
use crate::commands::panel_waits::PipelineWaits;

/// Refuses a dashboard other machines could reach without a login (the
/// rule Flight SQL follows), before anything starts.
pub fn check_access(warehouse: &Warehouse) -> Result<(), String> {
    match &warehouse.dashboard {
        Some(d) if warehouse.serve.users.is_empty() && !d.listen.ip().is_loopback() => {
            Err(format!(
                "`dashboard.listen: {}` would serve the warehouse's tables and pipeline to the network without a login: add users to `serve.users` (the dashboard and console ask for the same logins as Flight SQL), or listen on a loopback address such as 127.0.0.1:{}",
                d.listen,
                d.listen.port()
            ))
        }
        _ => Ok(()),
    }
}

/// Starts the warehouse's dashboard, if it has one, reading from the Flight
/// SQL server at `flight`, and its console showing `metrics`; stops when
/// `stop` resolves.
pub async fn start(
    warehouse: &Warehouse,
    flight: SocketAddr,
    metrics: &Metrics,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<RunningDashboard>, String> {
    let Some(dashboard) = &warehouse.dashboard else {
        return Ok(None);
    };
    let plan = strata_layers::plan(warehouse, &[], false)
        .ok()
        .map(|p| p.dataflow);
    // The server listens on every interface or on one; reach it locally.
    let host = if flight.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        flight.ip()
    };
    let tls = warehouse.serve.tls.as_ref();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = DashboardConfig {
        listen: dashboard.listen,
        title: dashboard.title.clone(),
        refresh: dashboard.refresh,
        panels: dashboard
            .panels
            .iter()
            .map(|p| PanelConfig {
                title: p.title.clone(),
                chart: match p.chart {
                    Chart::Bar => "bar",
                    Chart::Line => "line",
                    Chart::Table => "table",
                }
                .into(),
                label: p.label.clone(),
                value: p.value.clone(),
                sql: p.sql.clone(),
            })
            .collect(),
        flight: ClientConfig {
            endpoint: format!("{scheme}://{}", SocketAddr::new(host, flight.port())),
            credentials: warehouse
                .serve
                .users
                .first()
                .map(|u| (u.username.clone(), u.password.clone())),
            // A self-signed server certificate is its own CA.
            ca: tls.map(|t| t.cert.clone()),
        },
        waits: waits(warehouse, plan.as_ref()).await,
        console: Some(Arc::new(WarehouseConsole::new(
            warehouse,
            plan.as_ref(),
            metrics.clone(),
        ))),
        users: warehouse
            .serve
            .users
            .iter()
            .map(|u| (u.username.clone(), u.password.clone()))
            .collect(),
    };
    strata_dashboard::start(config, stop)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// What empty panels wait for, from the warehouse's layers (none if they
/// cannot be planned: `strata run` has said why already).
async fn waits(warehouse: &Warehouse, plan: Option<&DataflowSpec>) -> Option<Arc<dyn PanelWaits>> {
    let dashboard = warehouse.dashboard.as_ref()?;
    let plan = plan?;
    let layers = match layer_plan::check(plan).await {
        Ok(layers) => layers,
        Err(e) => {
            debug!(error = %e, "empty panels will not say what they wait for");
            return None;
        }
    };
    let sql: Vec<String> = dashboard.panels.iter().map(|p| p.sql.clone()).collect();
    Some(Arc::new(PipelineWaits::new(plan.clone(), &sql, &layers)))
}
