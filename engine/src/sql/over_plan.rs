//! Planning an OVER aggregation on a raw stream (see
//! `operators::over_window::OverBuffer`).
//!
//! The plan is cut around its window node: below it, a stateless segment
//! per input batch; the window node itself (with its sort), run on each
//! watermark's ready rows plus their frames' history; above it, a stateless
//! segment on the new results. Only frames a watermark can close are
//! accepted: ordered by the input's event time, bounded, ending at the
//! current row.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{WindowFrame, WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::window::{StandardWindowExpr, WindowExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};

use crate::sql::batch_slot::BatchSlot;
use crate::sql::plan_nodes::kind_of;
use crate::sql::planner::{NodeKind, PlanError, STATELESS, TIME_COLUMN_KEY, check_nodes, replace};
use crate::sql::program::{OverFrame, Program};
use crate::sql::segment::Segment;

/// The slot ready rows and history are fed through, under the window node.
pub const OVER_INPUT_SLOT: &str = "__strata_over_input";
/// The slot new results are fed through, in the segment above.
pub const OVER_RESULTS_SLOT: &str = "__strata_over_results";

/// An OVER aggregation, planned.
pub(crate) struct PlannedOver {
    /// What runs.
    pub(crate) program: Program,
    /// The inputs it reads.
    pub(crate) inputs: Vec<String>,
    /// The input and time column whose rows behind the watermark are late.
    pub(crate) late_input: (String, String),
}

/// Plans `plan`, whose one window node is `node`, as an OVER aggregation.
pub(crate) fn plan_over(
    plan: &Arc<dyn ExecutionPlan>,
    node: &Arc<dyn ExecutionPlan>,
    inputs: &[(String, SchemaRef)],
) -> Result<PlannedOver, PlanError> {
    let exprs: Vec<Arc<dyn WindowExpr>> =
        if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            w.window_expr().to_vec()
        } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
            w.window_expr().to_vec()
        } else {
            return Err(PlanError::Sql("internal: not a window node".into()));
        };
    let Some(first) = exprs.first() else {
        return Err(PlanError::Sql(
            "internal: a window node without expressions".into(),
        ));
    };
    for e in &exprs {
        if e.as_any().downcast_ref::<StandardWindowExpr>().is_some() {
            return Err(PlanError::Unsupported(format!(
                "{}: ranking and navigation functions over a raw stream depend on every row since it began; use them per window (window Top-N), or an aggregate (SUM, COUNT, AVG, MIN, MAX) over a bounded frame",
                e.name()
            )));
        }
        if e.get_window_frame() != first.get_window_frame()
            || e.order_by() != first.order_by()
            || e.partition_by().len() != first.partition_by().len()
        {
            return Err(PlanError::Unsupported(
                "every OVER clause of a layer needs the same PARTITION BY, ORDER BY and frame (Flink's rule too); compute the others in another layer".into(),
            ));
        }
    }
    let frame = frame_of(first.get_window_frame())?;
    let [order] = first.order_by() else {
        return Err(order_by_time());
    };
    let Some(time) = order
        .expr
        .downcast_ref::<Column>()
        .map(|c| c.name().to_string())
    else {
        return Err(order_by_time());
    };
    if order.options.descending {
        return Err(order_by_time());
    }
    let mut keys = Vec::new();
    for p in first.partition_by() {
        match p.downcast_ref::<Column>() {
            Some(c) => keys.push(c.name().to_string()),
            None => {
                return Err(PlanError::Unsupported(
                    "OVER (PARTITION BY ...) takes columns: compute the expression in a layer below, or in a subquery".into(),
                ));
            }
        }
    }

    let mut below_root = node
        .children()
        .first()
        .map(|c| (*c).clone())
        .ok_or_else(|| PlanError::Sql("internal: a window node without input".into()))?;
    if kind_of(below_root.as_ref()) == NodeKind::Sort
        && let Some(child) = below_root.children().first()
    {
        below_root = (*child).clone();
    }
    let below = Segment::new(below_root.clone())?;
    check_nodes(below.plan(), STATELESS, "before the OVER aggregation")?;
    let read = below.inputs();
    let input = match read.as_slice() {
        [one] => one.clone(),
        _ => {
            return Err(PlanError::Unsupported(
                "an OVER aggregation reads one input".into(),
            ));
        }
    };
    let event_time = inputs
        .iter()
        .find(|(n, _)| *n == input)
        .and_then(|(_, s)| s.metadata().get(TIME_COLUMN_KEY).cloned());
    if event_time.as_deref() != Some(time.as_str()) {
        return Err(PlanError::Unsupported(format!(
            "OVER (... ORDER BY {time}): order by `{input}`'s event time{}, so that the watermark can finish each row's frame",
            event_time.map(|t| format!(" `{t}`")).unwrap_or_default()
        )));
    }
    let slot: Arc<dyn ExecutionPlan> =
        Arc::new(BatchSlot::new(OVER_INPUT_SLOT, below.schema(), None));
    let window = Segment::new(replace(node, &below_root, slot)?)?;
    let results: Arc<dyn ExecutionPlan> =
        Arc::new(BatchSlot::new(OVER_RESULTS_SLOT, node.schema(), None));
    let above = Segment::new(replace(plan, node, results)?)?;
    check_nodes(above.plan(), STATELESS, "after the OVER aggregation")?;
    Ok(PlannedOver {
        program: Program::Over {
            below,
            window,
            above,
            time_column: time.clone(),
            keys,
            frame,
        },
        inputs: read,
        late_input: (input, time),
    })
}

fn order_by_time() -> PlanError {
    PlanError::Unsupported(
        "an OVER aggregation on a stream is ordered by its input's event time, ascending: OVER (PARTITION BY k ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)".into(),
    )
}

/// The frame as the operator keeps history for it.
fn frame_of(frame: &WindowFrame) -> Result<OverFrame, PlanError> {
    let unbounded = || {
        PlanError::Unsupported(
            "an OVER frame on a stream must be bounded and end at the current row: ROWS BETWEEN 10 PRECEDING AND CURRENT ROW, or RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW".into(),
        )
    };
    if frame.end_bound != WindowFrameBound::CurrentRow {
        return Err(unbounded());
    }
    let WindowFrameBound::Preceding(value) = &frame.start_bound else {
        return Err(unbounded());
    };
    if value.is_null() {
        return Err(unbounded());
    }
    match frame.units {
        WindowFrameUnits::Rows => match value {
            ScalarValue::UInt64(Some(n)) => Ok(OverFrame::Rows(*n as usize)),
            _ => Err(unbounded()),
        },
        WindowFrameUnits::Range => interval_micros(value)
            .map(OverFrame::Range)
            .ok_or_else(unbounded),
        WindowFrameUnits::Groups => Err(unbounded()),
    }
}

/// The frame's reach in microseconds; `None` if it is not a fixed
/// duration, is negative, or overflows.
fn interval_micros(value: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000;
    let micros = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => i64::from(v.days)
            .checked_mul(DAY)?
            .checked_add(v.nanoseconds / 1000)?,
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(DAY)?
            .checked_add(i64::from(v.milliseconds).checked_mul(1000)?)?,
        ScalarValue::DurationMicrosecond(Some(v)) => *v,
        ScalarValue::DurationMillisecond(Some(v)) => v.checked_mul(1000)?,
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1_000_000)?,
        ScalarValue::DurationNanosecond(Some(v)) => v / 1000,
        _ => return None,
    };
    (micros >= 0).then_some(micros)
}
