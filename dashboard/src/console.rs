//! The console: the warehouse drawn as a graph of sources, layers and
//! tables with their live numbers (rates, lags, watermarks, last commits),
//! beside the dashboard on the same server.
//!
//! The numbers come from whoever starts the server (a [`ConsoleSource`]):
//! `strata run` answers from the same metrics registry its `/metrics`
//! endpoint encodes, so the page and Prometheus show the same values.
//! This crate only serves them: `/console` the page (it draws the graph
//! itself, inline SVG, no network), `/api/console` the JSON it refreshes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::{DashboardConfig, json_response};

const PAGE: &str = include_str!("console.html");

/// What the console shows, asked at every refresh.
pub trait ConsoleSource: Send + Sync + std::fmt::Debug {
    /// The graph (`sources`, `layers`, `tables`, `dataflow`) with its
    /// numbers, as JSON (see `console.html` for the fields it draws).
    fn snapshot(&self) -> Value;
}

pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

pub(crate) async fn numbers(State(config): State<Arc<DashboardConfig>>) -> Response {
    match &config.console {
        Some(source) => {
            let mut snapshot = source.snapshot();
            if let Value::Object(map) = &mut snapshot {
                map.insert(
                    "refresh_ms".into(),
                    json!(config.refresh.as_millis() as u64),
                );
            }
            json_response(StatusCode::OK, &snapshot)
        }
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "this server has no console (it serves no warehouse pipeline)"}),
        ),
    }
}
