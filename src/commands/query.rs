//! `strata query "SQL"`: a Flight SQL client, to check what the server
//! serves exactly as a BI tool would see it.

use std::process::ExitCode;

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use strata_flight_server::{ClientConfig, run_query};

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
