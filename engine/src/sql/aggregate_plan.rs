//! Planning an aggregation on a stream: the physical plan is cut at its one
//! aggregate node. Below it, a stateless segment run on every input batch;
//! the aggregate itself becomes a window operator (TUMBLE, HOP, CUMULATE),
//! a session operator, or an updating `GROUP BY`; above it, a stateless
//! segment run on each batch the aggregate emits: HAVING, projections, and
//! per-window Top-N (`ROW_NUMBER() OVER (PARTITION BY window_start ...)`),
//! which only ever see whole windows.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};

use crate::sql::batch_slot::BatchSlot;
use crate::sql::planner::{NodeKind, PlanError, STATELESS, check_nodes, replace};
use crate::sql::program::{AGGREGATE_SLOT, AggregateNode, Program, SESSION_SLOT};
use crate::sql::segment::Segment;
use crate::sql::window_tvf::{WindowKind, WindowTvf};

/// What may run on each emitted window, on top of the stateless nodes.
const PER_WINDOW: &[NodeKind] = &[NodeKind::Sort, NodeKind::Window];

/// What the incremental aggregate can run: one phase, one grouping set.
fn check_aggregate(agg: &AggregateExec) -> Result<(), PlanError> {
    if !matches!(
        agg.mode(),
        AggregateMode::Single | AggregateMode::SinglePartitioned
    ) {
        return Err(PlanError::Sql(format!(
            "internal: expected a single-phase aggregate, got {:?}",
            agg.mode()
        )));
    }
    if !agg.group_expr().is_single() {
        return Err(PlanError::Unsupported(
            "GROUPING SETS, CUBE and ROLLUP on a stream: GROUP BY one set of keys per layer".into(),
        ));
    }
    Ok(())
}

/// A windowed aggregate groups by a timestamp `window_end`.
fn check_window_end(agg: &AggregateExec) -> Result<(), PlanError> {
    let input = agg.input_schema();
    let Some((expr, _)) = agg
        .group_expr()
        .expr()
        .iter()
        .find(|(_, name)| name == "window_end")
    else {
        return Err(PlanError::Unsupported(
            "a windowed aggregation must GROUP BY window_end".into(),
        ));
    };
    match expr.data_type(&input)? {
        DataType::Timestamp(_, _) => Ok(()),
        other => Err(PlanError::Sql(format!(
            "window_end must be a timestamp, not {other}"
        ))),
    }
}

pub(crate) fn plan_aggregate(
    plan: &Arc<dyn ExecutionPlan>,
    agg_node: &Arc<dyn ExecutionPlan>,
    window: Option<&WindowTvf>,
) -> Result<(Program, Vec<String>), PlanError> {
    let Some(node) = AggregateNode::new(agg_node) else {
        return Err(PlanError::Sql("internal: not an aggregate".into()));
    };
    let agg = node.exec();
    check_aggregate(agg)?;
    let below = Segment::new(agg.input().clone())?;
    check_nodes(below.plan(), STATELESS, "before the aggregation")?;
    let read = below.inputs();
    let names: Vec<&str> = agg
        .group_expr()
        .expr()
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    let windowed = names.contains(&"window_start") || names.contains(&"window_end");
    let program = match window {
        Some(w) if w.kind == WindowKind::Session => {
            if !(names.contains(&"window_start") && names.contains(&"window_end")) {
                return Err(PlanError::Unsupported(
                    "a SESSION aggregation must GROUP BY window_start, window_end (and its PARTITION BY keys)".into(),
                ));
            }
            let below_schema = below.schema();
            for key in &w.partition_by {
                if below_schema.field_with_name(key).is_err() || !names.contains(&key.as_str()) {
                    return Err(PlanError::Unsupported(format!(
                        "SESSION ... PARTITION BY {key}: GROUP BY {key} too, so each session's result is one row"
                    )));
                }
            }
            let slot: Arc<dyn ExecutionPlan> =
                Arc::new(BatchSlot::new(SESSION_SLOT, below_schema, None));
            let input = agg.input().clone();
            let closed = replace(plan, &input, slot)?;
            check_nodes(
                &closed,
                &[STATELESS, PER_WINDOW, &[NodeKind::Aggregate]].concat(),
                "on a session window",
            )?;
            check_per_window(&closed)?;
            Program::Session {
                below,
                closed: Segment::new(closed)?,
                gap_us: w.size_us,
                keys: w.partition_by.clone(),
            }
        }
        Some(w) => {
            if !(windowed && names.contains(&"window_end")) {
                return Err(PlanError::Unsupported(
                    "a windowed aggregation must GROUP BY window_start, window_end, ... (Flink's window TVF aggregation)".into(),
                ));
            }
            check_window_end(agg)?;
            let above = above_segment(plan, agg_node, agg)?;
            check_nodes(
                above.plan(),
                &[STATELESS, PER_WINDOW].concat(),
                "on a window's results",
            )?;
            check_per_window(above.plan())?;
            Program::Window {
                below,
                aggregate: node.clone(),
                above,
                window: w.clone(),
            }
        }
        None => {
            if windowed {
                return Err(PlanError::Unsupported(
                    "window_start / window_end come from a window TVF: FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))".into(),
                ));
            }
            let above = above_segment(plan, agg_node, agg)?;
            check_nodes(
                above.plan(),
                STATELESS,
                "on the results of a GROUP BY without windows",
            )?;
            let output = above.schema();
            let mut keys = Vec::new();
            for name in &names {
                if output.field_with_name(name).is_err() {
                    return Err(PlanError::Unsupported(format!(
                        "a GROUP BY without windows is kept up to date by its keys: select `{name}` (every GROUP BY column) in the result"
                    )));
                }
                keys.push(name.to_string());
            }
            Program::Updating {
                below,
                aggregate: node.clone(),
                above,
                keys,
                state_ttl: None,
            }
        }
    };
    Ok((program, read))
}

fn above_segment(
    plan: &Arc<dyn ExecutionPlan>,
    agg_node: &Arc<dyn ExecutionPlan>,
    agg: &AggregateExec,
) -> Result<Segment, PlanError> {
    let slot: Arc<dyn ExecutionPlan> = Arc::new(BatchSlot::new(
        AGGREGATE_SLOT,
        ExecutionPlan::schema(agg),
        None,
    ));
    Ok(Segment::new(replace(plan, agg_node, slot)?)?)
}

/// Window functions on a window's results must stay within one window.
fn check_per_window(plan: &Arc<dyn ExecutionPlan>) -> Result<(), PlanError> {
    let mut problem = None;
    plan.apply(|node| {
        let exprs = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            w.window_expr().to_vec()
        } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
            w.window_expr().to_vec()
        } else {
            return Ok(TreeNodeRecursion::Continue);
        };
        for e in exprs {
            let per_window = e.partition_by().iter().any(|p| {
                p.downcast_ref::<Column>()
                    .is_some_and(|c| c.name() == "window_start" || c.name() == "window_end")
            });
            if !per_window {
                problem = Some(e.name().to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match problem {
        None => Ok(()),
        Some(name) => Err(PlanError::Unsupported(format!(
            "{name}: an OVER clause on window results must PARTITION BY window_start (or window_end), so each window is ranked on its own (window Top-N)"
        ))),
    }
}
