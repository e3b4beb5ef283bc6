//! A Flight SQL client for Strata's own tools (`strata query`, the
//! dashboard): they read the warehouse exactly as a BI tool does, through
//! the server, so what they show is what any client would see.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;

use crate::client_tls::connect;

/// Where the server is and how to sign in.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://host:port` for TLS.
    pub endpoint: String,
    /// User name and password, when the server requires them.
    pub credentials: Option<(String, String)>,
    /// A CA certificate (PEM) to trust for https endpoints (a self-signed
    /// server certificate works too); without one, the system's CAs.
    pub ca: Option<PathBuf>,
}

/// Runs `sql` on the server and returns every batch of the result (at least
/// one, empty, so the columns are known even when no row matched). Errors
/// say what failed in a line a user can act on.
pub async fn run_query(config: &ClientConfig, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let channel = connect(&config.endpoint, config.ca.as_deref()).await?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some((user, password)) = &config.credentials {
        client
            .handshake(user, password)
            .await
            .map_err(|e| describe(e, &config.endpoint))?;
    }
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| describe(e, &config.endpoint))?;
    let schema = info
        .clone()
        .try_decode_schema()
        .map_err(|e| format!("result schema: {e}"))?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let stream = client
            .do_get(ticket)
            .await
            .map_err(|e| describe(e, &config.endpoint))?;
        let mut part: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| describe(e, &config.endpoint))?;
        batches.append(&mut part);
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(Arc::new(schema)));
    }
    Ok(batches)
}

/// Server errors arrive as gRPC statuses: show the code and message; a
/// broken connection gets a hint at its likely cause.
fn describe(e: FlightError, endpoint: &str) -> String {
    let text = match e {
        FlightError::Tonic(status) => format!("{:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    };
    let lower = text.to_lowercase();
    if !(lower.contains("transport error")
        || lower.contains("transport::error")
        || lower.contains("broken pipe")
        || lower.contains("connection reset")
        || lower.contains("connection closed"))
    {
        return text;
    }
    let hint = if endpoint.starts_with("http://") {
        "the connection broke: if the server uses TLS, connect with https:// (and --ca for a self-signed certificate)"
    } else {
        "the connection broke: check the address and that the server is running"
    };
    format!("{text}; {hint}")
}
