//! Walking a physical plan: finding nodes, replacing one, and checking that
//! a stretch of plan holds only nodes a stream can run (with advice for the
//! ones it cannot).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;

use crate::sql::planner::PlanError;

/// `plan` with the node `target` replaced by `with`.
pub(crate) fn replace(
    plan: &Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    with: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>, PlanError> {
    Ok(plan
        .clone()
        .transform_down(|node| {
            Ok(if Arc::ptr_eq(&node, target) {
                Transformed::new(with.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })?
        .data)
}

/// Nodes whose name contains `part` (e.g. every kind of join).
pub(crate) fn nodes_named_like(
    plan: &Arc<dyn ExecutionPlan>,
    part: &str,
) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        if node.name().contains(part) {
            found.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Nodes named `name`.
pub(crate) fn nodes_named(
    plan: &Arc<dyn ExecutionPlan>,
    name: &str,
) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        if node.name() == name {
            found.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Every node of `plan` must be in `allowed`; otherwise say what to write.
pub(crate) fn check_nodes(
    plan: &Arc<dyn ExecutionPlan>,
    allowed: &[&str],
    place: &str,
) -> Result<(), PlanError> {
    let mut bad = None;
    plan.apply(|node| {
        if !allowed.contains(&node.name()) {
            bad = Some(node.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(name) = bad else {
        return Ok(());
    };
    let advice = match name.as_str() {
        "SortExec" | "SortPreservingMergeExec" => {
            "ORDER BY over a whole stream never finishes; order within a window (after GROUP BY window_start, window_end), or in the query that reads the table"
        }
        "GlobalLimitExec" | "LocalLimitExec" => {
            "LIMIT over a stream: for the first N rows of each window use ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY ...) <= N"
        }
        "BoundedWindowAggExec" | "WindowAggExec" => {
            "an OVER aggregation is the layer's one stateful step: on a raw stream without GROUP BY, or per window on a window's results (Top-N)"
        }
        "AggregateExec" => "one aggregation per layer: compute the second in a downstream layer",
        n if n.contains("Join") => {
            "a join of two streams needs bounds in event time: a window join (both sides TUMBLE/HOP/CUMULATE, ON a.window_start = b.window_start AND a.window_end = b.window_end AND ...) or an interval join (ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL ... AND a.ts + INTERVAL ...); a dimension is joined FOR SYSTEM_TIME AS OF"
        }
        _ => "this operation is not supported in streaming layers",
    };
    Err(PlanError::Unsupported(format!("{name} {place}: {advice}")))
}

/// The column an expression reads, through casts the planner added.
pub(crate) fn column_name(expr: &Arc<dyn PhysicalExpr>) -> Option<&str> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.name());
    }
    expr.downcast_ref::<CastExpr>()
        .and_then(|c| column_name(c.expr()))
}
