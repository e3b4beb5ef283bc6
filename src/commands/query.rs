//! `strata query "SQL"`: a Flight SQL client, to check what the server
//! serves exactly as a BI tool would see it.

use std::process::ExitCode;

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::cli::QueryArgs;

pub async fn query(args: QueryArgs) -> ExitCode {
    match run(&args).await {
        Ok(batches) => match pretty_format_batches(&batches) {
            Ok(table) => {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                println!("{table}");
                println!("{rows} row{}", if rows == 1 { "" } else { "s" });
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot print the result: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &QueryArgs) -> Result<Vec<RecordBatch>, String> {
    let mut endpoint = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|e| format!("endpoint {}: {e}", args.endpoint))?;
    if args.endpoint.starts_with("https://") {
        strata_flight_server::install_crypto_provider();
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &args.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot connect to {}: {e}; is `strata serve` (or `strata run`) running there?",
            args.endpoint
        )
    })?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(user) = &args.user {
        let password = args.password.as_deref().unwrap_or_default();
        client.handshake(user, password).await.map_err(describe)?;
    }
    let info = client
        .execute(args.sql.clone(), None)
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
        // Print the column names even when no row matched.
        batches.push(RecordBatch::new_empty(std::sync::Arc::new(schema)));
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
