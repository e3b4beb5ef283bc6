//! `strata validate FILE`: the file checks, then every layer's SQL planned
//! against its inputs' schemas, without touching storage or the broker.

use std::path::Path;

use strata_engine::dataflow::layer_plan::CheckedLayer;
use strata_engine::dataflow::plan::DataflowPlan;
use strata_engine::dataflow::{DataflowSpec, layer_plan};
use strata_engine::sql::planner::StreamingPlanner;
use strata_engine::sql::program::duration;
use strata_engine::{EngineError, ErrorKind};
use strata_layers::Warehouse;

use crate::commands::{load_warehouse, plan_layers};
use crate::failure::{Failure, print};

pub async fn validate(file: &Path, show_plan: bool) -> Result<(), Failure> {
    let w = load_warehouse(file)?;
    let plan = plan_layers(&w, &[], false)?;
    let outputs = check_queries(&w, &plan.dataflow).await?;
    print(format_args!(
        "{}: ok: warehouse `{}`, {} schema(s), {} layer(s)",
        file.display(),
        w.name,
        w.schemas.len(),
        w.layers.len()
    ))?;
    for layer in outputs {
        let columns: Vec<String> = layer
            .output
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        print(format_args!("  {}: {}", layer.name, columns.join(", ")))?;
        if let Some(operator) = &layer.operator {
            print(format_args!("    {operator}"))?;
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
        print(time)?;
        print(format!(
            "    {}",
            crate::commands::maintain::describe(&w.maintenance_for(&layer.name))
        ))?;
    }
    if show_plan {
        let planner = StreamingPlanner::new(plan.dataflow.udfs.clone());
        let p = DataflowPlan::new(&plan.dataflow, &planner).await?;
        print(format_args!("\n{}", p.to_string().trim_end()))?;
    }
    Ok(())
}

/// Plans every layer's SQL; the first problem points at the layer's `sql:`
/// line. On success, what validate reports of each layer.
pub(crate) async fn check_queries(
    w: &Warehouse,
    dataflow: &DataflowSpec,
) -> Result<Vec<CheckedLayer>, Failure> {
    match layer_plan::check(dataflow).await {
        Ok(outputs) => Ok(outputs),
        Err(EngineError::Plan { layer, reason }) => {
            match w.sql_diagnostic(&layer, reason.clone()) {
                Some(d) => {
                    eprintln!("{d}");
                    Err(Failure::Reported(ErrorKind::Plan))
                }
                None => Err(Failure::Message(
                    ErrorKind::Plan,
                    format!("layer `{layer}`: {reason}"),
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}
