//! The dashboard of `dashboard:`, started beside the Flight SQL server and
//! reading through it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use strata_dashboard::{DashboardConfig, PanelConfig, PanelWaits, RunningDashboard};
use strata_engine::dataflow::layer_plan;
use strata_flight_server::ClientConfig;
use strata_layers::{Chart, Warehouse};
use tracing::debug;

use crate::commands::panel_waits::PipelineWaits;

/// Starts the warehouse's dashboard, if it has one, reading from the Flight
/// SQL server at `flight`; stops when `stop` resolves.
pub async fn start(
    warehouse: &Warehouse,
    flight: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<RunningDashboard>, String> {
    let Some(dashboard) = &warehouse.dashboard else {
        return Ok(None);
    };
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
        waits: waits(warehouse).await,
    };
    strata_dashboard::start(config, stop)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// What empty panels wait for, from the warehouse's layers (none if they
/// cannot be planned: `strata run` has said why already).
async fn waits(warehouse: &Warehouse) -> Option<Arc<dyn PanelWaits>> {
    let dashboard = warehouse.dashboard.as_ref()?;
    let plan = strata_layers::plan(warehouse, &[], false).ok()?;
    let layers = match layer_plan::check(&plan.dataflow).await {
        Ok(layers) => layers,
        Err(e) => {
            debug!(error = %e, "empty panels will not say what they wait for");
            return None;
        }
    };
    let sql: Vec<String> = dashboard.panels.iter().map(|p| p.sql.clone()).collect();
    Some(Arc::new(PipelineWaits::new(plan.dataflow, &sql, &layers)))
}
