//! `strata query "SQL"`: a Flight SQL client, to check what the server
//! serves exactly as a BI tool would see it.

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use strata_flight_server::{ClientConfig, run_query};

use crate::cli::QueryArgs;
use crate::failure::{Failure, print};

pub async fn query(args: QueryArgs) -> Result<(), Failure> {
    // The server's answer (refusals of the SQL included) came over the
    // network: an I/O failure as far as this command goes.
    let batches = run(&args).await.map_err(Failure::io)?;
    let table = pretty_format_batches(&batches)
        .map_err(|e| Failure::internal(format!("cannot print the result: {e}")))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    print(table)?;
    print(format_args!(
        "{rows} row{}",
        if rows == 1 { "" } else { "s" }
    ))
}

async fn run(args: &QueryArgs) -> Result<Vec<RecordBatch>, String> {
    let config = ClientConfig {
        endpoint: args.endpoint.clone(),
        credentials: args.user.as_ref().map(|user| {
            let password = args.password.clone().unwrap_or_default();
            (user.clone(), password)
        }),
        ca: args.ca.clone(),
    };
    run_query(&config, &args.sql).await
}
