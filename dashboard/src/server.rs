//! The HTTP server: the page, its config, and the panels' rows.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use strata_flight_server::{ClientConfig, run_query};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::access::{Access, require_login};
use crate::console::{self, ConsoleSource};
use crate::panel_json::batches_to_rows;

const PAGE: &str = include_str!("page.html");

/// One chart: its query and how to draw it.
#[derive(Debug, Clone)]
pub struct PanelConfig {
    /// Heading.
    pub title: String,
    /// `bar`, `line` or `table`.
    pub chart: String,
    /// Column labelling each bar or point.
    pub label: String,
    /// Numeric column drawn.
    pub value: String,
    /// The query.
    pub sql: String,
}

/// What an empty panel waits for: asked when a panel's query has no rows,
/// or its table does not exist yet, so the page can say "the window closes
/// at 10:42" rather than show a blank chart. The dashboard knows only SQL;
/// whoever starts it knows the pipeline.
pub trait PanelWaits: Send + Sync + std::fmt::Debug {
    /// A sentence for panel `panel` (by index), if there is one to say.
    fn waiting_for(&self, panel: usize) -> BoxFuture<'_, Option<String>>;
}

/// What the dashboard serves, and where it reads.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Address of the HTTP server.
    pub listen: SocketAddr,
    /// Page heading.
    pub title: String,
    /// How often the page refreshes.
    pub refresh: Duration,
    /// The charts.
    pub panels: Vec<PanelConfig>,
    /// The Flight SQL endpoint the queries go to.
    pub flight: ClientConfig,
    /// What empty panels wait for (`None`: "no rows yet").
    pub waits: Option<Arc<dyn PanelWaits>>,
    /// The console's numbers (`None`: no console).
    pub console: Option<Arc<dyn ConsoleSource>>,
    /// Users (name, password) who may log in; none: loopback only.
    pub users: Vec<(String, String)>,
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address is taken or not ours.
    #[error(
        "cannot listen on {addr} for the dashboard: {source}; set `dashboard.listen` to a free port"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// No users, and an address other machines can reach.
    #[error(
        "the dashboard would serve the warehouse's tables to the network on {addr} without a login: add users to `serve.users` (the dashboard asks for the same logins as Flight SQL), or set `dashboard.listen` to a loopback address such as 127.0.0.1:{}",
        addr.port()
    )]
    Exposed {
        /// The address.
        addr: SocketAddr,
    },
    /// The server stopped with an error.
    #[error("the dashboard server failed: {0}")]
    Serve(String),
}

/// A started dashboard.
pub struct RunningDashboard {
    /// Where it listens.
    pub local_addr: SocketAddr,
    task: JoinHandle<Result<(), DashboardError>>,
}

impl RunningDashboard {
    /// Waits until it has stopped.
    pub async fn wait(self) -> Result<(), DashboardError> {
        self.task
            .await
            .map_err(|e| DashboardError::Serve(e.to_string()))?
    }
}

/// Starts serving the dashboard; stops when `shutdown` resolves.
pub async fn start(
    config: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningDashboard, DashboardError> {
    let access = Access::new(&config.users, config.listen)?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| DashboardError::Bind {
                addr: config.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind {
            addr: config.listen,
            source,
        })?;
    info!(url = %format!("http://{local_addr}/"), console = %format!("http://{local_addr}/console"), panels = config.panels.len(), login = access.logins(), "dashboard listening");
    let app = Router::new()
        .route("/", get(page))
        .route("/api/config", get(page_config))
        .route("/api/panels", get(all_panels))
        .route("/api/panels/{n}", get(one_panel))
        .route("/console", get(console::page))
        .route("/api/console", get(console::numbers))
        .with_state(Arc::new(config))
        .layer(middleware::from_fn_with_state(access, require_login));
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| DashboardError::Serve(e.to_string()))
    });
    Ok(RunningDashboard { local_addr, task })
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        value.to_string(),
    )
        .into_response()
}

async fn page_config(State(config): State<Arc<DashboardConfig>>) -> Response {
    // Panel SQL reaches only logged-in users, or (without users) this
    // machine, whose clients Flight SQL lets run any SQL anyway.
    let panels: Vec<Value> = config
        .panels
        .iter()
        .map(|p| json!({"title": p.title, "chart": p.chart, "label": p.label, "value": p.value, "sql": p.sql}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "title": config.title,
            "refresh_ms": config.refresh.as_millis() as u64,
            "panels": panels,
        }),
    )
}

async fn all_panels(State(config): State<Arc<DashboardConfig>>) -> Response {
    let answers = futures::future::join_all(
        config
            .panels
            .iter()
            .enumerate()
            .map(|(i, p)| panel_rows(&config, i, p)),
    )
    .await;
    json_response(StatusCode::OK, &Value::Array(answers))
}

async fn one_panel(State(config): State<Arc<DashboardConfig>>, Path(n): Path<usize>) -> Response {
    match config.panels.get(n) {
        Some(p) => json_response(StatusCode::OK, &panel_rows(&config, n, p).await),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no panel {n}: there are {}", config.panels.len())}),
        ),
    }
}

/// A panel's rows, or the reason there are none (shown on the page).
async fn panel_rows(config: &DashboardConfig, index: usize, panel: &PanelConfig) -> Value {
    let started = Instant::now();
    let result = run_query(&config.flight, &panel.sql)
        .await
        .and_then(|batches| batches_to_rows(&batches).map_err(|e| e.to_string()));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let waiting = || async {
        match &config.waits {
            Some(w) => w.waiting_for(index).await,
            None => None,
        }
    };
    match result {
        Ok((columns, rows)) if rows.is_empty() => json!({
            "panel": index,
            "title": panel.title,
            "columns": columns,
            "rows": rows,
            "query_ms": ms,
            "waiting": waiting().await,
        }),
        Ok((columns, rows)) => json!({
            "panel": index,
            "title": panel.title,
            "columns": columns,
            "rows": rows,
            "query_ms": ms,
        }),
        // Before a layer's first commit its table does not exist: the
        // panel waits, nothing failed.
        Err(e) if not_created_yet(&e) => json!({
            "panel": index,
            "title": panel.title,
            "columns": [],
            "rows": [],
            "query_ms": ms,
            "waiting": waiting().await.unwrap_or_else(|| "no data yet: its table has no commit yet".into()),
        }),
        Err(e) => {
            warn!(panel = %panel.title, error = %e, "a dashboard panel's query failed");
            json!({"panel": index, "title": panel.title, "error": e, "query_ms": ms})
        }
    }
}

/// Whether a query failed only because a table it reads does not exist yet.
fn not_created_yet(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("table") && e.contains("not found")
}
