//! The tables a warehouse's layers write, for maintenance.

use crate::dataflow::plan::DataflowPlan;
use crate::dataflow::spec::DataflowSpec;
use crate::error::Result;
use crate::sql::planner::StreamingPlanner;
use crate::storage::TableLocation;

/// A table, named for maintenance.
#[derive(Debug, Clone)]
pub struct MaintainedTable {
    /// The layer that writes it.
    pub layer: String,
    /// The table's name (the layer's, or a side table's).
    pub name: String,
    /// Where it lives.
    pub location: TableLocation,
}

/// Every table `spec`'s layers write (planned as `strata run` plans them,
/// so side tables are included), upstream first.
pub async fn tables_of(spec: &DataflowSpec) -> Result<Vec<MaintainedTable>> {
    let planner = StreamingPlanner::new(spec.udfs.clone());
    let plan = DataflowPlan::new(spec, &planner).await?;
    let mut out = Vec::new();
    for layer in &plan.layers {
        for table in std::iter::once(&layer.main).chain(layer.sides.iter().map(|s| &s.table)) {
            out.push(MaintainedTable {
                layer: layer.name().to_string(),
                name: table.name.clone(),
                location: table.location.clone(),
            });
        }
    }
    Ok(out)
}
