//! Walking a physical plan: what each node is to a stream (by its type),
//! finding nodes, replacing one, and checking that a stretch of plan holds
//! only nodes a stream can run (with advice for the ones it cannot).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};

use crate::sql::batch_slot::BatchSlot;
use crate::sql::lookup_join::LookupJoinExec;
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

/// What a physical plan node is to a stream, by its type (never by its
/// display name, which a DataFusion upgrade may change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// Keeps nothing between batches: projections, filters, unnest and
    /// DataFusion's plumbing (coalescing, repartitioning, unions).
    Stateless,
    /// Strata's input slot.
    Slot,
    /// Strata's lookup join (a probe per batch, no stream state).
    LookupJoin,
    /// An aggregation.
    Aggregate,
    /// An OVER (window function) node.
    Window,
    /// A sort.
    Sort,
    /// A LIMIT.
    Limit,
    /// A hash join (the shape of a stream join DataFusion plans).
    HashJoin,
    /// Any other join.
    OtherJoin,
    /// Anything else.
    Other,
}

/// The nodes with no state between batches, what every segment is made of.
pub(crate) const STATELESS: &[NodeKind] =
    &[NodeKind::Stateless, NodeKind::Slot, NodeKind::LookupJoin];

/// The kind of `node`.
pub(crate) fn kind_of(node: &dyn ExecutionPlan) -> NodeKind {
    if node.is::<ProjectionExec>()
        || node.is::<FilterExec>()
        || node.is::<UnnestExec>()
        || node.is::<CooperativeExec>()
        || is_coalesce_batches(node)
        || node.is::<UnionExec>()
        || node.is::<InterleaveExec>()
        || node.is::<RepartitionExec>()
        || node.is::<CoalescePartitionsExec>()
    {
        NodeKind::Stateless
    } else if node.is::<BatchSlot>() {
        NodeKind::Slot
    } else if node.is::<LookupJoinExec>() {
        NodeKind::LookupJoin
    } else if node.is::<AggregateExec>() {
        NodeKind::Aggregate
    } else if node.is::<BoundedWindowAggExec>() || node.is::<WindowAggExec>() {
        NodeKind::Window
    } else if node.is::<SortExec>() || node.is::<SortPreservingMergeExec>() {
        NodeKind::Sort
    } else if node.is::<GlobalLimitExec>() || node.is::<LocalLimitExec>() {
        NodeKind::Limit
    } else if node.is::<HashJoinExec>() {
        NodeKind::HashJoin
    } else if node.is::<NestedLoopJoinExec>()
        || node.is::<CrossJoinExec>()
        || node.is::<SortMergeJoinExec>()
        || node.is::<SymmetricHashJoinExec>()
        || node.is::<PiecewiseMergeJoinExec>()
    {
        NodeKind::OtherJoin
    } else {
        NodeKind::Other
    }
}

/// DataFusion deprecated the node (it coalesces in its operators now) but
/// may still plan it.
#[allow(deprecated)]
fn is_coalesce_batches(node: &dyn ExecutionPlan) -> bool {
    node.is::<datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec>()
}

/// Nodes of `plan` of one of `kinds`.
pub(crate) fn nodes_of(
    plan: &Arc<dyn ExecutionPlan>,
    kinds: &[NodeKind],
) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        if kinds.contains(&kind_of(node.as_ref())) {
            found.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Every node of `plan` must be of a kind in `allowed`; otherwise say what
/// to write.
pub(crate) fn check_nodes(
    plan: &Arc<dyn ExecutionPlan>,
    allowed: &[NodeKind],
    place: &str,
) -> Result<(), PlanError> {
    let mut bad = None;
    plan.apply(|node| {
        let kind = kind_of(node.as_ref());
        if !allowed.contains(&kind) {
            bad = Some((kind, node.name().to_string()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some((kind, name)) = bad else {
        return Ok(());
    };
    let advice = match kind {
        NodeKind::Sort => {
            "ORDER BY over a whole stream never finishes; order within a window (after GROUP BY window_start, window_end), or in the query that reads the table"
        }
        NodeKind::Limit => {
            "LIMIT over a stream: for the first N rows of each window use ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY ...) <= N"
        }
        NodeKind::Window => {
            "an OVER aggregation is the layer's one stateful step: on a raw stream without GROUP BY, or per window on a window's results (Top-N)"
        }
        NodeKind::Aggregate => {
            "one aggregation per layer: compute the second in a downstream layer"
        }
        NodeKind::HashJoin | NodeKind::OtherJoin => {
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
