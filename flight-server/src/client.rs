//! A Flight SQL client for Strata's own tools (`strata query`, the
//! dashboard): they read the warehouse exactly as a BI tool does, through
//! the server, so what they show is what any client would see.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::server::install_crypto_provider;

/// Where the server is and how to sign in.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://host:port` for TLS.
    pub endpoint: String,
    /// User name and password, when the server requires them.
    pub credentials: Option<(String, String)>,
    /// A CA certificate (PEM) to trust for https endpoints.
    pub ca: Option<PathBuf>,
}

/// Runs `sql` on the server and returns every batch of the result (at least
/// one, empty, so the columns are known even when no row matched). Errors
/// say what failed in a line a user can act on.
pub async fn run_query(config: &ClientConfig, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| format!("endpoint {}: {e}", config.endpoint))?;
    if config.endpoint.starts_with("https://") {
        install_crypto_provider();
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &config.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot connect to {}: {e}; is `strata serve` (or `strata run`) running there?",
            config.endpoint
        )
    })?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some((user, password)) = &config.credentials {
        client.handshake(user, password).await.map_err(describe)?;
    }
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(describe)?;
    let schema = info
        .clone()
        .try_decode_schema()
        .map_err(|e| format!("result schema: {e}"))?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let stream = client.do_get(ticket).await.map_err(describe)?;
        let mut part: Vec<RecordBatch> = stream.try_collect().await.map_err(describe)?;
        batches.append(&mut part);
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(Arc::new(schema)));
    }
    Ok(batches)
}

/// Server errors arrive as gRPC statuses; show the code and message only.
fn describe(e: FlightError) -> String {
    match e {
        FlightError::Tonic(status) => format!("{:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    }
}
