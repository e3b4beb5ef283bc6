//! `strata plan FILE [--json]`: what deploying the file would do to each
//! layer, like `terraform plan`: unchanged, a compatible change (and how
//! it is applied), or incompatible (and the choices). It only reads: the
//! newest checkpoint (each layer's recorded SQL hash and state layout) and
//! the tables' schemas; the comparison itself is
//! `strata_engine::evolution::compare`, which `strata run` also applies
//! before it opens anything.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use strata_engine::evolution::LayerPlanEntry;
use strata_engine::evolution::redeploy::{Inspection, inspect};
use strata_engine::versions::short_hash;

use crate::commands::{load_warehouse, plan_layers};
use crate::failure::Failure;

#[derive(Serialize)]
struct PlanJson<'a> {
    warehouse: &'a str,
    checkpoint_epoch: Option<u64>,
    deployed_version: Option<&'a str>,
    incompatible: bool,
    layers: &'a [LayerPlanEntry],
}

pub async fn plan(file: &Path, json: bool) -> Result<(), Failure> {
    let warehouse = load_warehouse(file)?;
    let plan = plan_layers(&warehouse, &[], false)?;
    let inspection = inspect(&plan.dataflow, &file.display().to_string(), &[]).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let body = PlanJson {
            warehouse: &warehouse.name,
            checkpoint_epoch: inspection.epoch,
            deployed_version: inspection.version.as_deref(),
            incompatible: !inspection.incompatible().is_empty(),
            layers: &inspection.layers,
        };
        serde_json::to_writer_pretty(&mut out, &body)
            .map_err(|e| Failure::internal(format!("cannot print the plan: {e}")))?;
        writeln!(out)?;
        return Ok(());
    }
    write!(out, "{}", text(&warehouse.name, &inspection))?;
    Ok(())
}

/// The plan as people read it.
fn text(warehouse: &str, inspection: &Inspection) -> String {
    let mut s = match (inspection.epoch, &inspection.version) {
        (Some(epoch), Some(v)) => format!(
            "warehouse `{warehouse}`: compared with checkpoint epoch {epoch} (version {})\n",
            short_hash(v)
        ),
        (Some(epoch), None) => {
            format!("warehouse `{warehouse}`: compared with checkpoint epoch {epoch}\n")
        }
        (None, _) => format!("warehouse `{warehouse}`: no checkpoint yet, every layer is new\n"),
    };
    let width = inspection
        .layers
        .iter()
        .map(|l| l.layer.len())
        .max()
        .unwrap_or(5)
        .max(5);
    for layer in &inspection.layers {
        s.push_str(&format!("{:<width$}  {}\n", layer.layer, layer.verdict));
        for change in &layer.changes {
            s.push_str(&format!("{:width$}  ~ {change}\n", ""));
        }
        for problem in &layer.problems {
            s.push_str(&format!("{:width$}  ! {problem}\n", ""));
        }
        if !layer.choices.is_empty() {
            s.push_str(&format!("{:width$}  choices:\n", ""));
            for choice in &layer.choices {
                s.push_str(&format!("{:width$}  - {choice}\n", ""));
            }
        }
    }
    let refused = inspection.incompatible().len();
    if refused > 0 {
        s.push_str(&format!(
            "{refused} layer(s) incompatible: `strata run` refuses this file, changing nothing, until each is resolved as its choices say\n"
        ));
    } else {
        s.push_str("`strata run` can deploy this file\n");
    }
    s
}
