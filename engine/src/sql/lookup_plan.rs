//! Finding a layer's lookup joins in its physical plan.
//!
//! A dimension is registered as a table whose scan is a slot labelled
//! [`dimension_slot`]. Every hash join with such a slot on one side is a
//! lookup join: it is replaced, innermost first, by a [`LookupJoinExec`]
//! whose input is the other (stream) side. Chains of lookups (deal ->
//! agent -> store) therefore nest, each looking up keys of the rows the
//! previous one produced.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::HashJoinExec;

use crate::lookup::Dimension;
use crate::sql::batch_slot::BatchSlot;
use crate::sql::lookup_join::{LookupHandling, LookupJoinExec, PROBE_SLOT, dimension_slot};
use crate::sql::plan_nodes::{NodeKind, column_name, kind_of};
use crate::sql::planner::{PlanError, STATELESS, check_nodes};
use crate::sql::segment::Segment;

/// What a layer's lookup joins need at planning time.
#[derive(Clone)]
pub struct LayerLookups {
    /// The warehouse's dimensions.
    pub dimensions: Vec<Arc<Dimension>>,
    /// The layer's failure policy and dead-letter rows.
    pub handling: Arc<LookupHandling>,
}

/// The dimension whose slot is in `plan`, if any.
fn dimension_in(plan: &Arc<dyn ExecutionPlan>, dims: &[Arc<Dimension>]) -> Option<Arc<Dimension>> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let Some(slot) = node.downcast_ref::<BatchSlot>()
            && let Some(d) = dims
                .iter()
                .find(|d| dimension_slot(d.name()) == slot.label())
        {
            found = Some(d.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A plan with its lookup joins in place, and the dimensions they read.
pub struct WithLookups {
    /// The plan.
    pub plan: Arc<dyn ExecutionPlan>,
    /// The dimensions joined.
    pub dimensions: Vec<Arc<Dimension>>,
}

/// `plan` with its lookup joins made [`LookupJoinExec`]s. `system_time` are
/// the tables the SQL joined `FOR SYSTEM_TIME AS OF`.
pub fn plan_lookups(
    plan: Arc<dyn ExecutionPlan>,
    lookups: &LayerLookups,
    system_time: &[String],
) -> Result<WithLookups, PlanError> {
    let dims = &lookups.dimensions;
    let wanted: HashSet<&str> = system_time.iter().map(String::as_str).collect();
    let mut used: Vec<Arc<Dimension>> = Vec::new();
    let mut problem: Option<PlanError> = None;
    let plan = plan
        .transform_up(|node| {
            if problem.is_some() {
                return Ok(Transformed::no(node));
            }
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                if matches!(kind_of(node.as_ref()), NodeKind::HashJoin | NodeKind::OtherJoin)
                    && dimension_in(&node, dims).is_some() {
                    problem = Some(PlanError::Unsupported(format!(
                        "{}: a lookup join matches the dimension's key: `ON e.agent_id = a.agent_id` (other conditions may follow with AND)",
                        node.name()
                    )));
                }
                return Ok(Transformed::no(node));
            };
            let left = dimension_in(join.left(), dims);
            let right = dimension_in(join.right(), dims);
            let (dim, dim_on_right) = match (left, right) {
                (None, None) => return Ok(Transformed::no(node)),
                (Some(_), Some(_)) => {
                    problem = Some(PlanError::Unsupported(
                        "a dimension is joined with a stream, not with another dimension: join both to the stream (`... JOIN agents ... JOIN stores ON a.store_id = s.store_id`)".into(),
                    ));
                    return Ok(Transformed::no(node));
                }
                (Some(d), None) => (d, false),
                (None, Some(d)) => (d, true),
            };
            match lookup_join(&node, join, &dim, dim_on_right, lookups, &wanted) {
                Ok(exec) => {
                    if !used.iter().any(|d| Arc::ptr_eq(d, &dim)) {
                        used.push(dim);
                    }
                    Ok(Transformed::yes(exec))
                }
                Err(e) => {
                    problem = Some(e);
                    Ok(Transformed::no(node))
                }
            }
        })?
        .data;
    match problem {
        Some(e) => Err(e),
        None => Ok(WithLookups {
            plan,
            dimensions: used,
        }),
    }
}

fn lookup_join(
    node: &Arc<dyn ExecutionPlan>,
    join: &HashJoinExec,
    dim: &Arc<Dimension>,
    dim_on_right: bool,
    lookups: &LayerLookups,
    wanted: &HashSet<&str>,
) -> Result<Arc<dyn ExecutionPlan>, PlanError> {
    let name = dim.name();
    if !wanted.contains(name.to_ascii_lowercase().as_str()) {
        return Err(PlanError::Unsupported(format!(
            "dimension `{name}` is joined as a lookup: `JOIN {name} FOR SYSTEM_TIME AS OF e.proc_time AS d ON e.{key} = d.{key}`",
            key = dim.key()
        )));
    }
    let preserving = if dim_on_right {
        JoinType::Left
    } else {
        JoinType::Right
    };
    let join_type = *join.join_type();
    if join_type != JoinType::Inner && join_type != preserving {
        return Err(PlanError::Unsupported(format!(
            "a lookup join of `{name}` is `JOIN` or `LEFT JOIN` with the stream on the left (this one is {join_type})"
        )));
    }
    let (probe, dim_side) = if dim_on_right {
        (join.left(), join.right())
    } else {
        (join.right(), join.left())
    };
    check_nodes(dim_side, STATELESS, &format!("on dimension `{name}`"))?;
    let key_pair = join.on().iter().find(|(l, r)| {
        let dim_expr = if dim_on_right { r } else { l };
        column_name(dim_expr).is_some_and(|c| c == dim.key())
    });
    let Some((l, r)) = key_pair else {
        return Err(PlanError::Unsupported(format!(
            "a lookup in `{name}` is by its key: `ON e.{key} = d.{key}` (d being `{name}`); other conditions may follow with AND",
            key = dim.key()
        )));
    };
    let probe_key = if dim_on_right { l.clone() } else { r.clone() };
    let probe_slot: Arc<dyn ExecutionPlan> =
        Arc::new(BatchSlot::new(PROBE_SLOT, probe.schema(), None));
    let children = if dim_on_right {
        vec![probe_slot, dim_side.clone()]
    } else {
        vec![dim_side.clone(), probe_slot]
    };
    let join_plan = replace_children_if_necessary(node.clone(), children)?;
    Ok(Arc::new(LookupJoinExec::new(
        probe.clone(),
        Segment::new(join_plan)?,
        probe_key,
        dim.clone(),
        lookups.handling.clone(),
    )))
}
