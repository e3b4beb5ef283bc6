//! The `metrics:` HTTP endpoint of `strata run` and `strata serve`:
//! `/metrics` (Prometheus, OpenMetrics text), `/healthz` (the process
//! answers) and `/readyz` (every dataflow runs and moved lately, and the
//! Flight SQL server accepts connections), for Prometheus and for
//! Kubernetes probes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_engine::{Metrics, Readiness};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::info;

/// How long `/readyz` waits for the Flight SQL port to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

struct Endpoint {
    metrics: Metrics,
    stale_after: Option<Duration>,
    /// The Flight SQL server to check, when one runs.
    flight: Option<SocketAddr>,
}

/// A started endpoint.
pub struct RunningEndpoint {
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningEndpoint {
    /// Waits until it has stopped.
    pub async fn wait(self) -> Result<(), String> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the metrics endpoint failed: {e}")),
            Err(e) => Err(format!("the metrics endpoint failed: {e}")),
        }
    }
}

/// Starts the warehouse's metrics endpoint, if it has `metrics:`; stops
/// when `stop` resolves.
pub async fn start(
    warehouse: &strata_layers::Warehouse,
    metrics: &Metrics,
    flight: Option<SocketAddr>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<RunningEndpoint>, String> {
    let Some(config) = &warehouse.metrics else {
        return Ok(None);
    };
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        format!(
            "cannot listen on {} for metrics: {e}; set `metrics.listen` to a free port",
            config.listen
        )
    })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("metrics endpoint: {e}"))?;
    info!(url = %format!("http://{local_addr}/metrics"), "metrics endpoint listening");
    // A server listening on every interface is reached locally.
    let flight = flight.map(|a| {
        if a.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
        } else {
            a
        }
    });
    let state = Arc::new(Endpoint {
        metrics: metrics.clone(),
        stale_after: config.stale_after,
        flight,
    });
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    });
    Ok(Some(RunningEndpoint { task }))
}

async fn scrape(State(e): State<Arc<Endpoint>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(e): State<Arc<Endpoint>>) -> Response {
    if let Readiness::NotReady(why) = e.metrics.readiness(e.stale_after) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response();
    }
    if let Some(addr) = e.flight {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {}
            _ => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "not ready: the Flight SQL server at {addr} does not accept connections\n"
                    ),
                )
                    .into_response();
            }
        }
    }
    "ready\n".into_response()
}
