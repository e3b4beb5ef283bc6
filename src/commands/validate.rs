//! `strata validate FILE`: the file checks, then every layer's SQL planned
//! against its inputs' schemas, without touching storage or the broker.

use std::path::Path;
use std::process::ExitCode;

use strata_engine::EngineError;
use strata_engine::dataflow::layer_plan::CheckedLayer;
use strata_engine::dataflow::plan::DataflowPlan;
use strata_engine::dataflow::{DataflowSpec, layer_plan};
use strata_engine::sql::planner::StreamingPlanner;
use strata_engine::sql::program::duration;
use strata_layers::Warehouse;

use crate::commands::load_warehouse;

pub async fn validate(file: &Path, show_plan: bool) -> ExitCode {
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
    for layer in outputs {
        let columns: Vec<String> = layer
            .output
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        println!("  {}: {}", layer.name, columns.join(", "));
        if let Some(operator) = &layer.operator {
            println!("    {operator}");
        }
        let mut time = format!(
            "    watermark: {} behind the newest event",
            duration(layer.behind_us)
        );
        if layer.output_lag_us > 0 && layer.read_downstream {
            time.push_str(&format!(
                "; forwards {} (its rows can be dated {} before its watermark)",
                duration(layer.behind_us + layer.output_lag_us),
                duration(layer.output_lag_us)
            ));
        }
        println!("{time}");
    }
    if show_plan {
        let planner = StreamingPlanner::new(plan.dataflow.udfs.clone());
        match DataflowPlan::new(&plan.dataflow, &planner).await {
            Ok(p) => print!("\n{p}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Plans every layer's SQL; prints the first problem, pointing at the
/// layer's `sql:` line, and returns `None` if there is one. On success,
/// what validate reports of each layer.
pub(crate) async fn check_queries(
    w: &Warehouse,
    dataflow: &DataflowSpec,
) -> Option<Vec<CheckedLayer>> {
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
