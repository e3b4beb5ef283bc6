//! `strata validate FILE`: the file checks, then every layer's SQL planned
//! against its inputs' schemas, without touching storage or the broker.

use std::path::Path;
use std::process::ExitCode;

use arrow::datatypes::SchemaRef;
use strata_engine::EngineError;
use strata_engine::dataflow::{DataflowSpec, layer_plan};
use strata_layers::Warehouse;

use crate::commands::load_warehouse;

pub async fn validate(file: &Path) -> ExitCode {
    let Some(w) = load_warehouse(file) else {
        return ExitCode::FAILURE;
    };
    let plan = match strata_layers::plan(&w, &[], false) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(outputs) = check_queries(&w, &plan.dataflow).await else {
        return ExitCode::FAILURE;
    };
    println!(
        "{}: ok: warehouse `{}`, {} schema(s), {} layer(s)",
        file.display(),
        w.name,
        w.schemas.len(),
        w.layers.len()
    );
    for (layer, schema) in outputs {
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        println!("  {layer}: {}", columns.join(", "));
    }
    ExitCode::SUCCESS
}

/// Plans every layer's SQL; prints the first problem, pointing at the
/// layer's `sql:` line, and returns `None` if there is one. On success,
/// each layer's output columns.
pub(crate) async fn check_queries(
    w: &Warehouse,
    dataflow: &DataflowSpec,
) -> Option<Vec<(String, SchemaRef)>> {
    match layer_plan::check(dataflow).await {
        Ok(outputs) => Some(outputs),
        Err(EngineError::Pipeline { pipeline, reason }) => {
            match w.sql_diagnostic(&pipeline, reason.clone()) {
                Some(d) => eprintln!("{d}"),
                None => eprintln!("error: layer `{pipeline}`: {reason}"),
            }
            None
        }
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}
